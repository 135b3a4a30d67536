"""Cross-domain transfer: one user base, several domains (markets, categories), few events in
some of them. Every method here is a few explicit steps over the same model and the one fit
loop (DESIGN.md convention 7: no phase strings, no model as a state machine).

The model, :class:`CrossDomainModel`, scores (user, item) pairs of a domain as a dot product
``<user vector of domain d, item vector>`` (plus an item bias), so a full ranking of all items
of a domain is one matrix product. A user's vector in domain ``d`` is computed from

* a user-id embedding shared by all domains (id 0 = an unknown user: a zero vector), and
* the mean embedding of the user's history: items of *every* domain (a shared item table
  whose rows are domain-specific items), so what a user bought in the source shapes their
  target vector,

fed either through one tower per domain (``n_shared_experts == n_domain_experts == 0``:
shared embeddings + domain-specific towers, the "joint" model) or through shared and
domain-specific experts mixed by a per-domain gate (PLE / STAR-style multi-domain model: Tang
et al., RecSys 2020; Sheng et al., CIKM 2021, "One Model to Serve All"). Each domain is a
task of the model; its loss is a sampled softmax over the batch's positives of that domain and
uniform negatives from the domain's items (Yi et al., RecSys 2019).

The transfer recipes, each a few lines of user code:

1. **Target only**: ``fit`` on target rows, with histories of the target only.
2. **Pretrain, then fine-tune** with parts frozen::

       fit(model, source_rows, config=cfg, evaluator=on_source)
       freeze(model, parts=("user_embeddings",))
       fit(model, target_rows, config=cfg, evaluator=on_target)

3. **Joint training**, ``J = J_S + lambda * J_T``: ``fit(model, both_rows, config=cfg,
   weighting=joint_weighting(source, target, lam))``.
4. **Multi-domain experts**: the same as 3 with ``n_shared_experts, n_domain_experts > 0``.
5. **EMCDR** (Man et al., IJCAI 2017): train a model per domain, then :func:`fit_mapping` an
   MLP from a user's source vector to their target vector on users active in both; a user
   with no target history gets ``mapping(source vector)`` (:mod:`shoprec.transfer.cold_start`).

Example:
    >>> import polars as pl
    >>> frame = pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
    ...                       "domain": ["s", "t", "s"]})
    >>> index = DomainIndex.fit(frame, domains=["s", "t"])
    >>> index.domain_sizes, index.n_users
    ((1, 1), 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.data.batches import TensorData
from shoprec.evaluate import metrics
from shoprec.models.base import MultiTaskModel
from shoprec.models.features import CategoricalFeature, FeatureSpec, SequenceFeature, Task
from shoprec.models.layers import MLP, Batch, ExpertBank
from shoprec.train.weighting import FixedWeights

__all__ = [
    "PARTS",
    "CrossDomainConfig",
    "CrossDomainModel",
    "DomainIndex",
    "EMCDRConfig",
    "EMCDRMapping",
    "fit_mapping",
    "freeze",
    "frozen_parameters",
    "history_matrix",
    "joint_weighting",
    "load_embeddings",
    "ranking_evaluator",
    "score_items",
    "tie_items",
    "training_rows",
    "unfreeze",
    "user_rows",
    "user_vectors",
]


# --------------------------------------------------------------------------- ids


@dataclass(frozen=True)
class DomainIndex:
    """Integer ids for users and for items of several domains, fit on a training frame.

    Users get ``1..n_users`` (0 = unknown). Items of domain ``k`` get the contiguous ids
    ``starts[k] + 1 .. starts[k] + domain_sizes[k]`` of one global item vocabulary (0 =
    padding / unknown), so a domain's items are one slice of the item table.

    Attributes:
        domains: domain names, in task order.
        users: user ids; ``users[j]`` has id ``j + 1``.
        items: per domain, its item ids; ``items[k][j]`` has id ``starts[k] + j + 1``.
    """

    domains: tuple[str, ...]
    users: tuple[str, ...]
    items: tuple[tuple[str, ...], ...]

    @classmethod
    def fit(cls, frame: pl.DataFrame, domains: Sequence[str] | None = None) -> DomainIndex:
        """Collect users and per-domain items of ``frame`` (columns ``user, item, domain``).

        Args:
            frame: training pairs.
            domains: domain order (default: sorted names found in ``frame``).

        Returns:
            The index; ids are assigned in sorted order, so they are deterministic.
        """
        names = tuple(domains) if domains is not None else tuple(sorted(frame["domain"].unique()))
        users = tuple(frame["user"].cast(pl.String).unique().sort().to_list())
        items = tuple(
            tuple(frame.filter(pl.col("domain") == d)["item"].cast(pl.String).unique().sort())
            for d in names
        )
        return cls(domains=names, users=users, items=items)

    @property
    def n_users(self) -> int:
        """Number of known users (the user vocabulary is ``n_users + 1``)."""
        return len(self.users)

    @property
    def domain_sizes(self) -> tuple[int, ...]:
        """Items per domain, in domain order."""
        return tuple(len(x) for x in self.items)

    @property
    def starts(self) -> tuple[int, ...]:
        """Id offset of each domain: its items are ``start + 1 .. start + size``."""
        return tuple(int(s) for s in np.concatenate([[0], np.cumsum(self.domain_sizes)[:-1]]))

    @property
    def n_items(self) -> int:
        """Total number of items (the item vocabulary is ``n_items + 1``)."""
        return sum(self.domain_sizes)

    def domain_of(self, name: str) -> int:
        """Index of a domain name (``ValueError`` naming the known ones if unknown)."""
        if name not in self.domains:
            raise ValueError(f"unknown domain {name!r}; known: {list(self.domains)}")
        return self.domains.index(name)

    def encode(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user id, item id, domain index)`` arrays for ``frame``; unknown users and items
        map to 0, unknown domains to -1."""
        uid = pl.DataFrame(
            {"user": list(self.users), "_u": np.arange(1, self.n_users + 1, dtype=np.int64)}
        )
        parts = []
        for k, (d, its) in enumerate(zip(self.domains, self.items, strict=True)):
            ids = np.arange(1, len(its) + 1, dtype=np.int64) + self.starts[k]
            parts.append(
                pl.DataFrame({"item": list(its), "domain": [d] * len(its), "_i": ids, "_d": k})
            )
        iid = pl.concat(parts) if parts else None
        f = frame.select(
            pl.col("user").cast(pl.String),
            pl.col("item").cast(pl.String),
            pl.col("domain").cast(pl.String),
        ).with_row_index("_row")
        f = f.join(uid, on="user", how="left")
        if iid is not None:
            f = f.join(
                iid.with_columns(pl.col("_d").cast(pl.Int64)), on=["item", "domain"], how="left"
            )
        f = f.join(
            pl.DataFrame({"domain": list(self.domains), "_k": np.arange(len(self.domains))}),
            on="domain",
            how="left",
        ).sort("_row")
        return (
            f["_u"].fill_null(0).to_numpy().astype(np.int64),
            f["_i"].fill_null(0).to_numpy().astype(np.int64),
            f["_k"].fill_null(-1).to_numpy().astype(np.int64),
        )

    def shared_item_rows(self) -> np.ndarray:
        """``(n_items + 1,)``: for each item id, the id of the same raw item id in the first
        domain that sells it (itself if it is the first), for :func:`tie_items`: a product
        sold in several markets then has one embedding."""
        first: dict[str, int] = {}
        rows = np.arange(self.n_items + 1, dtype=np.int64)
        for k, its in enumerate(self.items):
            for j, item in enumerate(its):
                rows[self.starts[k] + j + 1] = first.setdefault(item, self.starts[k] + j + 1)
        return rows

    def specs(self, dim: int) -> tuple[list[FeatureSpec], list[Task]]:
        """Feature and task specs of a :class:`CrossDomainModel` over this index."""
        features: list[FeatureSpec] = [
            CategoricalFeature("user", self.n_users + 1, dim),
            CategoricalFeature("item", self.n_items + 1, dim),
            SequenceFeature("history", self.n_items + 1, dim, "mean", embedding_of="item"),
        ]
        return features, [Task(d) for d in self.domains]


