"""Building blocks shared by the models: the input layer, MLPs, expert banks, task heads.

* :class:`InputLayer` turns a batch into one dense matrix ``(B, input_dim)``. All
  categorical features (and sequences) of the same embedding size live in ONE embedding
  table, addressed with per-feature offsets, so a batch needs one lookup per distinct dim
  instead of one module call per feature.
* :class:`ExpertBank` evaluates ``E`` same-shaped MLPs (MMoE/PLE experts) together: the first
  layer is a single matmul ``(B, in) @ (in, E*out)``, later layers one batched matmul.
* :meth:`InputLayer.linear` computes ``input_layer(batch) @ W + b`` without building the
  ``(B, input_dim)`` input when the vocabularies are small next to the batch: each feature's
  table is multiplied by its rows of ``W`` once per step and the batch sums looked-up rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    SequenceFeature,
    Task,
    TextFeature,
    check_features,
)

Batch = dict[str, Tensor]

#: :meth:`InputLayer.linear` folds a group of categorical features into the next layer only
#: when its largest vocabulary is at most this (the folded table has about ``sum_f V_f`` rows).
FOLD_MAX_VOCAB = 4096

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "prelu": nn.PReLU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``gelu``, ``silu``, ``tanh``, ``sigmoid``,
    ``prelu``, ``leaky_relu``)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout], once per entry of ``dims``.

    Args:
        in_dim: input width.
        dims: hidden widths; empty means the identity (``out_dim == in_dim``).
        dropout: dropout probability after each activation.
        activation: activation name, see :func:`make_activation`.
        batchnorm: add BatchNorm1d before each activation (a batch of one then needs eval mode).

    Example:
        >>> MLP(8, (16, 4))(torch.zeros(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for dim in dims:
            layers.append(nn.Linear(width, dim))
            if batchnorm:
                layers.append(nn.BatchNorm1d(dim))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.layers(x)

    def last_linear(self) -> list[nn.Parameter]:
        """Weight and bias of the last Linear layer ([] if the MLP is the identity)."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        return list(linears[-1].parameters()) if linears else []


class ExpertBank(nn.Module):
    """``n_experts`` MLPs of identical shape that read the same input, run as batched matmuls.

    Weights are stacked: the first layer is ``(in, E, out)`` so that ``x @ W.view(in, E*out)``
    is one GEMM with no copy; later layers are ``(E, in, out)`` and run as one ``baddbmm``.

    Args:
        n_experts: number of experts ``E``.
        in_dim: input width.
        dims: hidden widths of every expert (at least one).
        dropout: dropout after each activation.
        activation: activation name.

    Example:
        >>> ExpertBank(4, 8, (16,))(torch.zeros(3, 8)).shape
        torch.Size([3, 4, 16])
    """

    def __init__(
        self,
        n_experts: int,
        in_dim: int,
        dims: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("experts need at least one layer")
        self.n_experts = n_experts
        self.out_dim = dims[-1]
        self.first_weight = nn.Parameter(torch.empty(in_dim, n_experts, dims[0]))
        self.first_bias = nn.Parameter(torch.empty(n_experts, dims[0]))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in itertools.pairwise(dims):
            self.weights.append(nn.Parameter(torch.empty(n_experts, d_in, d_out)))
            self.biases.append(nn.Parameter(torch.empty(n_experts, d_out)))
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default init, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        pairs = [(self.first_weight, self.first_bias), *zip(self.weights, self.biases, strict=True)]
        for i, (w, b) in enumerate(pairs):
            fan_in = w.shape[0] if i == 0 else w.shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, E, out_dim)``."""
        e, d0 = self.first_bias.shape
        w = self.first_weight.view(x.shape[-1], e * d0)  # (in, E*D0), no copy
        return self.from_first_layer(torch.addmm(self.first_bias.view(e * d0), x, w))

    def from_first_layer(self, pre: Tensor) -> Tensor:
        """The rest of :meth:`forward`, given the first layer's pre-activations
        ``x @ first_weight.view(in, E*D0) + first_bias.view(E*D0)`` of shape ``(B, E*D0)``
        (e.g. from :meth:`InputLayer.linear`) -> ``(B, E, D)``."""
        e, d0 = self.first_bias.shape
        h = self.dropout(self.activation(pre.view(-1, e, d0)))  # (B, E, D0)
        if not self.weights:
            return h
        h = h.transpose(0, 1)  # (E, B, D0), a view
        for w, b in zip(self.weights, self.biases, strict=True):
            h = torch.baddbmm(b.unsqueeze(1), h, w)  # (E, B, D_next)
            h = self.dropout(self.activation(h))
        return h.transpose(0, 1)  # (B, E, D)

    def last_layer(self) -> list[nn.Parameter]:
        """Weight and bias of the last layer of all experts."""
        if self.weights:
            return [self.weights[-1], self.biases[-1]]
        return [self.first_weight, self.first_bias]


class TaskHead(nn.Module):
    """The last Linear of a task, shaped by its kind: ``(B,)`` for binary/regression, ``(B, C)``
    for multiclass."""

    def __init__(self, in_dim: int, task: Task) -> None:
        super().__init__()
        self.multiclass = task.kind == "multiclass"
        self.linear = nn.Linear(in_dim, task.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B,)`` or ``(B, C)``."""
        out = self.linear(x)
        return out if self.multiclass else out.squeeze(-1)


