"""A user encoded from what they did: a history encoder with a sampled softmax over the catalog.

:class:`HistoryEncoder` has no user-id table. A user's vector in domain ``d`` is computed from
the items of their history (any domain), so a user the model never saw, or a user with no
event in the target domain, is encoded from what they did elsewhere. Three encoders:

* ``mean``: the mean item embedding through a residual MLP (the YouTube DNN user tower:
  Covington et al., RecSys 2016);
* ``attention``: one self-attention layer over the history as a set (no positions), then
  attention pooling with a learned query;
* ``sasrec``: positional embeddings and causal self-attention blocks over the history in
  time order; the user vector is the output at the newest position, and training predicts
  the next item at every position (SASRec: Kang & McAuley, ICDM 2018).

Items: one shared input table (what the encoder reads, over all domains), and per domain a
residual linear map of it for scoring (shared + domain-specific item representations), plus
an item bias; a user's vector in domain ``d`` is the encoder's output through a per-domain
residual head. ``score = <user vector of d, item vector of d> + bias``, so ranking all items of
a domain is one matrix product.

Loss (one task per domain): a sampled softmax of each positive against the batch's distinct
positives of the domain (in-batch negatives, which follow item popularity) and ``n_negatives``
items drawn uniformly from the domain (mixed negative sampling: Yang et al., WWW 2020). Each
candidate's logit is corrected by the log of its expected count among the candidates
(log-Q correction: Yi et al., RecSys 2019, "Sampling-bias-corrected neural modeling for large
corpus item recommendations"), ``log(n * p_i + N / I_d)`` for ``n`` rows and item frequency
``p_i`` (:meth:`HistoryEncoder.set_item_frequency`), so the model does not learn to push
popular items down. Accidental hits (a uniform draw equal to the row's positive) are masked.

Full softmax and bags (``loss: full``; the multinomial likelihood of Mult-DAE / Mult-VAE:
Liang et al., WWW 2018, "Variational Autoencoders for Collaborative Filtering"): each row's
logits over every item of its domain, no sampling. A training row may carry a *bag*
(``targets`` ``(B, T)``, all the user's items of the row's domain): the loss is the mean over
rows of ``-sum_{i in bag} log softmax_i`` (``bag_loss: all``), or of the items the history
dropout hid from the encoder only (``bag_loss: hidden``: the encoder is not paid to copy its
input). With ``history`` the same bag and a large ``history_dropout`` this is the denoising
autoencoder of Liang et al. with a pooled encoder; ``tied: false`` gives the output side its
own item table.

``residual: false`` bypasses every learned layer between the item tables and the scores (the
mean encoder's residual MLP, the per-domain user and item heads): a user is the plain mean of
their items' input vectors, scored against the output table, a low-rank item-item model whose
training moves the tables and item bias only. On sparse bags started from an SVD this is the
setting that training improves rather than harms (the residual layers learn a popularity offset
within an epoch; see benchmarks/RESULTS.md, amazon_cdr_neural).

Training regularisers for sparse data: ``history_dropout`` hides items of each training
history; ``domain_dropout`` hides all history of the row's own domain in a share of rows, so
the model learns to encode a user from their other domains (a user cold in the target).

Example:
    >>> from shoprec.models.features import CategoricalFeature, SequenceFeature, Task
    >>> features = [CategoricalFeature("item", 6, 8),
    ...             SequenceFeature("history", 6, 8, "mean", embedding_of="item")]
    >>> model = HistoryEncoder(features, [Task("s"), Task("t")],
    ...                        HistoryEncoderConfig(domain_sizes=(3, 2), encoder="mean"))
    >>> batch = {"history": torch.tensor([[1, 4], [0, 2]]), "item": torch.tensor([5, 2]),
    ...          "domain": torch.tensor([1, 0])}
    >>> {name: tuple(out.shape) for name, out in model(batch).items()}
    {'s': (2,), 't': (2,)}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel
from shoprec.models.features import CategoricalFeature, FeatureSpec, Task
from shoprec.models.layers import Batch

__all__ = ["ENCODERS", "HistoryEncoder", "HistoryEncoderConfig"]

ENCODERS = ("mean", "attention", "sasrec")
LOSSES = ("sampled", "full")
BAG_LOSSES = ("all", "hidden")


@dataclass(frozen=True)
class HistoryEncoderConfig:
    """Hyperparameters of :class:`HistoryEncoder`."""

    domain_sizes: tuple[int, ...] = (1,)  # items per domain, task order (item ids 1.. by domain)
    encoder: str = "attention"  # mean | attention | sasrec (see the module docstring)
    max_len: int = 50  # history length (positions of sasrec)
    n_layers: int = 1  # self-attention blocks (attention: 1 used; sasrec: all)
    n_heads: int = 1  # attention heads (dim must divide by it)
    dropout: float = 0.1  # inside the encoder
    history_dropout: float = 0.2  # training: share of history items hidden per row
    domain_dropout: float = 0.0  # training: share of rows whose own-domain history is hidden
    n_negatives: int = 1024  # uniform negatives per domain and batch, beside in-batch ones
    in_batch_negatives: bool = True  # the batch's other distinct positives of the domain
    log_q_correction: bool = True  # subtract log(expected count) of each candidate
    temperature: float = 0.1  # logits = <u, v> / temperature + bias
    init_std: float = 0.05  # normal init of the item table
    domain_items: bool = True  # per-domain residual map of the item vectors (else shared)
    loss: str = "sampled"  # sampled (in-batch + uniform, log-Q) | full (softmax over the domain)
    bag_loss: str = "all"  # rows with a bag: every bag item | only those hidden from the encoder
    tied: bool = True  # one item table for reading and scoring (else a second, output table)
    # False: no learned layer between the item tables and the scores (the mean encoder's
    # residual MLP and the per-domain user and item heads are bypassed), so a user is the
    # plain mean of their items' vectors and training moves the tables and item bias only:
    # a low-rank item-item model (with init svd, trained from its closed-form start)
    residual: bool = True

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.bag_loss not in BAG_LOSSES:
            raise ValueError(f"bag_loss must be one of {BAG_LOSSES}, got {self.bag_loss!r}")


class _Block(nn.Module):
    """Pre-norm self-attention + feed-forward block (the SASRec / Transformer block)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` ``(B, L, D)``; ``mask`` ``(B * heads, L, L)``, True = may not attend."""
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm2(x)))


class HistoryEncoder(MultiTaskModel):
    """Users from their item histories, items per domain, sampled softmax with log-Q
    correction (see the module docstring). One task per domain.

    Batch keys: ``history`` ``(B, L)`` item ids, oldest first, left-padded with 0;
    ``item`` ``(B,)`` the positive (or ``(B, L)`` the next item at each position, sasrec);
    ``domain`` ``(B,)`` the row's domain (training only); optionally ``targets`` ``(B, T)``
    a bag of positives per row (0 = padding; training only, see the module docstring).
    """

    model_name = "history_encoder"

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        tasks: Sequence[Task],
        config: HistoryEncoderConfig,
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        item = {f.name: f for f in features}.get("item")
        if not isinstance(item, CategoricalFeature):
            raise ValueError("HistoryEncoder needs a categorical feature 'item'")
        if len(c.domain_sizes) != len(tasks):
            raise ValueError(f"domain_sizes {c.domain_sizes} must give one size per task")
        if sum(c.domain_sizes) + 1 != item.vocab_size:
            raise ValueError("item vocab_size must be sum(domain_sizes) + 1 (id 0 = padding)")
        dim = item.dim
        if dim % c.n_heads:
            raise ValueError(f"dim {dim} must divide by n_heads {c.n_heads}")
        self.dim = dim
        n_dom = len(tasks)
        self.item_embedding = nn.Embedding(item.vocab_size, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=c.init_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.output_embedding: nn.Embedding | None = None
        if not c.tied:
            self.output_embedding = nn.Embedding(item.vocab_size, dim, padding_idx=0)
            nn.init.normal_(self.output_embedding.weight, std=c.init_std)
            with torch.no_grad():
                self.output_embedding.weight[0].zero_()
        self.item_bias = nn.Embedding(item.vocab_size, 1, padding_idx=0)
        nn.init.zeros_(self.item_bias.weight)
        self.drop = nn.Dropout(c.dropout)
        if c.encoder == "mean":
            self.pool_mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            n_blocks = c.n_layers if c.encoder == "sasrec" else 1
            self.blocks = nn.ModuleList(_Block(dim, c.n_heads, c.dropout) for _ in range(n_blocks))
            self.out_norm = nn.LayerNorm(dim)
            if c.encoder == "sasrec":
                self.positions = nn.Embedding(c.max_len, dim)
                nn.init.normal_(self.positions.weight, std=c.init_std)
            else:
                self.query = nn.Parameter(torch.randn(dim) * c.init_std)
        # Per-domain residual heads (start as the identity): user vectors and item vectors.
        self.user_heads = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_dom))
        self.item_heads = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_dom))
        for head in [*self.user_heads, *self.item_heads]:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        starts = np.concatenate([[0], np.cumsum(c.domain_sizes)[:-1]]) + 1
        self.register_buffer("starts", torch.as_tensor(starts, dtype=torch.long), persistent=False)
        # log of each item's training frequency within its domain (log-Q correction); uniform
        # until set_item_frequency is called. Saved with the weights.
        sizes = torch.as_tensor([1, *c.domain_sizes], dtype=torch.float32)
        dom = torch.repeat_interleave(
            torch.arange(n_dom + 1), torch.as_tensor([1, *c.domain_sizes])
        )
        self.register_buffer("item_log_p", -torch.log(sizes[dom]))

    # ---- setup
    def set_item_frequency(self, counts: np.ndarray | Tensor) -> None:
        """Item training counts ``(n_items + 1,)`` (index = item id): the in-batch proposal
        of the log-Q correction (each item's share of its domain's positives, smoothed)."""
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float32) + 0.5
        p = torch.empty_like(counts)
        p[0] = 1.0
        for k in range(len(self.tasks)):
            lo, hi = self.item_range(k)
            p[lo:hi] = counts[lo:hi] / counts[lo:hi].sum()
        self.item_log_p.copy_(torch.log(p))

    def parts(self) -> dict[str, list[nn.Module]]:
        """Named groups of modules, for freezing: ``item_embeddings`` (the shared table),
        ``item_bias``, ``encoder`` (everything that reads the history), ``heads`` (per-domain
        user and item heads)."""
        enc = [m for n, m in self.named_children() if n in ("pool_mlp", "blocks", "out_norm",
                                                           "positions")]  # fmt: skip
        tables = [self.item_embedding]
        if self.output_embedding is not None:
            tables.append(self.output_embedding)
        return {
            "item_embeddings": tables,
            "item_bias": [self.item_bias],
            "encoder": enc,
            "heads": [self.user_heads, self.item_heads],
        }

    def item_range(self, domain: int) -> tuple[int, int]:
        """``(first id, last id + 1)`` of a domain's items."""
        start = int(self.starts[domain])
        return start, start + self.config.domain_sizes[domain]

    # ---- items
    def item_vectors(self, ids: Tensor, domain: int) -> Tensor:
        """Scoring vectors of item ids in one domain, ``(...)`` -> ``(..., D)``."""
        table = self.output_embedding if self.output_embedding is not None else self.item_embedding
        e = table(ids)
        c = self.config
        return e + self.item_heads[domain](e) if c.domain_items and c.residual else e

    # ---- users
    def encode(self, history: Tensor, visible: Tensor | None = None) -> Tensor:
        """History ``(B, L)`` -> encoder output: ``(B, D)`` (mean, attention) or ``(B, L, D)``
        (sasrec, one vector per position). ``visible`` ``(B, L)`` hides items (dropout)."""
        c = self.config
        mask = history > 0
        if visible is not None:
            mask = mask & visible
        ids = torch.where(mask, history, 0)
        x = self.item_embedding(ids)  # (B, L, D)
        if c.encoder == "mean":
            pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D)
            return pooled + self.pool_mlp(self.drop(pooled)) if c.residual else pooled
        pad = ~mask  # (B, L)
        n = history.shape[1]
        blocked = pad.unsqueeze(1).expand(-1, n, -1)  # (B, L, L): no attending to padding
        if c.encoder == "sasrec":
            pos = torch.arange(max(c.max_len - n, 0), c.max_len, device=history.device)[-n:]
            x = x * (self.dim**0.5) + self.positions(pos)  # (B, L, D)
            causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)
            blocked = blocked | causal  # nor to the future
        # every position may see itself, so no row of the softmax is empty (NaN)
        blocked = blocked & ~torch.eye(n, dtype=torch.bool, device=x.device)
        blocked = blocked.repeat_interleave(c.n_heads, dim=0)  # (B * H, L, L)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, blocked)
        x = self.out_norm(x)  # (B, L, D)
        if c.encoder == "sasrec":
            return x
        w = (x @ self.query).masked_fill(pad, float("-inf"))  # (B, L)
        empty = pad.all(1, keepdim=True)  # (B, 1): nothing visible
        w = torch.where(empty, 0.0, w)
        pooled = (torch.softmax(w, dim=1).unsqueeze(2) * x).sum(1)  # (B, D)
        return torch.where(empty, torch.zeros_like(pooled), pooled)

    def domain_vectors(self, h: Tensor, domain: int) -> Tensor:
        """Encoder output ``(..., D)`` -> user vectors of one domain ``(..., D)``."""
        return h + self.user_heads[domain](h) if self.config.residual else h

    def user_vectors(self, batch: Batch, domain: int) -> Tensor:
        """A batch's user vectors in one domain ``(B, D)`` (sasrec: at the newest position)."""
        h = self.encode(batch["history"])
        if h.dim() == 3:
            h = h[:, -1]
        return self.domain_vectors(h, domain)

    def score_domain(self, vectors: Tensor, domain: int) -> Tensor:
        """Logits ``(U, I_d)`` of every item of a domain (column ``j`` = id ``start + j``)."""
        lo, hi = self.item_range(domain)
        ids = torch.arange(lo, hi, device=vectors.device)
        v = self.item_vectors(ids, domain)  # (I_d, D)
        return vectors @ v.T / self.config.temperature + self.item_bias(ids).T

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Logit of ``batch["item"]`` (its last column when 2-D) in each domain: ``(B,)``."""
        h = self.encode(batch["history"])
        if h.dim() == 3:
            h = h[:, -1]
        item = batch["item"] if batch["item"].dim() == 1 else batch["item"][:, -1]
        b = self.item_bias(item).squeeze(-1)
        out = {}
        for k, t in enumerate(self.tasks):
            u = self.domain_vectors(h, k)
            out[t.name] = (u * self.item_vectors(item, k)).sum(-1) / self.config.temperature + b
        return out

    def _visible(self, batch: Batch) -> Tensor | None:
        """Training-time mask of the history items the encoder may read."""
        c = self.config
        hist = batch["history"]
        if not self.training or (c.history_dropout <= 0 and c.domain_dropout <= 0):
            return None
        keep = torch.ones_like(hist, dtype=torch.bool)
        if c.history_dropout > 0:
            keep &= torch.rand(hist.shape, device=hist.device) >= c.history_dropout
        if c.domain_dropout > 0 and "domain" in batch:
            item_dom = torch.bucketize(hist.contiguous(), self.starts, right=True) - 1  # (B, L)
            own = item_dom == batch["domain"].unsqueeze(1)
            hide = torch.rand(hist.shape[0], 1, device=hist.device) < c.domain_dropout
            keep &= ~(own & hide)
        return keep

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Per domain: sampled softmax with log-Q correction over in-batch + uniform
        candidates (see the module docstring). A domain with no row in the batch gets 0."""
        visible = self._visible(batch)
        h = self.encode(batch["history"], visible)
        if "targets" in batch:
            return self._bag_losses(outputs, batch, h, visible)
        item = batch["item"]
        if h.dim() == 3 and item.dim() == 1:  # one positive per row: the newest position
            h = h[:, -1]
        elif h.dim() == 2 and item.dim() == 2:
            item = item[:, -1]
        domain = batch["domain"]
        losses: dict[str, Tensor] = {}
        for k, task in enumerate(self.tasks):
            rows = domain == k
            if h.dim() == 3:  # (B, L, D) with (B, L) next items
                sel = rows.unsqueeze(1) & (item > 0)
                q, pos = h[sel], item[sel]  # (n, D), (n,)
            else:
                q, pos = h[rows], item[rows]
            if pos.numel() == 0:
                losses[task.name] = outputs[task.name].sum() * 0.0
                continue
            u = self.domain_vectors(q, k)
            if self.config.loss == "full":
                logits = self.score_domain(u, k)  # (n, I_d), column = id - lo
                losses[task.name] = F.cross_entropy(logits, pos - self.item_range(k)[0])
            else:
                losses[task.name] = self._sampled_softmax(u, pos, k)
        return losses

    def _bag_losses(
        self, outputs: dict[str, Tensor], batch: Batch, h: Tensor, visible: Tensor | None
    ) -> dict[str, Tensor]:
        """Rows with a bag of positives ``targets`` ``(B, T)``: per domain, the mean over its
        rows of the summed negative log-likelihood of the bag's (counted) items."""
        if h.dim() == 3:
            raise ValueError("bag rows ('targets') take the mean or attention encoder")
        targets, domain = batch["targets"], batch["domain"]
        weight = (targets > 0).float()  # (B, T)
        if self.config.bag_loss == "hidden":
            seen = batch["history"] > 0 if visible is None else visible & (batch["history"] > 0)
            read = torch.where(seen, batch["history"], -1)  # (B, L) what the encoder read
            shown = (targets.unsqueeze(2) == read.unsqueeze(1)).any(2)  # (B, T)
            weight = weight * (~shown).float()
        losses: dict[str, Tensor] = {}
        for k, task in enumerate(self.tasks):
            rows = domain == k
            if not bool(rows.any()):
                losses[task.name] = outputs[task.name].sum() * 0.0
                continue
            u = self.domain_vectors(h[rows], k)
            lo, _ = self.item_range(k)
            tgt, w = targets[rows], weight[rows]
            col = (tgt - lo).clamp_min(0)  # padding -> column 0, weight 0
            if self.config.loss == "full":
                logp = torch.log_softmax(self.score_domain(u, k), dim=1).gather(1, col)
                losses[task.name] = -(logp * w).sum() / len(u)
            else:  # one sampled softmax per (row, bag item)
                sel = w > 0
                if not bool(sel.any()):
                    losses[task.name] = outputs[task.name].sum() * 0.0
                    continue
                q = u.unsqueeze(1).expand(-1, tgt.shape[1], -1)[sel]
                n_per_row = sel.sum() / len(u)
                losses[task.name] = self._sampled_softmax(q, tgt[sel], k) * n_per_row
        return losses

    def _sampled_softmax(self, u: Tensor, pos: Tensor, k: int) -> Tensor:
        """Cross-entropy of each positive ``(n,)`` among in-batch + uniform candidates."""
        c = self.config
        lo, hi = self.item_range(k)
        size = hi - lo
        n_neg = min(c.n_negatives, size)
        parts = []
        if c.in_batch_negatives:
            uniq = torch.unique(pos)  # (P,) sorted
            parts.append(uniq)
        else:
            uniq = pos.new_zeros(0)
        neg = torch.randint(lo, hi, (n_neg,), device=pos.device)
        parts.append(neg)
        cand = torch.cat(parts)  # (C,)
        if c.in_batch_negatives:
            target = torch.searchsorted(uniq, pos)  # the positive's own in-batch slot
            logits = u @ self.item_vectors(cand, k).T  # (n, C)
        else:  # the positive in slot 0, then the uniform draws
            own = (u * self.item_vectors(pos, k)).sum(-1, keepdim=True)
            logits = torch.cat([own, u @ self.item_vectors(cand, k).T], dim=1)
            cand = torch.cat([pos.new_zeros(1), cand])
            target = torch.zeros_like(pos)
        logits = logits / c.temperature
        bias = self.item_bias(cand).squeeze(-1)  # (C,)
        if not c.in_batch_negatives:
            bias = bias.unsqueeze(0).expand(len(pos), -1).clone()
            bias[:, 0] = self.item_bias(pos).squeeze(-1)
        logits = logits + bias
        if c.log_q_correction and c.in_batch_negatives:  # (uniform-only: a constant, no effect)
            expected = len(pos) * torch.exp(self.item_log_p[cand]) + n_neg / size  # (C,)
            logits = logits - torch.log(expected).unsqueeze(0)
        # accidental hits: a uniform draw equal to the row's positive (not its own slot)
        n_fixed = len(uniq) if c.in_batch_negatives else 1
        hit = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        hit[:, n_fixed:] = pos.unsqueeze(1) == neg.unsqueeze(0)
        logits = logits.masked_fill(hit, float("-inf"))
        return F.cross_entropy(logits, target)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The item table, item bias and encoder feed every domain's loss."""
        shared = [*self.item_embedding.parameters(), *self.item_bias.parameters()]
        if self.output_embedding is not None:
            shared.extend(self.output_embedding.parameters())
        for m in self.parts()["encoder"]:
            shared.extend(m.parameters() if isinstance(m, nn.Module) else [m])
        if self.config.encoder == "attention":
            shared.append(self.query)
        return shared

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The encoder's last layer (the item table for ``mean``)."""
        if self.config.encoder == "mean":
            return list(self.pool_mlp[-1].parameters())
        return list(self.out_norm.parameters())