def history_matrix(
    users: np.ndarray, items: np.ndarray, n_users: int, max_len: int, seed: int = 0
) -> np.ndarray:
    """One padded row of history item ids per user id.

    Args:
        users: ``(N,)`` user ids (``1..n_users``).
        items: ``(N,)`` item ids (any domains); duplicates are kept once.
        n_users: number of users; row 0 (unknown user) stays empty.
        max_len: row width; users with more items keep a seeded random ``max_len`` of them.
        seed: seed of that subsample.

    Returns:
        ``(n_users + 1, max_len)`` int64, padded with 0 at the end.
    """
    pairs = np.unique(np.stack([users, items], 1), axis=0) if len(users) else np.zeros((0, 2))
    pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)].astype(np.int64)
    rng = np.random.default_rng(seed)
    pairs = pairs[rng.permutation(len(pairs))]
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]  # users grouped, items shuffled
    out = np.zeros((n_users + 1, max_len), dtype=np.int64)
    if len(pairs) == 0:
        return out
    starts = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
    pos = np.arange(len(pairs)) - starts  # position within the user's group
    keep = pos < max_len
    out[pairs[keep, 0], pos[keep]] = pairs[keep, 1]
    return out


def user_rows(
    users: np.ndarray,
    items: np.ndarray,
    domains: np.ndarray,
    history: np.ndarray,
    max_pos: int = 64,
) -> TensorData:
    """Training rows with one row per (user, domain): ``item`` ``(N, P)`` holds the user's
    items of that domain (padded with 0, at most ``max_pos``), ``history`` the user's history
    row, items of the row included: the model learns to restore the items that history
    dropout hid (a denoising, Mult-DAE-style objective; Liang et al., WWW 2018).

    Args:
        users: ``(N,)`` user ids of the training pairs.
        items: ``(N,)`` item ids.
        domains: ``(N,)`` domain index of each pair.
        history: ``(U + 1, L)`` from :func:`history_matrix`.
        max_pos: most positives kept per row (a seeded-order prefix of the user's items).

    Returns:
        Columns ``user, domain`` ``(R,)``, ``item`` ``(R, P)``, ``history`` ``(R, L)``.
    """
    key = users.astype(np.int64) * 1024 + domains
    order = np.lexsort((items, key))
    key, it = key[order], items[order]
    uniq, start, count = np.unique(key, return_index=True, return_counts=True)
    width = int(min(max(count.max(initial=1), 1), max_pos))
    pos = np.arange(len(key)) - np.repeat(start, count)
    keep = pos < width
    out = np.zeros((len(uniq), width), dtype=np.int64)
    out[np.repeat(np.arange(len(uniq)), count)[keep], pos[keep]] = it[keep]
    row_users = uniq // 1024
    return TensorData(
        {
            "user": torch.as_tensor(row_users, dtype=torch.long),
            "item": torch.as_tensor(out, dtype=torch.long),
            "domain": torch.as_tensor(uniq % 1024, dtype=torch.long),
            "history": torch.as_tensor(history[row_users], dtype=torch.long),
        }
    )


