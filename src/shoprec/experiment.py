"""Config-driven training: ``shoprec train CONFIG.yaml``, ``evaluate`` and ``recommend``.

A YAML config names the data, the split, the behaviors that become tasks, the model and how
to train it. :func:`train_from_config` writes an artifact folder that :class:`Artifact`
loads again::

    name: sim_mmoe
    data:
      dataset: simulated          # a built-in name, a folder, or a YAML data config
      simulate: {n_events: 200000, seed: 0}
      split: {kind: time, test_days: 14, valid_days: 7}
      behaviors: [view, cart, buy]
      n_negatives: 4
    model: {name: mmoe, embedding_dim: 16, config: {n_experts: 4}}
    train: {epochs: 8, batch_size: 2048, lr: 0.001, patience: 2, seed: 0}
    weighting: {name: fixed}
    output: runs/sim_mmoe

The artifact holds ``config.json`` + ``weights.safetensors`` (the model), ``encoder.json``,
``items.parquet`` and ``users.parquet`` (what scoring new pairs needs), ``seen.parquet``
(each user's training items, to exclude from recommendations), ``experiment.yaml`` (the
config it came from) and ``metrics.json`` (validation scores of the chosen epoch and test
scores, read once after selection).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from shoprec.data.encode import OOV
from shoprec.data.errors import DataError
from shoprec.data.schema import Dataset
from shoprec.data.split import Split, check_no_leakage, leave_last_out, time_split
from shoprec.evaluate import metrics
from shoprec.models import build_model, load_model, save_model
from shoprec.models.base import MultiTaskModel
from shoprec.pipeline import FeatureBuilder, RankingData, prepare_ranking, score_pairs
from shoprec.train.loop import TrainConfig, fit, predict
from shoprec.train.weighting import make_weighting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentConfig:
    """A parsed training config (see the module docstring for the YAML shape)."""

    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    weighting: dict[str, Any] = field(default_factory=lambda: {"name": "fixed"})
    output: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise DataError(f"cannot read the config: {e}", file=path) from e
        if not isinstance(raw, dict):
            raise DataError("the config must be a YAML mapping", file=path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DataError(
                f"unknown top-level keys {unknown}; allowed: {sorted(known)}", file=path
            )
        for key in ("data", "model"):
            if not isinstance(raw.get(key), dict):
                raise DataError(f"the config needs a '{key}:' mapping", file=path)
        raw.setdefault("name", path.stem)
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_dataset(data: dict[str, Any]) -> Dataset:
    """The dataset a config's ``data:`` section names."""
    from shoprec.data import datasets
    from shoprec.data.datasets.custom import load_config, load_folder

    name = str(data.get("dataset", "simulated"))
    if name == "simulated":
        from shoprec.data.simulate import simulate_shop

        return simulate_shop(**data.get("simulate", {})).dataset
    if name in datasets.names():
        ds = datasets.load(name)
    elif Path(name).is_dir():
        ds = load_folder(name)
    elif Path(name).suffix in {".yaml", ".yml"}:
        ds = load_config(name)
    else:
        raise DataError(f"unknown dataset '{name}': not built in, not a folder, not a YAML")
    if not isinstance(ds, Dataset):
        raise DataError(f"'{name}' is tabular; ranking configs need interactions")
    return ds


def make_split(ds: Dataset, spec: dict[str, Any]) -> Split:
    """The split a config's ``data.split`` names: ``time`` or ``leave_last_out``."""
    spec = dict(spec or {"kind": "time", "test_days": 14, "valid_days": 7})
    kind = spec.pop("kind", "time")
    if kind == "time":
        split = time_split(ds.interactions, **spec)
    elif kind == "leave_last_out":
        split = leave_last_out(ds.interactions, **spec)
    else:
        raise DataError(f"unknown split kind '{kind}'; use time or leave_last_out")
    check_no_leakage(split)
    return split


