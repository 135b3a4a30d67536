"""Config-driven cross-domain transfer: ``shoprec transfer CONFIG.yaml``.

One YAML names the pairs (a built-in dataset, the simulated shop, or a CSV / Parquet file
with ``user, item, domain`` columns), the source and target domains, and one method:

* ``target_only``: :class:`~shoprec.transfer.cross_domain.CrossDomainModel` on the target's
  pairs alone (the baseline transfer must beat);
* ``finetune``: pretrain on the source, freeze the listed parts (``freeze:``), fine-tune on the
  target with histories of both domains;
* ``joint``: ``J = J_S + lambda * J_T`` over both domains' pairs (``lambda:``);
* ``experts``: the same with shared and per-domain experts (``model.n_shared_experts``,
  ``model.n_domain_experts``; a PLE / STAR-style multi-domain model);
* ``neighbours``: :class:`~shoprec.transfer.neighbours.ItemNeighbours` over both domains
  (nothing to train: item similarities from shared users).

Hold-outs: one random target item of each user with at least three target items is the test
pair, one more of each user with at least two left is the validation pair (early stopping);
the rest trains. The test pairs are scored once, at the end, by full ranking over all target
items less the user's other target items, beside target popularity. Example::

    name: sport_from_cloth
    data: {dataset: amazon_cross_domain, source: cloth, target: sport, seed: 0}
    method: joint
    lambda: 1.0
    model: {dim: 64, history_dropout: 0.5, use_user_id: false}
    train: {epochs: 8, batch_size: 256, lr: 0.01, patience: 2}
    output: runs/sport_from_cloth

The artifact folder holds ``transfer.yaml`` (the config), ``index.json`` (user and item ids),
``metrics.json``, ``history.parquet`` (every known pair, held-out ones included) and the
model (``model.json`` + ``weights.safetensors``, or ``neighbours/``). :class:`TransferArtifact`
loads it and recommends target items for a user, including one with no target history (from
their source history).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from safetensors.torch import load_file, save_file

from shoprec.data.errors import DataError
from shoprec.evaluate import metrics
from shoprec.models import config_from_dict
from shoprec.train.loop import TrainConfig, fit
from shoprec.transfer.cross_domain import (
    CrossDomainConfig,
    CrossDomainModel,
    DomainIndex,
    freeze,
    history_matrix,
    joint_weighting,
    ranking_evaluator,
    score_items,
    user_rows,
    user_vectors,
)
from shoprec.transfer.neighbours import ItemNeighbours, NeighbourConfig

log = logging.getLogger(__name__)

__all__ = ["METHODS", "TransferArtifact", "TransferConfig", "load_pairs", "run_transfer"]

METHODS = ("target_only", "finetune", "joint", "experts", "neighbours")
K = 10


@dataclass(frozen=True)
class TransferConfig:
    """A parsed transfer config (see the module docstring for the YAML shape)."""

    name: str
    data: dict[str, Any]
    method: str = "joint"
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    lam: float = 1.0
    freeze: tuple[str, ...] = ()
    neighbours: dict[str, Any] = field(default_factory=dict)
    max_history: int = 50
    output: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {list(METHODS)}")
        for key in ("source", "target"):
            if key not in self.data:
                raise ValueError(f"data.{key} is missing: name the {key} domain")
        if self.data["source"] == self.data["target"]:
            raise ValueError("data.source and data.target must differ")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TransferConfig:
        """Read a YAML config; ``lambda`` is spelled ``lam`` in Python."""
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        raw = dict(raw)
        if "lambda" in raw:
            raw["lam"] = raw.pop("lambda")
        raw.setdefault("name", Path(path).stem)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known - {"lambda"})
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        raw["freeze"] = tuple(raw.get("freeze") or ())
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["freeze"] = list(self.freeze)
        return d


def load_pairs(data: dict[str, Any]) -> pl.DataFrame:
    """The ``user, item, domain`` pairs a config's ``data:`` names (strings, deduplicated).

    ``dataset`` is ``amazon_cross_domain`` (train files of both domains), ``simulated`` (the
    simulator with ``simulate:`` options; its markets are the domains) or a CSV / Parquet
    file with ``user``, ``item`` and ``domain`` columns.
    """
    name = str(data.get("dataset", "simulated"))
    if name == "simulated":
        from shoprec.data.simulate import simulate_shop

        opts = {"n_markets": 2, **data.get("simulate", {})}
        frame = simulate_shop(**opts).dataset.interactions.df
    elif name == "amazon_cross_domain":
        from shoprec.data.datasets import amazon_cross_domain

        frame = amazon_cross_domain.load().interactions.df
    else:
        path = Path(name)
        if not path.is_file():
            raise DataError(
                f"unknown dataset '{name}': use amazon_cross_domain, simulated, or a CSV / "
                "Parquet file with user, item and domain columns"
            )
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    missing = [c for c in ("user", "item", "domain") if c not in frame.columns]
    if missing:
        raise DataError(f"'{name}' lacks the column(s) {missing}; it has {frame.columns}")
    return frame.select(pl.col(c).cast(pl.String) for c in ("user", "item", "domain")).unique(
        maintain_order=True
    )


def _hold_one(u: np.ndarray, d: np.ndarray, domain: int, least: int, seed: int) -> np.ndarray:
    """Mask of one random pair of domain ``domain`` per user with >= ``least`` pairs there."""
    idx = np.flatnonzero(d == domain)
    idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    _, first, count = np.unique(u[idx], return_index=True, return_counts=True)
    mask = np.zeros(len(u), dtype=bool)
    mask[idx[first[count >= least]]] = True
    return mask


@dataclass
class _Split:
    index: DomainIndex
    u: np.ndarray
    i: np.ndarray
    d: np.ndarray
    train: np.ndarray  # masks over the pairs
    valid: np.ndarray
    test: np.ndarray


def _split(frame: pl.DataFrame, source: str, target: str, seed: int) -> _Split:
    found = set(frame["domain"].unique().to_list())
    for name in (source, target):
        if name not in found:
            raise DataError(f"domain '{name}' is not in the data; found {sorted(found)}")
    frame = frame.filter(pl.col("domain").is_in([source, target]))
    index = DomainIndex.fit(frame, domains=[source, target])
    u, i, d = index.encode(frame)
    test = _hold_one(u, d, 1, 3, seed)
    valid = _hold_one(np.where(test, -1, u), np.where(test, -1, d), 1, 2, seed + 1)
    if not test.any():
        raise DataError(f"no user has three or more '{target}' items: nothing to test on")
    return _Split(index, u, i, d, ~(test | valid), valid, test)


def _exclude(s: _Split, held: np.ndarray, domain: int = 1) -> metrics.CSR:
    """For each held-out pair's user, their other items of ``domain`` (as its columns)."""
    lo = s.index.starts[domain] + 1
    keep = (s.d == domain) & ~held
    rows = metrics.CSR.from_pairs(s.u[keep], s.i[keep] - lo, s.index.n_users + 1)
    return metrics.CSR.from_lists(
        [rows.indices[rows.indptr[x] : rows.indptr[x + 1]] for x in s.u[held]]
    )