class InputLayer(nn.Module):
    """Embeds, pools and concatenates every feature of a batch into ``(B, input_dim)``.

    Column order: the categorical embeddings grouped by embedding size (in order of first
    appearance, spec order within a group), then pooled sequences, numerics, text vectors.

    Id ``0`` of every categorical feature maps to a shared all-zero padding row. Sequence
    pooling masks ids equal to ``0``, so padding (any amount, either side) never changes the
    result; a sequence of only padding pools to zeros. Ids must lie in ``[0, vocab_size)``
    (the encoder guarantees it): for speed they are not checked, and an id past a feature's
    vocabulary would read another feature's rows.

    Args:
        features: the feature specs.
        attention_dims: hidden widths of the DIN attention unit (the paper uses 80, 40).
        init_std: standard deviation of the normal initialisation of embedding tables.

    Example:
        >>> layer = InputLayer([CategoricalFeature("item", 10, 4), NumericFeature("price")])
        >>> layer({"item": torch.tensor([3, 0]), "price": torch.tensor([0.5, 1.0])}).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        attention_dims: Sequence[int] = (80, 40),
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        check_features(list(features))
        self.features = tuple(features)
        categoricals = [f for f in features if isinstance(f, CategoricalFeature)]
        sequences = [f for f in features if isinstance(f, SequenceFeature)]
        self.numeric_names = [f.name for f in features if isinstance(f, NumericFeature)]
        self.text_names = [f.name for f in features if isinstance(f, TextFeature)]

        # One table per distinct dim; each feature owns rows [start, start + vocab - 1) for ids
        # 1.., stored as offset = start - 1 so that row = id + offset; row 0 is the padding.
        rows: dict[int, int] = {}  # dim -> rows used so far
        offset_of: dict[str, tuple[int, int]] = {}  # feature -> (dim, offset)
        for f in [*categoricals, *(s for s in sequences if s.embedding_of is None)]:
            start = rows.get(f.dim, 1)
            offset_of[f.name] = (f.dim, start - 1)
            rows[f.dim] = start + f.vocab_size - 1
        self.tables = nn.ModuleDict(
            {str(dim): nn.Embedding(n, dim, padding_idx=0) for dim, n in rows.items()}
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[0].zero_()

        self.groups: list[tuple[str, list[str]]] = []  # (table key, categorical names)
        for dim in dict.fromkeys(f.dim for f in categoricals):
            names = [f.name for f in categoricals if f.dim == dim]
            self.groups.append((str(dim), names))
            offsets = torch.tensor([offset_of[n][1] for n in names], dtype=torch.long)
            self.register_buffer(f"offsets_{dim}", offsets, persistent=False)
        position = {n: (key, i) for key, names in self.groups for i, n in enumerate(names)}

        # For linear(): each group with small vocabularies is cut into buckets of features of
        # similar vocabulary size (padding each to its largest wastes little). Per bucket, the
        # table row of each (feature, id) on a (F_b, V_b) grid (row 0, the zero padding row,
        # for id 0 and ids past the vocabulary) and the feature's rows of the weight; per
        # group, where each feature's ids start in the buckets' stacked folded tables.
        by_name = {f.name: f for f in categoricals}
        self.fold_cells: dict[str, int] = {}  # group -> rows of its folded table
        self.fold_buckets: dict[str, int] = {}  # group -> number of buckets
        for key, names in self.groups:
            sizes = [by_name[n].vocab_size for n in names]
            if max(sizes) > FOLD_MAX_VOCAB:
                continue
            d = int(key)
            base = torch.zeros(len(names), dtype=torch.long)  # (F,) folded row of id 0
            cells = 0
            buckets = _fold_buckets(sizes)
            for b, positions in enumerate(buckets):
                vmax = max(sizes[i] for i in positions)
                grid = torch.zeros(len(positions), vmax, dtype=torch.long)  # (F_b, V_b)
                for j, i in enumerate(positions):
                    grid[j, 1 : sizes[i]] = torch.arange(1, sizes[i]) + offset_of[names[i]][1]
                    base[i] = cells + j * vmax
                cells += len(positions) * vmax
                weight_rows = torch.cat([torch.arange(i * d, (i + 1) * d) for i in positions])
                self.register_buffer(f"fold_rows_{key}_{b}", grid, persistent=False)
                self.register_buffer(f"fold_wrows_{key}_{b}", weight_rows, persistent=False)
            self.register_buffer(f"fold_base_{key}", base, persistent=False)
            self.fold_cells[key] = cells
            self.fold_buckets[key] = len(buckets)

        # (name, table key, offset, pooling, (group key, index) of the attention query)
        self.sequences: list[tuple[str, str, int, str, tuple[str, int] | None]] = []
        self.attention = nn.ModuleDict()
        for s in sequences:
            dim, offset = offset_of[s.embedding_of or s.name]
            query = position[s.embedding_of] if s.embedding_of is not None else None
            self.sequences.append((s.name, str(dim), offset, s.pooling, query))
            if s.pooling == "attention":
                self.attention[s.name] = _DinAttention(dim, attention_dims)

        self.output_dim = (
            sum(f.dim for f in categoricals)
            + sum(s.dim for s in sequences)
            + len(self.numeric_names)
            + sum(f.dim for f in features if isinstance(f, TextFeature))
        )
        self._queried = {q[0] for *_, q in self.sequences if q is not None}

    def forward(self, batch: Batch) -> Tensor:
        """Batch dict -> ``(B, input_dim)`` float tensor."""
        grouped = {key: self._embed(batch, key, names) for key, names in self.groups}
        parts = [emb.flatten(1) for emb in grouped.values()]  # (B, F*D) each
        parts.extend(self._other_parts(batch, grouped))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def linear(self, batch: Batch, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``self(batch) @ weight + bias``, ``(B, input_dim) @ (input_dim, N) -> (B, N)``.

        The same function and gradients as the plain product, computed faster when a group's
        vocabularies are small next to the batch (tabular data such as census-income): the
        group's embedding tables are first multiplied by their rows of ``weight`` (one
        ``(F_b, V_b, D) @ (F_b, D, N)`` matmul per bucket of features of similar vocabulary
        size, once per call), then each sample sums its ``F`` looked-up rows of ``N`` numbers,
        so the matmuls have about ``sum_f V_f`` rows instead of ``B * F``. Groups queried by
        attention pooling, groups with a vocabulary over ``FOLD_MAX_VOCAB``, and batches whose
        ``B * F`` is under twice the folded rows (e.g. a batch of one) take the plain path.

        Args:
            batch: the batch dict.
            weight: ``(input_dim, N)``, rows in this layer's column order.
            bias: ``(N,)`` or None.

        Returns:
            ``(B, N)``.
        """
        folded: list[Tensor] = []  # (B, N) each
        dense: list[Tensor] = []  # (B, width) inputs of the plain product
        dense_w: list[Tensor] = []  # their (width, N) rows of weight
        grouped: dict[str, Tensor] = {}
        col = 0
        for key, names in self.groups:
            d = int(key)
            w = weight[col : col + len(names) * d]  # (F*D, N)
            col += len(names) * d
            n_rows = batch[names[0]].shape[0]
            cells = self.fold_cells.get(key)
            if cells is None or key in self._queried or 2 * cells > n_rows * len(names):
                grouped[key] = self._embed(batch, key, names)  # (B, F, D)
                dense.append(grouped[key].flatten(1))
                dense_w.append(w)
                continue
            parts = []
            for b in range(self.fold_buckets[key]):
                grid: Tensor = getattr(self, f"fold_rows_{key}_{b}")
                n_feat, vmax = grid.shape
                emb = F.embedding(grid, self.tables[key].weight, padding_idx=0)  # (F_b, V_b, D)
                w_b = w.index_select(0, getattr(self, f"fold_wrows_{key}_{b}"))  # (F_b*D, N)
                folded_b = torch.bmm(emb, w_b.view(n_feat, d, -1))  # (F_b, V_b, N)
                parts.append(folded_b.view(n_feat * vmax, -1))
            table = torch.cat(parts) if len(parts) > 1 else parts[0]  # (cells, N)
            ids = torch.stack([batch[n] for n in names], dim=1)  # (B, F)
            base: Tensor = getattr(self, f"fold_base_{key}")
            folded.append(_RowSum.apply(ids + base, table))  # (B, N)
        others = self._other_parts(batch, grouped)
        if others:
            dense.extend(others)
            dense_w.append(weight[col:])
        out: Tensor | None = None
        if dense:
            x = torch.cat(dense, dim=1) if len(dense) > 1 else dense[0]
            w = torch.cat(dense_w, dim=0) if len(dense_w) > 1 else dense_w[0]
            out = x @ w if bias is None else torch.addmm(bias, x, w)
        elif bias is not None:
            folded.append(bias)
        for part in folded:
            out = part if out is None else out + part
        assert out is not None
        return out

    def _embed(self, batch: Batch, key: str, names: list[str]) -> Tensor:
        """The embeddings ``(B, F, D)`` of one group of categorical features."""
        ids = torch.stack([batch[n] for n in names], dim=1)  # (B, F)
        offsets: Tensor = getattr(self, f"offsets_{key}")
        rows = torch.where(ids > 0, ids + offsets, 0)  # (B, F)
        return self.tables[key](rows)  # (B, F, D)

    def _other_parts(self, batch: Batch, grouped: dict[str, Tensor]) -> list[Tensor]:
        """Pooled sequences, numerics and text vectors, in column order."""
        parts: list[Tensor] = []
        for name, key, offset, pooling, query in self.sequences:
            ids = batch[name]  # (B, L)
            mask = ids > 0  # (B, L)
            emb = self.tables[key](torch.where(mask, ids + offset, 0))  # (B, L, D)
            if pooling == "attention":
                assert query is not None
                target = grouped[query[0]][:, query[1]]  # (B, D)
                parts.append(self.attention[name](target, emb, mask))
                continue
            pooled = (emb * mask.unsqueeze(-1)).sum(1)  # (B, D)
            if pooling == "mean":
                pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1)
            parts.append(pooled)
        if self.numeric_names:
            parts.append(torch.stack([batch[n].float() for n in self.numeric_names], dim=1))
        parts.extend(batch[n].float() for n in self.text_names)
        return parts