def training_rows(
    users: np.ndarray, items: np.ndarray, domains: np.ndarray, history: np.ndarray
) -> TensorData:
    """Training rows for :func:`~shoprec.train.loop.fit`: one per (user, item) pair, with
    the user's history **without that item** (so no row sees its own label).

    Args:
        users: ``(N,)`` user ids.
        items: ``(N,)`` item ids.
        domains: ``(N,)`` domain index of each pair.
        history: ``(U + 1, L)`` from :func:`history_matrix`.

    Returns:
        Columns ``user, item, domain`` ``(N,)`` and ``history`` ``(N, L)``.
    """
    hist = history[users]  # (N, L)
    hist = np.where(hist == items[:, None], 0, hist)
    return TensorData(
        {
            "user": torch.as_tensor(users, dtype=torch.long),
            "item": torch.as_tensor(items, dtype=torch.long),
            "domain": torch.as_tensor(domains, dtype=torch.long),
            "history": torch.as_tensor(hist, dtype=torch.long),
        }
    )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class CrossDomainConfig:
    """Hyperparameters of :class:`CrossDomainModel`."""

    domain_sizes: tuple[int, ...] = (1,)  # items per domain, task order (DomainIndex.domain_sizes)
    n_shared_experts: int = 0  # experts every domain reads (0 and 0: plain towers)
    n_domain_experts: int = 0  # experts owned by each domain
    expert_dims: tuple[int, ...] = (128,)  # widths of each expert MLP
    tower_dims: tuple[int, ...] = ()  # hidden widths of each domain's tower; () = linear
    dropout: float = 0.0  # after hidden activations
    use_user_id: bool = True  # a shared user-id embedding beside the pooled history
    user_id_dropout: float = 0.1  # training: share of rows whose user id is hidden (new users)
    history_dropout: float = 0.2  # training: share of history items hidden per row
    n_negatives: int = 0  # uniform negatives per domain and batch; 0 = every item (full softmax)
    in_batch_negatives: bool = False  # also the batch's other positives of the domain
    input_dropout: float = 0.0  # dropout on the [user id, history] input of the towers
    l2: float = 0.0  # L2 penalty on the embedding rows a batch uses (users, history, targets)
    init_std: float = 0.05  # normal init of the embedding tables
    residual: bool = True  # user vector = user-id embedding + the towers' output
    predict_hidden_only: bool = False  # user rows: only the items history dropout hid count