def _ranking(scores: torch.Tensor, s: _Split, held: np.ndarray) -> dict[str, float]:
    lo = s.index.starts[1] + 1
    ranks = metrics.rank_of_targets(scores, s.i[held] - lo, _exclude(s, held))
    return {
        "hr@10": metrics.hit_rate_at_k(ranks, K),
        "ndcg@10": metrics.ndcg_at_k(ranks, K),
        "users": float(held.sum()),
    }


def run_transfer(cfg: TransferConfig, output: str | Path | None = None) -> Path:
    """Train the config's method, score the target test pairs, write the artifact folder.

    Returns:
        The artifact folder (``metrics.json`` has the test metrics of the method and of
        target popularity).
    """
    out = Path(output or cfg.output or f"runs/{cfg.name}")
    seed = int(cfg.data.get("seed", 0))
    s = _split(load_pairs(cfg.data), cfg.data["source"], cfg.data["target"], seed)
    n_users, n_items = s.index.n_users, s.index.n_items
    log.info(
        "%d users, %s items; %d train, %d validation, %d test pairs",
        n_users, s.index.domain_sizes, s.train.sum(), s.valid.sum(), s.test.sum(),
    )  # fmt: skip
    tr = s.train
    lo, size = s.index.starts[1] + 1, s.index.domain_sizes[1]
    facts: dict[str, Any] = {"method": cfg.method}
    tick = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.method == "neighbours":
        nb = ItemNeighbours(NeighbourConfig(**cfg.neighbours))
        item_domain = np.repeat([0, 0, 1], [1, *s.index.domain_sizes])
        nb.fit(s.u[tr], s.i[tr], n_items + 1, item_domain)
        hist = ItemNeighbours.histories(s.u[tr], s.i[tr], n_users + 1, n_items + 1)
        scores = nb.score(hist[s.u[s.test]], lo, lo + size)
        nb.save(out / "neighbours")
    else:
        model, hist = _train_model(cfg, s, facts, seed)
        with torch.no_grad():
            vecs = user_vectors(model, s.u[s.test], hist[s.u[s.test]], 1)
            scores = score_items(model, vecs, 1)
        model_cfg = {"dim": _dim(cfg), "config": dataclasses.asdict(model.config)}
        (out / "model.json").write_text(json.dumps(model_cfg, indent=2))
        save_file(model.state_dict(), str(out / "weights.safetensors"))
    facts["train_s"] = round(time.perf_counter() - tick, 2)
    counts = np.bincount(s.i[tr & (s.d == 1)] - lo, minlength=size).astype(np.float32)
    pop = torch.from_numpy(counts).expand(int(s.test.sum()), -1)
    result = {
        "test": {cfg.method: _ranking(scores, s, s.test), "popularity": _ranking(pop, s, s.test)},
        "facts": facts,
        "domains": {"source": cfg.data["source"], "target": cfg.data["target"]},
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "transfer.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    index = {"domains": s.index.domains, "users": s.index.users, "items": s.index.items}
    (out / "index.json").write_text(json.dumps(index))
    # Every known pair, held-out ones included: what recommend() reads and leaves out.
    pl.DataFrame({"user": s.u, "item": s.i}).write_parquet(out / "history.parquet")
    return out


def _dim(cfg: TransferConfig) -> int:
    return int(cfg.model.get("dim", 64))


def _build(cfg: TransferConfig, index: DomainIndex, seed: int) -> CrossDomainModel:
    fields = {k: v for k, v in cfg.model.items() if k != "dim"}
    if cfg.method == "experts":
        fields.setdefault("n_shared_experts", 2)
        fields.setdefault("n_domain_experts", 1)
    config = config_from_dict(
        CrossDomainConfig, {**fields, "domain_sizes": list(index.domain_sizes)}
    )
    features, tasks = index.specs(_dim(cfg))
    torch.manual_seed(seed)
    return CrossDomainModel(features, tasks, config)


def _train_model(
    cfg: TransferConfig, s: _Split, facts: dict[str, Any], seed: int
) -> tuple[CrossDomainModel, np.ndarray]:
    n_users, tr = s.index.n_users, s.train
    train_cfg = dataclasses.replace(config_from_dict(TrainConfig, cfg.train), monitor="ndcg")
    model = _build(cfg, s.index, seed)

    def hist_of(domains: tuple[int, ...], mask: np.ndarray = tr) -> np.ndarray:
        m = mask & np.isin(s.d, domains)
        return history_matrix(s.u[m], s.i[m], n_users, cfg.max_history, seed=seed)

    def evaluator(domain: int, hist: np.ndarray, held: np.ndarray) -> Any:
        users, lo = s.u[held], s.index.starts[domain] + 1
        exclude = _exclude(s, held, domain)
        return ranking_evaluator(model, users, hist[users], s.i[held] - lo, exclude, domain)

    def rows_of(domains: tuple[int, ...], hist: np.ndarray, mask: np.ndarray = tr) -> Any:
        m = mask & np.isin(s.d, domains)
        return user_rows(s.u[m], s.i[m], s.d[m], hist)

    if cfg.method == "finetune":
        # Pretraining stops early on a source hold-out, kept out of its rows.
        src_valid = _hold_one(s.u, np.where(tr, s.d, -1), 0, 2, seed + 2)
        pre = tr & ~src_valid
        src_hist = hist_of((0,), pre)
        r = fit(model, rows_of((0,), src_hist, pre), config=train_cfg,
                evaluator=evaluator(0, src_hist, src_valid))  # fmt: skip
        facts["pretrain_best_epoch"] = r.best_epoch
        if cfg.freeze:
            freeze(model, parts=cfg.freeze)
            facts["frozen"] = list(cfg.freeze)
    domains = (1,) if cfg.method == "target_only" else (0, 1)
    hist = hist_of(domains)
    rows = rows_of((1,) if cfg.method == "finetune" else domains, hist)
    weighting = None
    if cfg.method in ("joint", "experts"):
        weighting = joint_weighting(cfg.data["source"], cfg.data["target"], cfg.lam)
    r = fit(model, rows, config=train_cfg, evaluator=evaluator(1, hist, s.valid),
            weighting=weighting)  # fmt: skip
    facts.update(best_epoch=r.best_epoch, valid_ndcg=round(r.best_score, 4))
    return model, hist


@dataclass
class TransferArtifact:
    """A folder written by :func:`run_transfer`, loaded to recommend target items."""

    path: Path
    config: TransferConfig
    index: DomainIndex
    history: pl.DataFrame  # every known (user id, item id) pair of both domains
    model: CrossDomainModel | None = None
    neighbours: ItemNeighbours | None = None

    @staticmethod
    def is_artifact(path: str | Path) -> bool:
        """Whether a folder holds a transfer artifact (rather than a multi-task one)."""
        return (Path(path) / "transfer.yaml").is_file()

    @classmethod
    def load(cls, path: str | Path) -> TransferArtifact:
        p = Path(path)
        if not cls.is_artifact(p):
            raise DataError(f"{p} is not a transfer artifact (no transfer.yaml)")
        raw = yaml.safe_load((p / "transfer.yaml").read_text())
        raw["freeze"] = tuple(raw.get("freeze") or ())
        cfg = TransferConfig(**raw)
        ix = json.loads((p / "index.json").read_text())
        index = DomainIndex(
            domains=tuple(ix["domains"]),
            users=tuple(ix["users"]),
            items=tuple(tuple(x) for x in ix["items"]),
        )
        art = cls(p, cfg, index, pl.read_parquet(p / "history.parquet"))
        if cfg.method == "neighbours":
            art.neighbours = ItemNeighbours.load(p / "neighbours")
        else:
            meta = json.loads((p / "model.json").read_text())
            conf = dict(meta["config"])
            conf = config_from_dict(CrossDomainConfig, conf)
            features, tasks = index.specs(int(meta["dim"]))
            model = CrossDomainModel(features, tasks, conf)
            model.load_state_dict(load_file(str(p / "weights.safetensors")))
            model.eval()
            art.model = model
        return art

    def recommend(self, user: str, k: int = 10) -> list[dict[str, Any]]:
        """Top-``k`` target items for ``user`` from their history in both domains, less the
        target items they already have; a user unknown to the model gets target popularity.

        Returns:
            ``[{"item", "score", "because"}]``, best first; ``because`` names the user's items
            that point to it (neighbours method) or is empty.
        """
        ix = self.index
        lo, size = ix.starts[1] + 1, ix.domain_sizes[1]
        uid = ix.users.index(user) + 1 if user in ix.users else 0
        h = self.history
        mine = h.filter(pl.col("user") == uid)["item"].to_numpy() if uid else np.zeros(0, int)
        tgt = h.filter((pl.col("item") >= lo) & (pl.col("item") < lo + size))["item"].to_numpy()
        pop = np.bincount(tgt - lo, minlength=size).astype(np.float32)
        if len(mine) == 0:
            scores = torch.from_numpy(pop)
        elif self.neighbours is not None:
            hist = ItemNeighbours.histories(np.zeros(len(mine), int), mine, 1, ix.n_items + 1)
            scores = self.neighbours.score(hist, lo, lo + size)[0]
        else:
            assert self.model is not None
            row = history_matrix(np.full(len(mine), 1), mine, 1, self.config.max_history, seed=0)[
                1:
            ]
            with torch.no_grad():
                vec = user_vectors(self.model, np.array([uid]), row, 1)
                scores = score_items(self.model, vec, 1)[0]
        scores = scores.clone()
        owned = mine[(mine >= lo) & (mine < lo + size)] - lo
        scores[torch.as_tensor(owned, dtype=torch.long)] = -torch.inf
        top = torch.topk(scores, min(k, size - len(set(owned.tolist())))).indices.tolist()
        out = []
        for j in top:
            because: list[str] = []
            if self.neighbours is not None and len(mine):
                sim = self.neighbours.similarity
                assert sim is not None
                col = sim[mine, lo + j].toarray().ravel()
                because = [self._name(int(mine[x])) for x in np.argsort(-col)[:3] if col[x] > 0]
            out.append({"item": ix.items[1][j], "score": float(scores[j]), "because": because})
        return out

    def _name(self, item_id: int) -> str:
        ix = self.index
        for k, start in enumerate(ix.starts):
            if start < item_id <= start + ix.domain_sizes[k]:
                return f"{ix.items[k][item_id - start - 1]} ({ix.domains[k]})"
        return str(item_id)
