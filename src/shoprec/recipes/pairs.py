"""The ``pairs`` recipe: (user, item) pairs with one 0/1 label per behavior.

For any shop's events with or without time: every (user, item) pair the user touched in the
training part is a row with a label per task behavior (view, cart, buy ...), plus
``n_negatives`` untouched items per touched pair; features are the user and item ids, the
item's category / brand / log price and the user's attributes and main domain
(:func:`shoprec.pipeline.prepare_ranking`). Any registered multi-task model ranks them.

Validation picks the epoch (the loop's early stopping on the pointwise scores of the valid
samples); the test scores here are the pointwise AUC / GAUC / log-loss on the test samples;
the front door adds full ranking over the catalog.

Config::

    recipe: {name: pairs, n_negatives: 4}
    tasks: [view, cart, buy]
    model: {name: mmoe, embedding_dim: 16, config: {n_experts: 4}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl
import torch
from pydantic import Field

from shoprec.data.encode import OOV
from shoprec.data.schema import Catalog, Users
from shoprec.models import build_model, load_model, save_model
from shoprec.models.base import MultiTaskModel, output_to_prediction
from shoprec.pipeline import FeatureBuilder, RankingData, prepare_ranking, prepare_ranking_shards
from shoprec.recipes.base import Recipe, RecipeOptions, Scorer, TrainingRun, positions_or_all
from shoprec.train.loop import fit, predict

if TYPE_CHECKING:
    from shoprec.data.schema import Dataset
    from shoprec.data.split import Split

log = logging.getLogger(__name__)


class PairsOptions(RecipeOptions):
    """Options of the ``pairs`` recipe."""

    n_negatives: int = Field(4, ge=0)  # untouched items drawn per touched pair
    user_attributes: list[str] | None = None  # user columns used as features (None: all)


def pointwise_metrics(
    model: MultiTaskModel, data: RankingData, rows: np.ndarray | None = None
) -> dict[str, float]:
    """Per binary task AUC, GAUC (per user) and log-loss of the test samples (``rows``)."""
    from shoprec.evaluate import metrics

    preds = predict(model, data.test)
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


def pointwise_slices(model: MultiTaskModel, data: RankingData) -> dict[str, dict[str, float]]:
    """:func:`pointwise_metrics` on warm / cold users and items (cold: no positive label in
    the training samples) and per domain, each with its number of samples as ``rows``."""
    cols, train = data.test.columns, data.train.columns
    positive = np.zeros(len(data.train), dtype=bool)
    for t in model.tasks:
        if (t.label or t.name) in train:
            positive |= train[t.label or t.name].numpy() > 0
    masks: dict[str, np.ndarray] = {}
    for col, what in (("user", "users"), ("item", "items")):
        if col in cols and col in train:
            warm = np.unique(train[col].numpy()[positive])
            ids = cols[col].numpy()
            cold = (ids == OOV) | ~np.isin(ids, warm)
            masks[f"warm {what}"], masks[f"cold {what}"] = ~cold, cold
    if "domain" in cols and "domain" in data.encoder.idmaps_:
        ids = cols["domain"].numpy()
        idmap = data.encoder.idmaps_["domain"]
        for value in np.unique(ids):
            masks[f"domain {idmap.value(int(value)) or 'unknown'}"] = ids == value
    return {
        name: {"rows": float(rows.sum()), **pointwise_metrics(model, data, rows)}
        for name, rows in masks.items()
        if rows.any()
    }


class PairsScorer(Scorer):
    """A registered multi-task model over the pair features of a :class:`FeatureBuilder`.

    One shopper's requests go through cached encoded inputs
    (:class:`~shoprec.recommend.features.PairEncoder`): the item side of the catalog is
    encoded once, the user side once per shopper, so serving does no dataframe work.
    """

    recipe: ClassVar[str] = "pairs"

    def __init__(self, model: MultiTaskModel, builder: FeatureBuilder, target: str) -> None:
        super().__init__(model.task_names, target, builder.item_table["item"].to_list())
        self.model = model.eval()
        self.builder = builder
        self._encoder: Any = None
        self._explain_model: MultiTaskModel | None = None

    @property
    def pair_encoder(self) -> Any:
        from shoprec.recommend.features import PairEncoder

        if self._encoder is None:
            self._encoder = PairEncoder(self.builder)
        return self._encoder

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Every task's probability for ``users`` x items; ``events`` are not features of this
        recipe (the Recommender uses them for candidates and the session boost)."""
        pos = positions_or_all(positions, self.n_items)
        if len(users) == 1:
            batch = self.pair_encoder.batch(users[0], pos)
            with torch.inference_mode():
                out = self.model(batch)
                return {
                    t.name: output_to_prediction(t, out[t.name]).numpy()[None, :]
                    for t in self.model.tasks
                }
        items = self.builder.item_table["item"][pos.tolist()]
        preds = predict(self.model, self.builder.pairs(list(users), items))
        return {k: v.numpy().reshape(len(users), len(pos)) for k, v in preds.items()}

    def save(self, directory: Path) -> None:
        save_model(self.model, directory)
        self.builder.save(directory)
        (directory / "target.txt").write_text(self.target)

    @classmethod
    def load(cls, directory: Path) -> PairsScorer:
        target_file = directory / "target.txt"
        model = load_model(directory)
        target = target_file.read_text().strip() if target_file.exists() else model.task_names[-1]
        return cls(model, FeatureBuilder.load(directory), target)

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Their rows of the user table, their id in the encoder (now unknown) and their
        rows of the model's user embedding."""
        from shoprec.forget import drop_user_rows, forget_in_model_inputs

        self.builder.user_table, rows = drop_user_rows(self.builder.user_table, users)
        out = forget_in_model_inputs(self.builder.encoder, self.model, users)
        self._encoder = None  # cached encoded inputs of shoppers
        self._explain_model = None
        return {"user_table_rows": rows, **out}

    def feature_attributions(
        self, user: str, position: int, log_score: Callable[..., Any], steps: int = 64
    ) -> tuple[dict[str, float], dict[str, Any], float, float] | None:
        import copy

        from shoprec.recommend.explain import integrated_gradients

        if self._explain_model is None:  # IG swaps input layers while it runs: a private copy
            self._explain_model = copy.deepcopy(self.model).eval()
        item = self.builder.item_table["item"][[position]]
        batch = self.builder.pairs([user], item).columns
        ig = integrated_gradients(self._explain_model, batch, log_score, steps)
        raw = self.builder.frame([user], item).row(0, named=True)
        return ig.attributions, raw, ig.value, ig.baseline_value

    def gate_weights(self, user: str, position: int) -> dict[str, list[float]] | None:
        if not hasattr(self.model, "gate_weights"):
            return None
        batch = self.pair_encoder.batch(user, np.array([position]))
        g = self.model.gate_weights(batch)
        return {t: [round(float(x), 6) for x in v[0]] for t, v in g.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model.model_name}


