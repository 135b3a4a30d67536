"""The ``tabular`` recipe: one row per sample with its own labels (census, CTR/CVR logs).

For impression- or row-level data (:class:`~shoprec.data.schema.TabularDataset`: census-income,
the AliExpress and Ali-CCP fixtures): every row is a sample whose categorical and numeric
columns are the features and whose label columns are the tasks. There are no users x items
here, so the scorer scores rows (:meth:`TabularScorer.predict_rows`, what a shop calls to
score impressions for CTR / CVR) and does not recommend.

Steps: the rows are split (see below), an :class:`~shoprec.data.encode.Encoder` is fitted on
the training rows only (unseen or null values -> OOV id 1, numbers standardised with the
training mean and std), any registered model (``model:``) is trained with the one loop
(:func:`shoprec.train.loop.fit`: early stopping on the mean validation AUC by default, best
weights restored), and the test rows are scored once, after selection: pointwise AUC and
log-loss per task (``income/auc``, ...), in :attr:`TrainingRun.test`.

Which rows are train, valid and test (``split:`` of the config):

* ``{kind: random, fractions: [0.8, 0.1, 0.1], seed: S}``: a seeded permutation of all rows
  (:func:`shoprec.data.datasets.census_income.split_column`: for census-income the same
  assignment as ``census_income.load(split_seed=S)``); it replaces any split the data has.
* ``{kind: given}`` or no ``split:`` at all: the data's own ``split`` column (the fixtures'
  files, census with ``data.options.split_seed``); without one, the random split above with
  its defaults (80/10/10, seed 0).
* other kinds (time, leave-last-out, cold users / items) need events and are refused.

When the rows have no validation part (the AliExpress fixture ships train and test only),
``valid_fraction`` of the training rows, drawn with the split's seed, are held out for it.

Config::

    data: {dataset: census_income}
    split: {kind: random, fractions: [0.8, 0.1, 0.1], seed: 0}
    recipe: {name: tabular}   # options: features, min_count, hash_buckets, valid_fraction
    tasks: [{name: income, label: income_50k}, never_married]   # default: every label column
    model: {name: mmoe, embedding_dim: 16, config: {n_experts: 8}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl
import torch
from pydantic import Field

from shoprec.config import GivenSplit, RandomSplit, TimeSplit
from shoprec.data.batches import TensorData
from shoprec.data.encode import Encoder
from shoprec.data.schema import TabularDataset
from shoprec.errors import ShoprecError
from shoprec.models import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    Task,
    build_model,
    load_model,
    save_model,
)
from shoprec.models.base import MultiTaskModel
from shoprec.recipes.base import Recipe, RecipeOptions, Scorer, TrainingRun
from shoprec.train.loop import Evaluator, FitResult, fit, predict, task_scores

if TYPE_CHECKING:
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = ["TabularData", "TabularOptions", "TabularRecipe", "TabularScorer", "split_rows"]

PARTS = ("train", "valid", "test")
STATE_FILE = "tabular.json"
ENCODER_FILE = "encoder.json"


class TabularOptions(RecipeOptions):
    """Options of the ``tabular`` recipe."""

    features: list[str] | None = None  # feature columns to use (None: all the data's)
    min_count: int = Field(1, ge=1)  # values rarer than this in train map to OOV
    hash_buckets: int = Field(0, ge=0)  # ...or to one of these hashed ids (0: all to OOV)
    valid_fraction: float = Field(0.1, gt=0, lt=1)  # train rows held out when there is no valid


@dataclass
class TabularData:
    """Encoded rows of one tabular dataset, ready for a model and the loop.

    Attributes:
        features: the model's input specs (categorical first, then numeric, data order).
        tasks: the model's task specs; each label is a column of the parts.
        train, valid, test: feature and label columns as tensors.
        encoder: the encoder fitted on the training rows (None when the arrays were encoded
            elsewhere, e.g. a benchmark's saved arrays).
        info: rows per part and how they were split.
    """

    features: list[FeatureSpec]
    tasks: list[Task]
    train: TensorData
    valid: TensorData
    test: TensorData
    encoder: Encoder | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if isinstance(f, CategoricalFeature)]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if isinstance(f, NumericFeature)]

    def part(self, name: str) -> TensorData:
        """One of ``train``, ``valid``, ``test``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def split_rows(
    n: int,
    given: pl.Series | None,
    spec: Any,
    *,
    valid_fraction: float = 0.1,
) -> tuple[np.ndarray, str]:
    """Which part each of ``n`` rows belongs to, as codes 0 train, 1 valid, 2 test.

    Args:
        n: number of rows.
        given: the data's own ``split`` column (``train``/``valid``/``test``), if any.
        spec: the config's split section (see the module docstring for what each kind does).
        valid_fraction: training rows held out for validation when no row is ``valid``.

    Returns:
        ``(codes (n,) int8, a short description)``.

    Raises:
        ShoprecError: a split kind that needs events, a ``given`` split without a ``split``
            column, fractions that are not three numbers summing to 1, or a part left empty.
    """
    from shoprec.data.datasets.census_income import split_column

    names = {"train": 0, "valid": 1, "test": 2}
    default_time = TimeSplit(kind="time", test_days=14)  # the config's default: not asked for
    if isinstance(spec, RandomSplit):
        if spec.per_user or spec.behavior is not None:
            raise ShoprecError(
                "split: rows of a tabular dataset have no users or behaviors; use "
                "{kind: random, fractions: [train, valid, test], seed: S}"
            )
        fractions = tuple(float(f) for f in spec.fractions)
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
            raise ShoprecError(
                f"split.fractions must be three fractions (train, valid, test) summing to 1; "
                f"got {list(fractions)}"
            )
        column = split_column(n, spec.seed, fractions)  # type: ignore[arg-type]
        seed, how = spec.seed, f"random {list(fractions)} seed {spec.seed}"
    elif isinstance(spec, GivenSplit) or spec is None or spec == default_time:
        if given is None:
            if isinstance(spec, GivenSplit):
                raise ShoprecError(
                    "split: {kind: given} needs a 'split' column in the data; use "
                    "{kind: random, fractions: [0.8, 0.1, 0.1], seed: 0}"
                )
            column = split_column(n, 0)
            seed, how = 0, "random [0.8, 0.1, 0.1] seed 0 (the data has no split of its own)"
        else:
            column = given
            seed = spec.seed if isinstance(spec, GivenSplit) else 0
            how = "the data's own split column"
    else:
        raise ShoprecError(
            f"split: {{kind: {spec.kind}}} needs events with users and times; a tabular "
            "dataset is split by rows: {kind: random, fractions: [0.8, 0.1, 0.1], seed: 0} or "
            "{kind: given} (the data's own split column)"
        )
    bad = ~column.is_in(list(names)) | column.is_null()
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        raise ShoprecError(
            f"the split column must hold train, valid or test; row {row} holds {column[row]!r}"
        )
    codes = column.replace_strict(names, return_dtype=pl.Int8).to_numpy().copy()
    if not (codes == 1).any():
        train_rows = np.flatnonzero(codes == 0)
        n_valid = max(1, round(valid_fraction * len(train_rows)))
        held = np.random.default_rng(seed).choice(train_rows, n_valid, replace=False)
        codes[held] = 1
        how += f", {n_valid} training rows (seed {seed}) held out for validation"
    for name, code in names.items():
        if not (codes == code).any():
            raise ShoprecError(f"the {name} part of the data is empty ({how})")
    return codes, how


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array`` (copied only when NumPy marks it read-only, as arrays that
    Polars hands out without a copy are)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class TabularScorer(Scorer):
    """Scores rows of features with a trained multi-task model (no users x items).

    Attributes:
        model: the trained model (eval mode).
        encoder: the encoder fitted on the training rows.
        categorical, numeric: the raw feature columns, in the model's order.
        labels: each task's label column (what the training data called it).
    """

    recipe: ClassVar[str] = "tabular"

    def __init__(
        self,
        model: MultiTaskModel,
        encoder: Encoder,
        target: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__(model.task_names, target, items=[])
        self.model = model.eval()
        self.encoder = encoder
        self.categorical = list(encoder.categorical)
        self.numeric = list(encoder.numeric)
        self.labels = dict(labels or {t.name: t.label or t.name for t in model.tasks})

    @property
    def feature_columns(self) -> list[str]:
        """The raw columns :meth:`predict_rows` reads."""
        return [*self.categorical, *self.numeric]

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Not available: a tabular model scores rows, not users x items.

        Raises:
            ShoprecError: always; use :meth:`predict_rows` (or ``shoprec evaluate``).
        """
        raise ShoprecError(
            "a tabular artifact scores rows; it does not recommend items: use evaluate "
            "(its test scores), or TabularScorer.predict_rows(frame) to score new rows"
        )

    def predict_rows(self, frame: pl.DataFrame, batch_size: int = 16384) -> dict[str, np.ndarray]:
        """Each task's prediction for raw rows (e.g. impressions to rank by pCTR x pCVR).

        Args:
            frame: one row per sample holding :attr:`feature_columns` (other columns are
                ignored); values unseen in training, or null, are scored as unknown.
            batch_size: rows per forward pass.

        Returns:
            ``{task: (N,) float array}``: probabilities for binary tasks, ``(N, C)`` class
            probabilities for multi-class ones, expected values for regressions.

        Raises:
            DataError: a feature column is missing from ``frame`` (named).

        Example:
            >>> scorer.predict_rows(impressions)["click"][:3]  # doctest: +SKIP
            array([0.031, 0.004, 0.12], dtype=float32)
        """
        arrays = self.encoder.transform(frame, self.feature_columns)
        data = TensorData({k: _tensor(v) for k, v in arrays.items()})
        if len(data) == 0:
            return {t.name: np.zeros(0, dtype=np.float32) for t in self.model.tasks}
        return {k: v.numpy() for k, v in predict(self.model, data, batch_size).items()}

    def save(self, directory: Path) -> None:
        save_model(self.model, directory)
        self.encoder.to_json(directory / ENCODER_FILE)
        state = {
            "target": self.target,
            "categorical": self.categorical,
            "numeric": self.numeric,
            "labels": self.labels,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TabularScorer:
        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        encoder = Encoder.from_json(directory / ENCODER_FILE)
        if [*encoder.categorical, *encoder.numeric] != [*state["categorical"], *state["numeric"]]:
            raise ValueError(f"{directory}: the encoder's columns differ from {STATE_FILE}'s")
        return cls(load_model(directory), encoder, state["target"], state["labels"])

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model.model_name,
            "features": len(self.feature_columns),
            "scores": "rows (predict_rows), not users x items",
        }


class TabularRecipe(Recipe):
    """Rows with their own labels (census, CTR / CVR impressions), any registered model."""

    name: ClassVar[str] = "tabular"
    Options: ClassVar[type[RecipeOptions]] = TabularOptions
    default_tasks: ClassVar[tuple[str, ...]] = ()  # every label column of the data
    scorer_class: ClassVar[type[Scorer]] = TabularScorer

    @property
    def target(self) -> str:
        """``evaluate.target`` when it names a task, else the last task ('' before the data
        names the tasks, when the config gives none)."""
        tasks = self.tasks
        t = self.config.evaluate.target
        return t if t in tasks else (tasks[-1] if tasks else "")

    def task_specs(
        self, labels: Sequence[str], columns: Collection[str] | None = None
    ) -> list[Task]:
        """The config's tasks as model task specs (default: one binary task per label).

        Args:
            labels: the data's label columns, in order.
            columns: the columns a task may read its label from (default: ``labels``; the
                data's non-feature columns when it is a frame).

        Raises:
            ShoprecError: a task's label column is not among ``columns``.
        """
        sections = self.config.tasks
        if not sections:
            return [Task(label) for label in labels]
        allowed = set(labels if columns is None else columns)
        out = []
        for t in sections:
            label = t.label or t.name
            if label not in allowed:
                raise ShoprecError(
                    f"task '{t.name}' reads label column '{label}', which the data does not "
                    f"have as a label; its labels: {list(labels)} (give tasks as "
                    "{name: ..., label: <column>})"
                )
            n_classes = t.n_classes if t.kind == "multiclass" and t.n_classes else 1
            out.append(Task(t.name, t.kind, n_classes, t.loss, label))  # type: ignore[arg-type]
        return out

    def feature_specs(
        self, vocab_sizes: dict[str, int], numeric: Sequence[str]
    ) -> list[FeatureSpec]:
        """Input specs: one embedded id per categorical column (``model.embedding_dim``), in
        the given order, then one number per numeric column."""
        emb = self.config.model.embedding_dim
        features: list[FeatureSpec] = [
            CategoricalFeature(c, size, emb) for c, size in vocab_sizes.items()
        ]
        return features + [NumericFeature(c) for c in numeric]

    def prepare(self, dataset: TabularDataset, split: Split | None = None) -> TabularData:
        """Split the rows, fit the encoder on train, encode every part.

        Args:
            dataset: the rows (features, labels, optionally a ``split`` column).
            split: unused (always None: rows are split here, see the module docstring).

        Raises:
            ShoprecError: not a tabular dataset, an unknown feature or label, a split that
                does not fit rows.
        """
        if not isinstance(dataset, TabularDataset):
            raise ShoprecError(
                f"recipe 'tabular' trains on rows with labels (census_income, aliexpress, "
                f"ali_ccp); '{getattr(dataset, 'name', dataset)}' is events: use recipe "
                "pairs or multibehavior"
            )
        opts: TabularOptions = self.options
        categorical, numeric = list(dataset.categorical), list(dataset.numeric)
        if opts.features is not None:
            unknown = [f for f in opts.features if f not in {*categorical, *numeric}]
            if unknown:
                raise ShoprecError(
                    f"recipe.features {unknown} are not features of '{dataset.name}'; "
                    f"its features: {categorical + numeric}"
                )
            categorical = [c for c in categorical if c in opts.features]
            numeric = [c for c in numeric if c in opts.features]
        frame = dataset.frame
        features_all = {*dataset.categorical, *dataset.numeric}
        label_columns = [c for c in frame.columns if c not in features_all and c != "split"]
        tasks = self.task_specs(dataset.labels, label_columns)
        given = frame["split"] if "split" in frame.columns else None
        spec = self.config.split if "split" in self.config.model_fields_set else None
        codes, how = split_rows(frame.height, given, spec, valid_fraction=opts.valid_fraction)
        parts = {name: frame.filter(pl.Series(codes == i)) for i, name in enumerate(PARTS)}
        encoder = Encoder(
            categorical=categorical,
            numeric=numeric,
            min_count=opts.min_count,
            hash_buckets=opts.hash_buckets,
        )
        encoder.fit(parts["train"])
        features = self.feature_specs({c: encoder.vocab_size(c) for c in categorical}, numeric)
        tensors = {name: self._encode(encoder, part, tasks) for name, part in parts.items()}
        rows = {name: part.height for name, part in parts.items()}
        log.info("%s: rows %s (%s)", dataset.name, rows, how)
        return TabularData(
            features=features,
            tasks=tasks,
            encoder=encoder,
            info={"dataset": dataset.name, "rows": rows, "split": how},
            **tensors,
        )

    @staticmethod
    def _encode(encoder: Encoder, part: pl.DataFrame, tasks: list[Task]) -> TensorData:
        cols = {k: _tensor(v) for k, v in encoder.transform(part).items()}
        for t in tasks:
            label = str(t.label)
            if part[label].null_count():
                raise ShoprecError(f"label column '{label}' has missing values")
            values = part[label].cast(pl.Float64)
            if t.kind == "binary" and not values.is_in([0.0, 1.0]).all():
                raise ShoprecError(
                    f"task '{t.name}' is binary but its label column '{label}' holds values "
                    "other than 0 and 1 (give the task kind: regression or multiclass)"
                )
            dtype = np.int64 if t.kind == "multiclass" else np.float32
            cols[label] = torch.from_numpy(part[label].to_numpy().astype(dtype))
        return TensorData(cols)

    def build_model(self, data: TabularData) -> MultiTaskModel:
        """The configured model, initialised from ``train.seed``."""
        m = self.config.model
        torch.manual_seed(self.config.train.train_config().seed)
        return build_model(m.name, data.features, data.tasks, **m.config)

    def train(
        self, model: MultiTaskModel, data: TabularData, evaluator: Evaluator | None = None
    ) -> FitResult:
        """The one loop on ``data.train``, selecting on ``data.valid`` (best weights kept).

        Args:
            model: from :meth:`build_model`.
            data: from :meth:`prepare`.
            evaluator: validation scores to select on instead of the per-task scores of
                ``data.valid`` (a benchmark passes one that also times each epoch).
        """
        cfg = self.config.train.train_config()
        weighting = self.weighting(model.task_names)
        return fit(model, data.train, data.valid, cfg, weighting=weighting, evaluator=evaluator)

    def test_scores(self, model: MultiTaskModel, data: TabularData) -> dict[str, float]:
        """Per task AUC and log-loss of the test rows (call once, after selection)."""
        cfg = self.config.train.train_config()
        return task_scores(model, data.test, cfg.eval_batch_size)

    def fit(self, dataset: TabularDataset, split: Split | None = None) -> TrainingRun:  # type: ignore[override]
        """Prepare, build, train with the one loop, select on validation, test once.

        Args:
            dataset: a :class:`TabularDataset`.
            split: ignored (None from the front door): the rows are split by
                :meth:`prepare` from ``split:`` of the config (module docstring).
        """
        data = self.prepare(dataset, split)
        cfg = self.config.train.train_config()
        model = self.build_model(data)
        result = self.train(model, data)
        tasks = [t.name for t in data.tasks]
        target = self.config.evaluate.target
        target = target if target in tasks else tasks[-1]
        assert data.encoder is not None
        labels = {t.name: str(t.label) for t in data.tasks}
        scorer = TabularScorer(model, data.encoder, target, labels)
        return TrainingRun.from_fit(
            scorer,
            result,
            cfg.monitor,
            len(data.train),
            info={
                **data.info,
                "features": {"categorical": data.categorical, "numeric": data.numeric},
            },
            test=self.test_scores(model, data),
        )
