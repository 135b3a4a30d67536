"""Cross-domain transfer: one user base, several domains (markets, categories), few events in
some of them. Every method here is a few explicit steps over the same model and the one fit
loop (DESIGN.md convention 7: no phase strings, no model as a state machine).

The model is :class:`~shoprec.models.cross_domain.CrossDomainModel`: per domain, a dot product
of a user vector (from a shared user-id embedding and the mean embedding of the user's history
in every domain, through per-domain towers or gated shared and per-domain experts) with the
item's embedding. This module holds what the transfer methods do around it: the ids
(:class:`DomainIndex`), the training rows, freezing parts, loading pretrained embeddings,
scoring, and the EMCDR mapping's training.

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
   :class:`~shoprec.models.emcdr.EMCDRMapping` from a user's source vector to their target
   vector on users active in both; a user with no target history gets ``mapping.map(source
   vector)`` (:mod:`shoprec.transfer.cold_start`).

Example:
    >>> import polars as pl
    >>> frame = pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
    ...                       "domain": ["s", "t", "s"]})
    >>> index = DomainIndex.fit(frame, domains=["s", "t"])
    >>> index.domain_sizes, index.n_users
    ((1, 1), 2)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.data.batches import TensorData
from shoprec.evaluate import metrics
from shoprec.models.cross_domain import CrossDomainModel
from shoprec.models.emcdr import EMCDRMapping
from shoprec.models.features import CategoricalFeature, FeatureSpec, SequenceFeature, Task
from shoprec.train.loop import TrainConfig, fit
from shoprec.train.weighting import FixedWeights

__all__ = [
    "PARTS",
    "DomainIndex",
    "EMCDRConfig",
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

    def save(self, path: Path) -> None:
        """Write the ids as JSON (``{"domains", "users", "items"}``) to ``path``."""
        ids = {
            "domains": list(self.domains),
            "users": list(self.users),
            "items": [list(x) for x in self.items],
        }
        Path(path).write_text(json.dumps(ids))

    @classmethod
    def load(cls, path: Path) -> DomainIndex:
        """The index :meth:`save` wrote to ``path``."""
        ids = json.loads(Path(path).read_text())
        return cls(
            domains=tuple(ids["domains"]),
            users=tuple(ids["users"]),
            items=tuple(tuple(x) for x in ids["items"]),
        )

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
        """Feature and task specs of a :class:`~shoprec.models.cross_domain.CrossDomainModel`
        over this index."""
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


# --------------------------------------------------------------------------- freezing

#: Part names :func:`freeze` accepts (see :meth:`~shoprec.models.cross_domain.
#: CrossDomainModel.parts`).
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
        model: a model with ``parts()`` (e.g. a
            :class:`~shoprec.models.cross_domain.CrossDomainModel`).
        parts: names from :data:`PARTS`, e.g. ``("user_embeddings",)``.

    Returns:
        The parameters frozen.

    Example:
        >>> from shoprec.models.cross_domain import CrossDomainConfig
        >>> index = DomainIndex(("s", "t"), ("a",), (("x",), ("y",)))
        >>> feats, tasks = index.specs(4)
        >>> model = CrossDomainModel(feats, tasks, CrossDomainConfig(domain_sizes=(1, 1)))
        >>> len(freeze(model, ["embeddings"]))  # the user and the item table
        2
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
    exclude: metrics.Sparse,
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


def fit_mapping(
    source: Tensor, target: Tensor, config: EMCDRConfig | None = None
) -> tuple[EMCDRMapping, dict[str, Any]]:
    """Fit an :class:`~shoprec.models.emcdr.EMCDRMapping` from source to target vectors of the
    same users (MSE) with :func:`~shoprec.train.loop.fit`, keeping the epoch with the lowest
    error on a held-out share of the users (on the training users when none is held out).

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

    def mse(idx: Tensor) -> float:
        with torch.no_grad():
            return float(F.mse_loss(mapping.map(source[idx]), target[idx]))

    held_out = valid_idx if n_valid else train_idx
    rows = TensorData({"source": source[train_idx], "target": target[train_idx]})
    train_config = TrainConfig(
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        weight_decay=c.weight_decay,
        patience=c.patience,
        monitor="neg_mse",
        min_delta=1e-7,
        seed=c.seed,
        progress=False,
    )
    result = fit(
        mapping, rows, config=train_config, evaluator=lambda _: {"neg_mse": -mse(held_out)}
    )
    facts = {"best_epoch": result.best_epoch, "valid_mse": -result.best_score}
    return mapping, {**facts, "train_mse": mse(train_idx)}