def _binary_scores(
    model: MultiTaskModel, data: RankingData, preds: dict[str, Any], rows: np.ndarray | None
) -> dict[str, float]:
    users = data.test.columns["user"].numpy()
    rows = np.ones(len(users), dtype=bool) if rows is None else rows
    out: dict[str, float] = {}
    for task in model.tasks:
        y = data.test.columns[task.label or task.name].numpy()[rows]
        p = preds[task.name].numpy()[rows]
        if task.kind == "binary" and len(y) and 0 < y.mean() < 1:
            out[f"{task.name}/auc"] = metrics.auc(y, p)
            out[f"{task.name}/gauc"] = metrics.gauc(y, p, users[rows])
            out[f"{task.name}/logloss"] = metrics.logloss(y, p)
    return out


def task_metrics(model: MultiTaskModel, data: RankingData) -> dict[str, float]:
    """Per-task test metrics: AUC and log-loss for binary tasks, GAUC per user."""
    return _binary_scores(model, data, predict(model, data.test), None)


def slice_metrics(model: MultiTaskModel, data: RankingData) -> dict[str, dict[str, float]]:
    """The same per-task test metrics on slices of the test samples.

    Slices: warm / cold users and items (cold: no positive label of any task in the training
    samples, e.g. an item launched during the test period; sampled negatives do not warm an
    item up) and one per domain. Each slice also reports its number of samples as ``rows``; a task
    whose labels are all equal in a slice has no AUC there and is left out.

    Returns:
        ``{slice name: {"rows": n, "<task>/auc": ..., ...}}``, e.g. ``"cold items"`` or
        ``"domain market_1"``.
    """
    preds = predict(model, data.test)
    cols = data.test.columns
    train = data.train.columns
    labels = [t.label or t.name for t in model.tasks if (t.label or t.name) in train]
    positive = np.zeros(len(data.train), dtype=bool)
    for label in labels:
        positive |= train[label].numpy() > 0
    masks: dict[str, np.ndarray] = {}
    for col, what in (("user", "users"), ("item", "items")):
        if col in cols and col in train:
            warm_ids = np.unique(train[col].numpy()[positive])
            ids = cols[col].numpy()
            cold = (ids == OOV) | ~np.isin(ids, warm_ids)
            masks[f"warm {what}"], masks[f"cold {what}"] = ~cold, cold
    if "domain" in cols and "domain" in data.encoder.idmaps_:
        ids = cols["domain"].numpy()
        idmap = data.encoder.idmaps_["domain"]
        for value in np.unique(ids):
            name = idmap.value(int(value)) or "unknown"
            masks[f"domain {name}"] = ids == value
    out = {}
    for name, rows in masks.items():
        if rows.any():
            out[name] = {"rows": float(rows.sum()), **_binary_scores(model, data, preds, rows)}
    return out


def train_from_config(cfg: ExperimentConfig, output: str | Path | None = None) -> Path:
    """Load data, split, build samples, train with early stopping, save the artifact."""
    out = Path(output or cfg.output or Path("runs") / cfg.name)
    data_cfg = cfg.data
    ds = load_dataset(data_cfg)
    split = make_split(ds, data_cfg.get("split", {}))
    behaviors = list(data_cfg.get("behaviors", ["view", "cart", "buy"]))
    train_cfg = TrainConfig(**cfg.train)
    data = prepare_ranking(
        ds,
        split,
        behaviors,
        n_negatives=int(data_cfg.get("n_negatives", 4)),
        seed=train_cfg.seed,
        embedding_dim=int(cfg.model.get("embedding_dim", 16)),
    )
    torch.manual_seed(train_cfg.seed)
    model = build_model(cfg.model["name"], data.features, data.tasks, **cfg.model.get("config", {}))
    weighting_cfg = dict(cfg.weighting)
    weighting = make_weighting(weighting_cfg.pop("name", "fixed"), behaviors, **weighting_cfg)
    result = fit(model, data.train, data.valid, train_cfg, weighting=weighting)
    scores = task_metrics(model, data)
    save_artifact(
        out,
        model,
        data.builder,
        split,
        cfg,
        {
            "valid": result.best_scores,
            "best_epoch": result.best_epoch,
            "test": scores,
            "samples_per_second": result.samples_per_second,
            "train_seconds": result.train_seconds,
            "history": result.history,
        },
    )
    return out