class CrossDomainModel(MultiTaskModel):
    """Shared user/item embeddings, then per-domain towers or gated shared + domain experts,
    then a dot product with the item embedding. One task per domain (see module docstring).

    Batch keys: ``user`` ``(B,)``, ``history`` ``(B, L)`` item ids, ``item`` ``(B,)``,
    ``domain`` ``(B,)`` (training only).
    """

    model_name = "cross_domain"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: CrossDomainConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        by_name = {f.name: f for f in features}
        user, item = by_name.get("user"), by_name.get("item")
        if not isinstance(user, CategoricalFeature) or not isinstance(item, CategoricalFeature):
            raise ValueError("CrossDomainModel needs categorical features 'user' and 'item'")
        if len(c.domain_sizes) != len(tasks):
            raise ValueError(f"domain_sizes {c.domain_sizes} must give one size per task")
        if sum(c.domain_sizes) + 1 != item.vocab_size:
            raise ValueError("item vocab_size must be sum(domain_sizes) + 1 (id 0 = padding)")
        dim = item.dim
        self.dim = dim
        self.user_embedding = nn.Embedding(user.vocab_size, dim, padding_idx=0)
        self.item_embedding = nn.Embedding(item.vocab_size, dim, padding_idx=0)
        self.item_bias = nn.Embedding(item.vocab_size, 1, padding_idx=0)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=c.init_std)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.user_embedding.weight[0].zero_()
            self.item_embedding.weight[0].zero_()
        in_dim = 2 * dim  # [user id embedding, mean history embedding]
        self.drop = nn.Dropout(c.input_dropout)
        n_dom = len(tasks)
        self.uses_experts = c.n_shared_experts + c.n_domain_experts > 0
        if self.uses_experts:
            s, k = c.n_shared_experts, c.n_domain_experts
            self.shared_experts = ExpertBank(s, in_dim, c.expert_dims, c.dropout) if s > 0 else None
            self.domain_experts = (
                nn.ModuleList(ExpertBank(k, in_dim, c.expert_dims, c.dropout) for _ in range(n_dom))
                if k > 0
                else None
            )
            self.gates = nn.ModuleList(nn.Linear(in_dim, k + s) for _ in range(n_dom))
            width = c.expert_dims[-1]
        else:
            width = in_dim
        self.towers = nn.ModuleList(MLP(width, c.tower_dims, c.dropout) for _ in range(n_dom))
        self.heads = nn.ModuleList(nn.Linear(t.out_dim, dim) for t in self.towers)
        if c.residual:  # start as the plain dot product <user embedding, item embedding>
            for head in self.heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        # Embedding row of each item id: the identity, unless tie_items() makes the same
        # product in several domains share one row (its bias stays per domain).
        self.register_buffer("item_rows", torch.arange(item.vocab_size, dtype=torch.long))
        starts = np.concatenate([[0], np.cumsum(c.domain_sizes)[:-1]]) + 1
        self.register_buffer("starts", torch.as_tensor(starts, dtype=torch.long), persistent=False)

    # ---- parts, for freezing
    def parts(self) -> dict[str, list[nn.Module]]:
        """Named groups of modules: ``user_embeddings``, ``item_embeddings``, ``embeddings``
        (both tables), ``item_bias``, ``experts`` (expert banks and gates), ``towers`` (towers
        and their output heads)."""
        experts: list[nn.Module] = []
        if self.uses_experts:
            experts = [m for m in (self.shared_experts, self.domain_experts) if m is not None]
            experts.append(self.gates)
        users = [self.user_embedding]
        items = [self.item_embedding]
        return {
            "user_embeddings": users,
            "item_embeddings": items,
            "embeddings": users + items,
            "item_bias": [self.item_bias],
            "experts": experts,
            "towers": [self.towers, self.heads],
        }

    def item_vectors(self, ids: Tensor) -> Tensor:
        """Embeddings of item ids, any shape ``(...)`` -> ``(..., D)`` (tied rows shared)."""
        return self.item_embedding(self.item_rows[ids])

    # ---- user side
    def user_input(self, batch: Batch, visible: Tensor | None = None) -> Tensor:
        """``[user-id embedding, mean history embedding]`` ``(B, 2D)``; in training mode some
        user ids and history items are hidden (``user_id_dropout``, ``history_dropout``),
        unless ``visible`` ``(B, L)`` says which history items to use."""
        c = self.config
        users = batch["user"]
        hist = batch["history"]  # (B, L)
        mask = hist > 0  # (B, L)
        if visible is not None:
            mask = mask & visible
        elif self.training and c.history_dropout > 0:
            mask = mask & (torch.rand(mask.shape, device=hist.device) >= c.history_dropout)
        if self.training and c.user_id_dropout > 0:
            hide = torch.rand(users.shape, device=users.device) < c.user_id_dropout
            users = torch.where(hide, 0, users)
        if not c.use_user_id:
            users = torch.zeros_like(users)
        u = self.user_embedding(users)  # (B, D)
        emb = self.item_vectors(torch.where(mask, hist, 0))  # (B, L, D)
        pooled = emb.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D)
        x = torch.cat([u, pooled], dim=1)
        return self.drop(x) if self.training else x

    def domain_vectors(self, x: Tensor, domain: int) -> Tensor:
        """User inputs ``(B, 2D)`` -> user vectors of one domain ``(B, D)``."""
        if self.uses_experts:
            pool = []
            if self.domain_experts is not None:
                pool.append(self.domain_experts[domain](x))  # (B, K, E)
            if self.shared_experts is not None:
                pool.append(self.shared_experts(x))  # (B, S, E)
            experts = torch.cat(pool, dim=1)  # (B, K + S, E)
            weights = torch.softmax(self.gates[domain](x), dim=-1)  # (B, K + S)
            h = torch.bmm(weights.unsqueeze(1), experts).squeeze(1)  # (B, E)
            out = self.heads[domain](self.towers[domain](h))
            return out + x[:, : self.dim] if self.config.residual else out
        out = self.heads[domain](self.towers[domain](x))
        return out + x[:, : self.dim] if self.config.residual else out

    def user_vectors(self, batch: Batch, domain: int) -> Tensor:
        """A batch's user vectors in one domain ``(B, D)``."""
        return self.domain_vectors(self.user_input(batch), domain)

    def item_range(self, domain: int) -> tuple[int, int]:
        """``(first id, last id + 1)`` of a domain's items."""
        start = int(self.starts[domain])
        return start, start + self.config.domain_sizes[domain]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Score of ``batch["item"]`` for the batch's user in each domain: name -> ``(B,)``."""
        x = self.user_input(batch)
        item = batch["item"] if batch["item"].dim() == 1 else batch["item"][:, 0]
        e = self.item_vectors(item)  # (B, D)
        b = self.item_bias(item).squeeze(-1)  # (B,)
        return {
            t.name: (self.domain_vectors(x, k) * e).sum(-1) + b for k, t in enumerate(self.tasks)
        }

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Per domain: softmax of each positive against every item of the domain, or (with
        ``n_negatives > 0``) against ``n_negatives`` uniform items of the domain and, with
        ``in_batch_negatives``, the domain's other positives in the batch (accidental hits
        masked). A domain with no row in the batch gets a zero loss."""
        hist = batch["history"]
        visible = None
        if self.training and self.config.history_dropout > 0:
            visible = torch.rand(hist.shape, device=hist.device) >= self.config.history_dropout
        x = self.user_input(batch, visible)
        losses: dict[str, Tensor] = {}
        penalty = self._l2(batch) if self.config.l2 > 0 else None
        for k, task in enumerate(self.tasks):
            rows = torch.nonzero(batch["domain"] == k).squeeze(1)
            if rows.numel() == 0:
                losses[task.name] = outputs[task.name].sum() * 0.0
                continue
            u = self.domain_vectors(x.index_select(0, rows), k)  # (n, D)
            pos = batch["item"].index_select(0, rows)  # (n,) or (n, P) padded with 0
            lo, hi = self.item_range(k)
            if pos.dim() == 2:  # one row per user: multinomial likelihood of all positives
                ids = torch.arange(lo, hi, device=pos.device)
                logits = u @ self.item_vectors(ids).T + self.item_bias(ids).T  # (n, I_d)
                logp = torch.log_softmax(logits, dim=-1)
                valid = pos > 0  # (n, P)
                if self.config.predict_hidden_only and visible is not None:
                    shown = torch.where(visible, hist, 0).index_select(0, rows)  # (n, L)
                    seen = (pos.unsqueeze(2) == shown.unsqueeze(1)).any(2)  # (n, P)
                    valid = valid & ~seen
                picked = logp.gather(1, torch.where(valid, pos - lo, 0))  # (n, P)
                n_pos = valid.sum().clamp_min(1)
                losses[task.name] = -(picked * valid).sum() / n_pos
                continue
            n_neg = self.config.n_negatives
            if n_neg <= 0 or n_neg >= hi - lo:  # full softmax over the domain's items
                ids = torch.arange(lo, hi, device=pos.device)
                logits = u @ self.item_vectors(ids).T + self.item_bias(ids).T  # (n, I_d)
                losses[task.name] = F.cross_entropy(logits, pos - lo)
                continue
            neg = torch.randint(lo, hi, (n_neg,), device=pos.device)
            own = torch.arange(len(pos), device=pos.device)
            if self.config.in_batch_negatives:
                cand = torch.cat([pos, neg])  # (n + N,)
                hit = pos.unsqueeze(1) == cand.unsqueeze(0)  # (n, n + N)
                hit[own, own] = False
                target = own
            else:
                cand = torch.cat([pos.new_zeros(1), neg])  # slot 0: each row's own positive
                hit = pos.unsqueeze(1) == cand.unsqueeze(0)  # (n, 1 + N)
                hit[:, 0] = False
                target = torch.zeros_like(own)
            logits = u @ self.item_vectors(cand).T + self.item_bias(cand).T  # (n, C)
            if not self.config.in_batch_negatives:
                own_logit = (u * self.item_vectors(pos)).sum(-1) + self.item_bias(pos).squeeze(-1)
                logits = torch.cat([own_logit.unsqueeze(1), logits[:, 1:]], dim=1)
            logits = logits.masked_fill(hit, float("-inf"))
            losses[task.name] = F.cross_entropy(logits, target)
        if penalty is not None:  # split over the domains present, so the sum is one penalty
            present = [n for n in losses if losses[n].requires_grad]
            for name in present:
                losses[name] = losses[name] + penalty / len(present)
        return losses

    def _l2(self, batch: Batch) -> Tensor:
        """``l2 *`` mean squared norm of the embedding rows the batch touches."""
        hist = batch["history"]
        rows = [
            self.user_embedding(batch["user"]).square().sum(-1).mean(),
            self.item_vectors(batch["item"]).square().sum(-1).reshape(len(hist), -1).sum(1).mean(),
            self.item_vectors(hist).square().sum(-1).sum(1).mean(),
        ]
        return self.config.l2 * torch.stack(rows).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings and shared experts feed every domain's loss."""
        params = [*self.user_embedding.parameters(), *self.item_embedding.parameters()]
        params.extend(self.item_bias.parameters())
        if self.uses_experts and self.shared_experts is not None:
            params.extend(self.shared_experts.parameters())
        return params

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer of the shared experts, else the user-id table."""
        if self.uses_experts and self.shared_experts is not None:
            return self.shared_experts.last_layer()
        return list(self.user_embedding.parameters())


# --------------------------------------------------------------------------- freezing

#: Part names :func:`freeze` accepts (see :meth:`CrossDomainModel.parts`).
PARTS = ("user_embeddings", "item_embeddings", "embeddings", "item_bias", "experts", "towers")


def _modules_of(model: nn.Module, parts: Sequence[str]) -> list[nn.Module]:
    if not hasattr(model, "parts"):
        raise TypeError(f"{type(model).__name__} does not name its parts (no .parts())")
    named = model.parts()
    unknown = sorted(set(parts) - set(named))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; known: {sorted(named)}")
    return [m for p in parts for m in named[p]]


def freeze(model: nn.Module, parts: Sequence[str]) -> list[nn.Parameter]:
    """Stop training the named parts: ``requires_grad = False`` on their parameters.

    :func:`~shoprec.train.loop.fit` hands only parameters with ``requires_grad`` to its
    optimizer, so frozen weights stay bit-identical through a fine-tuning ``fit`` (weight
    decay included).

    Args:
        model: a model with ``parts()`` (e.g. :class:`CrossDomainModel`).
        parts: names from :data:`PARTS`, e.g. ``("user_embeddings",)``.

    Returns:
        The parameters frozen.

    Example:
        >>> index = DomainIndex(("s", "t"), ("a",), (("x",), ("y",)))
        >>> feats, tasks = index.specs(4)
        >>> model = CrossDomainModel(feats, tasks, CrossDomainConfig(domain_sizes=(1, 1)))
        >>> len(freeze(model, ["embeddings"]))
        3
    """
    params = [p for m in _modules_of(model, parts) for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return params


@torch.no_grad()
def load_embeddings(
    model: CrossDomainModel,
    users: Tensor | np.ndarray | None = None,
    items: Tensor | np.ndarray | None = None,
) -> None:
    """Load pretrained user and/or item vectors into the embedding tables (row 0, the
    padding / unknown id, stays zero), e.g. factors of a matrix factorisation of the source,
    or of source and target together.

    Args:
        model: the model; its dim must equal the vectors' width.
        users: ``(n_users + 1, D)`` rows by user id, or None to keep the table.
        items: ``(n_items + 1, D)`` rows by item id, or None.
    """
    for table, values in ((model.user_embedding, users), (model.item_embedding, items)):
        if values is None:
            continue
        v = torch.as_tensor(np.asarray(values), dtype=table.weight.dtype)
        if v.shape != table.weight.shape:
            raise ValueError(f"expected {tuple(table.weight.shape)} vectors, got {tuple(v.shape)}")
        table.weight.copy_(v)
        table.weight[0].zero_()


@torch.no_grad()
def tie_items(model: CrossDomainModel, rows: np.ndarray) -> None:
    """Make items share embedding rows: item id ``j`` reads row ``rows[j]`` (e.g.
    :meth:`DomainIndex.shared_item_rows`, the same product in every market); biases stay per
    id. Call before training."""
    r = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    if r.shape != model.item_rows.shape or int(r.min()) < 0 or int(r.max()) >= len(r):
        raise ValueError(f"rows must be {tuple(model.item_rows.shape)} ids in range")
    model.item_rows.copy_(r)


def unfreeze(model: nn.Module, parts: Sequence[str] | None = None) -> None:
    """Train the named parts again (all parameters if ``parts`` is None)."""
    mods = [model] if parts is None else _modules_of(model, parts)
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(True)


def frozen_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that do not require grad."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def joint_weighting(source: str, target: str, lam: float) -> FixedWeights:
    """``J = J_S + lam * J_T`` as the loop's loss weighting (other domains weigh 1).

    Args:
        source: source domain (task) name.
        target: target domain (task) name.
        lam: weight of the target loss.
    """
    return FixedWeights({source: 1.0, target: float(lam)})


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def user_vectors(
    model: CrossDomainModel,
    users: np.ndarray,
    history: np.ndarray,
    domain: int,
    batch_size: int = 4096,
) -> Tensor:
    """User vectors ``(U, D)`` of one domain for user ids ``users`` (0 = unknown user) and
    their history rows ``(U, L)``."""
    model.eval()
    out = []
    for lo in range(0, len(users), batch_size):
        batch = {
            "user": torch.as_tensor(users[lo : lo + batch_size], dtype=torch.long),
            "history": torch.as_tensor(history[lo : lo + batch_size], dtype=torch.long),
        }
        out.append(model.user_vectors(batch, domain))
    return torch.cat(out) if out else torch.zeros(0, model.dim)


@torch.no_grad()
def score_items(model: CrossDomainModel, vectors: Tensor, domain: int) -> Tensor:
    """Scores ``(U, I_d)`` of every item of a domain (column ``j`` = item id
    ``start + j``) for user vectors ``(U, D)``."""
    lo, hi = model.item_range(domain)
    ids = torch.arange(lo, hi)
    return vectors @ model.item_vectors(ids).T + model.item_bias(ids).T


def ranking_evaluator(
    model: CrossDomainModel,
    users: np.ndarray,
    history: np.ndarray,
    targets: np.ndarray,
    exclude: metrics.CSR,
    domain: int,
    k: int = 10,
) -> Callable[[nn.Module], dict[str, float]]:
    """A validation hook for ``fit``: full-ranking ``ndcg`` / ``hr`` at ``k`` of one domain.

    Args:
        model: the model being trained.
        users: ``(U,)`` user ids of the validation users.
        history: ``(U, L)`` their history rows.
        targets: ``(U,)`` held-out item per user, as a column of the domain (id - start).
        exclude: CSR of columns to leave out of each user's ranking (training items).
        domain: domain index.
        k: cut-off.
    """

    def evaluate(_: nn.Module) -> dict[str, float]:
        scores = score_items(model, user_vectors(model, users, history, domain), domain)
        ranks = metrics.rank_of_targets(scores, targets, exclude)
        return {"ndcg": metrics.ndcg_at_k(ranks, k), "hr": metrics.hit_rate_at_k(ranks, k)}

    return evaluate


# --------------------------------------------------------------------------- EMCDR


@dataclass(frozen=True)
class EMCDRConfig:
    """The EMCDR mapping MLP and its training (Man et al., IJCAI 2017)."""

    hidden: tuple[int, ...] = (256,)  # hidden widths of the mapping MLP
    epochs: int = 200  # passes over the training users, in minibatches
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    valid_frac: float = 0.1  # share of users held out to pick the best epoch
    patience: int = 10
    seed: int = 0


class EMCDRMapping(nn.Module):
    """``f(source user vector) -> target user vector``: an MLP plus a linear shortcut."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256,)) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, activation="tanh")
        self.out = nn.Linear(self.mlp.out_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.out(self.mlp(x)) + self.linear(x)


def fit_mapping(
    source: Tensor, target: Tensor, config: EMCDRConfig | None = None
) -> tuple[EMCDRMapping, dict[str, Any]]:
    """Fit an :class:`EMCDRMapping` from source to target vectors of the same users (MSE),
    keeping the epoch with the lowest error on a held-out share of the users.

    Args:
        source: ``(N, Ds)`` user vectors in the source domain.
        target: ``(N, Dt)`` vectors of the same users in the target domain.
        config: training settings.

    Returns:
        The mapping (eval mode) and facts: ``best_epoch``, ``valid_mse``, ``train_mse``.
    """
    c = config or EMCDRConfig()
    gen = torch.Generator().manual_seed(c.seed)
    torch.manual_seed(c.seed)
    source, target = source.detach().float(), target.detach().float()
    n = len(source)
    order = torch.randperm(n, generator=gen)
    n_valid = int(n * c.valid_frac) if n >= 20 else 0
    valid_idx, train_idx = order[:n_valid], order[n_valid:]
    mapping = EMCDRMapping(source.shape[1], target.shape[1], c.hidden)
    opt = torch.optim.Adam(mapping.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def mse(idx: Tensor) -> float:
        with torch.no_grad():
            return float(F.mse_loss(mapping(source[idx]), target[idx]))

    best, best_epoch, bad = float("inf"), 0, 0
    best_state = {k: v.clone() for k, v in mapping.state_dict().items()}
    for epoch in range(1, c.epochs + 1):
        mapping.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for lo in range(0, len(perm), c.batch_size):
            idx = perm[lo : lo + c.batch_size]
            opt.zero_grad()
            F.mse_loss(mapping(source[idx]), target[idx]).backward()
            opt.step()
        score = mse(valid_idx) if n_valid else mse(train_idx)
        if score < best - 1e-7:
            best, best_epoch, bad = score, epoch, 0
            best_state = {k: v.clone() for k, v in mapping.state_dict().items()}
        else:
            bad += 1
            if bad >= c.patience:
                break
    mapping.load_state_dict(best_state)
    mapping.eval()
    return mapping, {"best_epoch": best_epoch, "valid_mse": best, "train_mse": mse(train_idx)}