class PairsRecipe(Recipe):
    """Sampled (user, item) pairs, one binary task per behavior, any registered model."""

    name: ClassVar[str] = "pairs"
    Options: ClassVar[type[RecipeOptions]] = PairsOptions
    default_tasks: ClassVar[tuple[str, ...]] = ("view", "cart", "buy")
    scorer_class: ClassVar[type[Scorer]] = PairsScorer

    def prepare(self, dataset: Dataset, split: Split) -> RankingData:
        for t in self.config.tasks:
            if t.kind != "binary":
                raise ValueError(
                    f"the pairs recipe learns binary behaviors; task '{t.name}' is {t.kind} "
                    "(use recipe: windows for quantity)"
                )
        behaviors = [t.behavior or t.name for t in self.config.tasks] or list(self.default_tasks)
        present = set(split.train.df["behavior"].unique().to_list())
        missing = [b for b in behaviors if b not in present]
        if missing:
            raise ValueError(
                f"tasks {missing} have no events in the training part (behaviors there: "
                f"{sorted(present)}); set tasks: to behaviors the data has"
            )
        kwargs: dict[str, Any] = dict(
            n_negatives=self.options.n_negatives,
            seed=self.config.train.train_config().seed,
            embedding_dim=self.config.model.embedding_dim,
            user_attributes=self.options.user_attributes,
        )
        if not self._use_shards(split.train.df.height):
            return prepare_ranking(dataset, split, behaviors, **kwargs)
        from shoprec.data.partitioned import split_frame

        return self._prepare_shards(
            split_frame(split), dataset.catalog, dataset.users, behaviors, kwargs
        )

    def _use_shards(self, train_events: int) -> bool:
        """``train.stream``: shards, memory, or (auto) shards when the training rows
        expected (events x (1 + negatives), an upper bound) exceed ``train.stream_rows``."""
        cfg = self.config.train.train_config()
        if cfg.stream != "auto":
            return cfg.stream == "shards"
        return train_events * (1 + self.options.n_negatives) > cfg.stream_rows

    def _prepare_shards(
        self,
        events: pl.LazyFrame,
        catalog: Catalog | None,
        users: Users | None,
        behaviors: list[str],
        kwargs: dict[str, Any],
    ) -> RankingData:
        """The shard path of :meth:`prepare` (rows in a scratch folder removed with them)."""
        import shutil
        import tempfile
        import weakref

        cfg = self.config.train.train_config()
        directory = Path(tempfile.mkdtemp(prefix="shoprec-shards-"))
        data = prepare_ranking_shards(
            events,
            catalog,
            users,
            behaviors,
            directory,
            shard_rows=cfg.shard_rows,
            bucket_events=cfg.shard_rows,
            **kwargs,
        )
        weakref.finalize(data, shutil.rmtree, directory, True)
        log.info("training rows in %d shards under %s", data.train.n_shards, directory)
        return data

    def prepare_files(self, folder: str | Path) -> RankingData:
        """:meth:`prepare` from a dataset folder without loading its events: data larger
        than memory.

        The events (``interactions.parquet``, or a folder of Parquet files, in the canonical
        columns) are scanned lazily, split by the config's time split (``test_days`` /
        ``valid_days`` or ``test_start`` / ``valid_start``) and prepared as Parquet shards
        (:func:`~shoprec.pipeline.prepare_ranking_shards`); ``catalog.parquet`` and
        ``users.parquet`` (small: one row per item and user) are read whole.

        Raises:
            DataError: a split other than a time split (the others need every event).
        """
        from shoprec.config import TimeSplit
        from shoprec.data.partitioned import scan_events, time_cuts, with_time_parts
        from shoprec.errors import DataError

        folder = Path(folder)
        spec = self.config.split
        if not isinstance(spec, TimeSplit):
            raise DataError(
                f"preparing {folder} from files supports split: {{kind: time}} only (got "
                f"{type(spec).__name__}); the other splits need every event in memory",
                file=folder,
            )
        events_path = folder / "interactions.parquet"
        events = scan_events(events_path if events_path.exists() else folder / "interactions")
        if spec.test_days is not None:
            t_test, t_valid = time_cuts(
                events,
                test_days=spec.test_days,
                valid_days=spec.valid_days,
                null_timestamps=spec.null_timestamps,
            )
        else:
            from shoprec.data.split import _to_datetime

            t_test = _to_datetime(spec.test_start, "test_start")
            t_valid = (
                None if spec.valid_start is None else _to_datetime(spec.valid_start, "valid_start")
            )
            if t_valid is None and spec.valid_days is not None:
                t_valid = t_test - timedelta(days=float(spec.valid_days))
        catalog_path, users_path = folder / "catalog.parquet", folder / "users.parquet"
        catalog = (
            Catalog.from_frame(pl.read_parquet(catalog_path)) if catalog_path.exists() else None
        )
        users = Users.from_frame(pl.read_parquet(users_path)) if users_path.exists() else None
        behaviors = [t.behavior or t.name for t in self.config.tasks] or list(self.default_tasks)
        kwargs: dict[str, Any] = dict(
            n_negatives=self.options.n_negatives,
            seed=self.config.train.train_config().seed,
            embedding_dim=self.config.model.embedding_dim,
            user_attributes=self.options.user_attributes,
        )
        return self._prepare_shards(
            with_time_parts(events, t_test, t_valid, spec.null_timestamps),
            catalog,
            users,
            behaviors,
            kwargs,
        )

    def build_model(self, data: RankingData) -> MultiTaskModel:
        m = self.config.model
        return build_model(m.name, data.features, data.tasks, **m.config)

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        data = self.prepare(dataset, split)
        cfg = self.config.train.train_config()
        torch.manual_seed(cfg.seed)
        model = self.build_model(data)
        weighting = self.weighting(model.task_names)
        result = fit(model, data.train, data.valid, cfg, weighting=weighting)
        scorer = PairsScorer(model, data.builder, self.target)
        return TrainingRun.from_fit(
            scorer,
            result,
            cfg.monitor,
            len(data.train),
            test={
                **pointwise_metrics(model, data),
                "slices": pointwise_slices(model, data),  # type: ignore[dict-item]
            },
        )