def prepare_from_config(
    cfg: ExperimentConfig, builder: FeatureBuilder | None = None
) -> RankingData:
    """Rebuild a config's encoded data (with a saved builder's encoder when given)."""
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.data.get("split", {}))
    return prepare_ranking(
        ds,
        split,
        list(cfg.data.get("behaviors", ["view", "cart", "buy"])),
        n_negatives=int(cfg.data.get("n_negatives", 4)),
        seed=int(cfg.train.get("seed", 0)),
        embedding_dim=int(cfg.model.get("embedding_dim", 16)),
        encoder=builder.encoder if builder is not None else None,
    )


def save_artifact(
    directory: Path,
    model: MultiTaskModel,
    builder: FeatureBuilder,
    split: Split,
    cfg: ExperimentConfig,
    metrics_: dict[str, Any],
) -> None:
    """Write everything :class:`Artifact` needs into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, directory)
    builder.save(directory)
    split.train.df.select("user", "item", "behavior").unique().write_parquet(
        directory / "seen.parquet"
    )
    (directory / "experiment.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (directory / "metrics.json").write_text(json.dumps(metrics_, indent=2, default=float) + "\n")


@dataclass
class Recommendation:
    """One recommended item with each task's prediction."""

    item: str
    score: float
    predictions: dict[str, float]
    attributes: dict[str, Any]


class Artifact:
    """A trained model folder, ready to score and recommend.

    Example:
        >>> art = Artifact.load("runs/sim_mmoe")  # doctest: +SKIP
        >>> art.recommend("u12", k=10)  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / "weights.safetensors").exists():
            raise DataError("not a shoprec artifact (no weights.safetensors)", file=self.directory)
        self.model = load_model(self.directory)
        self.builder = FeatureBuilder.load(self.directory)
        self.seen = pl.read_parquet(self.directory / "seen.parquet")
        self.config = yaml.safe_load((self.directory / "experiment.yaml").read_text())
        metrics_path = self.directory / "metrics.json"
        self.metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}

    @classmethod
    def load(cls, directory: str | Path) -> Artifact:
        return cls(directory)

    @property
    def task_names(self) -> list[str]:
        return self.model.task_names

    def history(self, user: str) -> pl.DataFrame:
        """The user's training events (user, item, behavior), as the artifact saw them."""
        return self.seen.filter(pl.col("user") == user)

    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        task: str | None = None,
        exclude: tuple[str, ...] = ("buy",),
    ) -> list[Recommendation]:
        """Top-``k`` items for ``user`` by ``task``'s prediction (the last task by default).

        Items the user already did one of ``exclude`` with are left out. An unknown user is
        scored with the unknown-user embedding and attributes, i.e. a cold-start list.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        task = task or self.task_names[-1]
        if task not in self.task_names:
            raise ValueError(f"unknown task '{task}'; tasks are {self.task_names}")
        scores = score_pairs(self.model, self.builder, [user])
        items = self.builder.item_table["item"]
        s = scores[task][0].copy()
        if exclude:
            done = self.seen.filter(
                (pl.col("user") == user) & pl.col("behavior").is_in(list(exclude))
            )["item"]
            s[items.is_in(done.implode()).to_numpy()] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        top = top[np.isfinite(s[top])]
        rows = self.builder.item_table[top.tolist()].to_dicts()
        return [
            Recommendation(
                item=row["item"],
                score=float(s[i]),
                predictions={t: float(scores[t][0, i]) for t in self.task_names},
                attributes={c: v for c, v in row.items() if c != "item"},
            )
            for i, row in zip(top, rows, strict=True)
        ]
