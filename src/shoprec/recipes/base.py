"""The recipe interface: how one kind of problem turns events into a trained scorer.

A recipe is the only place that knows how its kind of problem makes tensors and scores;
everything around it is shared (:mod:`shoprec.experiment` runs the steps, the one
:func:`~shoprec.train.loop.fit` loop trains, :mod:`shoprec.evaluate.protocols` measures,
:mod:`shoprec.artifact` saves, :class:`~shoprec.recommend.Recommender` serves)::

    recipe = recipes.get(cfg.recipe.name)(cfg)
    data = recipe.prepare(dataset, split)      # training data (recipe-specific)
    model = recipe.build_model(data)           # a model from shoprec.models / transfer
    run = recipe.fit(dataset, split)           # prepare + build + the one loop + selection
    run.scorer.score(users, positions)         # {task: (U, C) scores}, what everything ranks by

A :class:`Scorer` is what an artifact keeps: it scores users x items from the training-time
state plus, optionally, live events, and saves into / loads from a folder. Item positions
are rows of the artifact's ``items.parquet``; users are ids (unknown ones are cold-start).

Scores are positive and comparable within a user: for a binary task they are probabilities
(so the serving fusion ``buy * price`` and its logarithm mean what they say); a recipe that
ranks some items by a fallback (e.g. candidates first, the rest by popularity) keeps the
fallback's items below every candidate but still above zero.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from shoprec.config import ExperimentConfig
    from shoprec.data.schema import Dataset
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

#: Columns of the live events a scorer may be handed: one row per event, oldest first.
EVENT_COLUMNS = ("user", "item", "behavior")


class RecipeOptions(BaseModel):
    """Base of each recipe's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scorer(ABC):
    """Scores users x items for one trained artifact.

    Attributes:
        recipe: the recipe's registry name.
        tasks: task names, in the model's order.
        target: the task that ranks by default (e.g. ``buy``).
        items: item ids by position (the artifact's ``items.parquet`` order).
    """

    recipe: ClassVar[str] = ""
    #: The domain whose held-out events evaluate this scorer (a cross-domain target); None:
    #: every domain's.
    domain: str | None = None

    def __init__(self, tasks: Sequence[str], target: str, items: Sequence[str]) -> None:
        if target not in tasks:
            raise ValueError(f"target '{target}' is not one of the tasks {list(tasks)}")
        self.tasks = list(tasks)
        self.target = target
        self.items = list(items)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @abstractmethod
    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Each task's scores for ``users`` x the items at ``positions`` (all items if None).

        Args:
            users: user ids; ids the scorer never saw get a cold-start score.
            positions: ``(C,)`` item positions, shared by all users.
            events: live events since training (columns :data:`EVENT_COLUMNS`), which
                recipes with user-history features add to what they know of the user.

        Returns:
            ``{task: (U, C) float array}``, positive, higher is better.
        """

    def rank_scores(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> np.ndarray:
        """``(U, C)`` scores that offline evaluation ranks by: the target task's."""
        return self.score(users, positions, events)[self.target]

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything :meth:`load` needs into ``directory`` (created by the caller)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Scorer:
        """Read what :meth:`save` wrote."""

    # Optional hooks used by explanations; a scorer without them is explained by its task
    # outputs and the shopper's history only.
    def feature_attributions(
        self, user: str, position: int, log_score: Any, steps: int = 64
    ) -> tuple[dict[str, float], dict[str, Any], float, float] | None:
        """Integrated-gradients attributions of one pair's fused log score, when the model
        allows it: ``(attributions, raw feature values, value, baseline value)``."""
        return None

    def gate_weights(self, user: str, position: int) -> dict[str, list[float]] | None:
        """Expert gate weights per task for one pair (mixture-of-experts models)."""
        return None

    def describe(self) -> dict[str, Any]:
        """A short description for health checks."""
        return {"recipe": self.recipe, "tasks": self.tasks, "target": self.target}

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Forget shoppers until the next training (:mod:`shoprec.forget`): drop their rows
        of every per-user table and history, tombstone their id in every id map (they
        become unknown, cold-start shoppers) and zero their embedding rows; the caller
        saves the scorer. Returns counts per kind of thing removed.

        A scorer that keeps anything per shopper must override this; the default refuses.
        """
        raise NotImplementedError(
            f"the '{self.recipe}' scorer cannot forget a shopper; train again without them"
        )


@dataclass
class TrainingRun:
    """What :meth:`Recipe.fit` returns.

    Attributes:
        scorer: the trained scorer, ready to save and serve.
        valid: validation scores of the selected model (search selects on these).
        monitor: the key of ``valid`` that selection maximises.
        history: one dict per epoch (training loss, validation scores), for learning curves.
        best_epoch: the selected epoch, where there are epochs.
        info: anything else worth keeping in ``metrics.json`` (speed, sizes, settings).
        test: recipe-specific test metrics (e.g. pointwise AUC of sampled pairs), computed
            after selection; the full-ranking protocol is run by the caller.
    """

    scorer: Scorer
    valid: dict[str, float] = field(default_factory=dict)
    monitor: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fit(
        cls, scorer: Scorer, result: Any, monitor: str, n_train: int, **extra: Any
    ) -> TrainingRun:
        """A run from :func:`~shoprec.train.loop.fit`'s result: its best validation scores
        (plus ``mean``, the loop's default monitor), history, epoch and speed."""
        return cls(
            scorer=scorer,
            valid={**result.best_scores, "mean": result.best_score},
            monitor=monitor if monitor in result.best_scores else "mean",
            history=result.history,
            best_epoch=result.best_epoch,
            info={
                "samples_per_second": result.samples_per_second,
                "train_seconds": result.train_seconds,
                "train_samples": n_train,
                **extra.pop("info", {}),
            },
            **extra,
        )

    @property
    def valid_score(self) -> float:
        """The monitored validation score (NaN when there is none)."""
        return float(self.valid.get(self.monitor, float("nan")))


class Recipe(ABC):
    """One kind of problem, from a dataset and split to a trained :class:`Scorer`.

    Subclasses set :attr:`name`, :attr:`Options` (their config schema) and
    :attr:`default_tasks`, and implement :meth:`fit` (or :meth:`prepare`,
    :meth:`build_model` and :meth:`fit` together) and :attr:`scorer_class`.
    """

    name: ClassVar[str]
    Options: ClassVar[type[RecipeOptions]] = RecipeOptions
    default_tasks: ClassVar[tuple[str, ...]] = ("buy",)
    scorer_class: ClassVar[type[Scorer]]
    #: Whether the recipe needs timestamps (windows over time) or runs without them.
    needs_timestamps: ClassVar[bool] = False

    def __init__(self, config: ExperimentConfig) -> None:
        from shoprec.recipes import check_tasks

        check_tasks(self.name, [(t.name, t.kind) for t in config.tasks])
        self.config = config
        self.options: Any = config.recipe.options

    @property
    def tasks(self) -> list[str]:
        """The configured task names, or the recipe's defaults."""
        return self.config.task_names or list(self.default_tasks)

    @property
    def target(self) -> str:
        """The task that ranks: ``evaluate.target`` when it names a task, else the last."""
        t = self.config.evaluate.target
        return t if t in self.tasks else self.tasks[-1]

    def weighting(self, tasks: Sequence[str]) -> Any:
        """The configured task-loss balancing (:mod:`shoprec.train.weighting`) for ``tasks``;
        a task's ``weight:`` in the config becomes its fixed (or PCGrad) weight."""
        from shoprec.train.weighting import make_weighting

        w = self.config.weighting
        options = dict(w.options)
        weights = {t.name: t.weight for t in self.config.tasks if t.weight != 1.0}
        if weights and w.name in ("fixed", "pcgrad") and "weights" not in options:
            options["weights"] = weights
        return make_weighting(w.name, list(tasks), **options)

    def prepare(self, dataset: Dataset, split: Split) -> Any:
        """Training data for :meth:`build_model` and the loop (recipe-specific)."""
        raise NotImplementedError(f"recipe '{self.name}' does not split prepare from fit")

    def build_model(self, data: Any) -> Any:
        """A freshly initialised model for ``data``."""
        raise NotImplementedError(f"recipe '{self.name}' does not split build_model from fit")

    @abstractmethod
    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Prepare, build, train with the one loop, select on validation."""

    @classmethod
    def load_scorer(cls, directory: Path) -> Scorer:
        return cls.scorer_class.load(directory)


def positions_or_all(positions: np.ndarray | None, n_items: int) -> np.ndarray:
    """``positions`` as int64, or every position."""
    if positions is None:
        return np.arange(n_items, dtype=np.int64)
    return np.asarray(positions, dtype=np.int64)


def events_of(events: pl.DataFrame | None, users: Sequence[str]) -> pl.DataFrame | None:
    """The live events of ``users`` (None when there are none)."""
    if events is None or events.height == 0:
        return None
    mine = events.filter(pl.col("user").is_in(list(users)))
    return mine if mine.height else None