#: Alias: the same module under the name other libraries use.
FeatureEmbedding = InputLayer


def _fold_buckets(
    sizes: Sequence[int], max_buckets: int = 4, overhead: int = 64
) -> list[list[int]]:
    """Positions of ``sizes`` in at most ``max_buckets`` groups of similar size, minimising
    the padded cells ``sum(len(group) * max(group))`` plus ``overhead`` cells per group (the
    cost of one more matmul call). Groups are runs of the positions sorted by size."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    n = len(order)
    if n > 256:  # the search below is O(n^2); so many features: one bucket
        return [order]
    inf = float("inf")
    # cost[k][j]: best cost of the first j sorted positions in k groups; cut[k][j]: last start
    cost = [[inf] * (n + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(max_buckets + 1)]
    cost[0][0] = 0.0
    for k in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):  # last group: sorted positions i .. j-1
                c = cost[k - 1][i] + (j - i) * sizes[order[j - 1]] + overhead
                if c < cost[k][j]:
                    cost[k][j], cut[k][j] = c, i
    k = min(range(1, max_buckets + 1), key=lambda k: cost[k][n])
    groups, j = [], n
    while k > 0:
        i = cut[k][j]
        groups.append(order[i:j])
        j, k = i, k - 1
    return groups[::-1]


class _RowSum(torch.autograd.Function):
    """``out[b] = sum_f table[ids[b, f]]``: ``ids (B, F)``, ``table (R, N)`` -> ``(B, N)``.

    The forward is ``embedding_bag(mode="sum")``; the backward adds the output gradient into
    the table one column of ``ids`` at a time (``F`` calls of ``index_add_``), which on CPU is
    faster than embedding_bag's own backward (that sorts all ``B * F`` ids first).
    """

    @staticmethod
    def forward(ctx: Any, ids: Tensor, table: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = table.shape[0]
        return F.embedding_bag(ids, table, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (ids,) = ctx.saved_tensors
        grad_table = grad.new_zeros(ctx.rows, grad.shape[1])  # (R, N)
        for column in ids.t().contiguous():  # (B,) ids of one feature
            grad_table.index_add_(0, column, grad)
        return None, grad_table


class _DinAttention(nn.Module):
    """DIN's local activation unit (Zhou et al., KDD 2018), with the official code's masked,
    scaled softmax: score each history item against the candidate, then average."""

    def __init__(self, dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, activation="sigmoid")
        self.score = nn.Linear(self.mlp.out_dim, 1, bias=False)  # softmax ignores a bias
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, target: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """target ``(B, D)``, keys ``(B, L, D)``, mask ``(B, L)`` -> ``(B, D)``."""
        query = target.unsqueeze(1).expand_as(keys)  # (B, L, D)
        unit_in = torch.cat([query, keys, query - keys, query * keys], dim=-1)  # (B, L, 4D)
        scores = self.score(self.mlp(unit_in)).squeeze(-1) * self.scale  # (B, L)
        scores = scores.masked_fill(~mask, -1e9)
        weights = F.softmax(scores, dim=-1) * mask  # (B, L); all-padding rows -> 0
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, D)
