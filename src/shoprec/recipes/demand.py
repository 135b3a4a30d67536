"""The demand recipe: a multi-task forecaster of each product's weekly units sold.

``recipe: {name: demand, horizon: 4, history_len: 16, ...}`` (the options are
:class:`~shoprec.inventory.forecast.ForecastOptions`). The events become one series per
product (:mod:`shoprec.inventory.series`: ``buy`` units per week, returns apart); the split is
by time over the series themselves, whatever the config's ``split:`` says: the last
``horizon`` complete periods are the test, the ``horizon`` before them the validation (the
epoch is selected there), everything earlier trains. The test is read once, after selection,
and reported pointwise (WAPE, MASE, RMSSE, pinball, P90 coverage, no-sale AUC, trend
accuracy) in ``metrics.json``.

The artifact keeps the forecaster (it scores series, not users x items, so it recommends
nothing: ``shoprec forecast CONFIG`` writes the forecasts and the reorder list).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from shoprec.errors import ShoprecError
from shoprec.inventory.forecast import (
    ForecastOptions,
    make_windows,
    panel_features,
    predict_windows,
    train_forecaster,
)
from shoprec.inventory.metrics import forecast_metrics
from shoprec.inventory.series import build_panel, demand_from_interactions
from shoprec.models.forecaster import FORECAST_TASKS, DemandForecaster, load_forecaster
from shoprec.models.forecaster import save_forecaster as _save
from shoprec.recipes.base import Recipe, RecipeOptions, Scorer, TrainingRun

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shoprec.data.schema import Dataset
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

STATE_FILE = "demand.json"


class DemandOptions(ForecastOptions, RecipeOptions):
    """The forecaster settings (:class:`~shoprec.inventory.forecast.ForecastOptions`)."""


class DemandScorer(Scorer):
    """Holds the trained forecaster; scores series (``shoprec forecast``), not users x items."""

    recipe: ClassVar[str] = "demand"

    def __init__(self, model: DemandForecaster, options: dict[str, Any]) -> None:
        super().__init__(model.task_names, model.task_names[0], items=[])
        self.model = model.eval()
        self.options = options

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """Not available: a demand forecaster scores products' weeks, not users x items.

        Raises:
            ShoprecError: always; use ``shoprec forecast CONFIG``.
        """
        raise ShoprecError(
            "a demand artifact forecasts products' demand; it does not recommend items: run "
            "shoprec forecast CONFIG for forecasts and a reorder list"
        )

    def save(self, directory: Path) -> None:
        _save(self.model, directory)
        (directory / STATE_FILE).write_text(json.dumps(self.options, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> DemandScorer:
        options = json.loads((Path(directory) / STATE_FILE).read_text())
        return cls(load_forecaster(directory), options)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": DemandForecaster.model_name,
                "scores": "product demand per period (shoprec forecast)"}  # fmt: skip


class DemandRecipe(Recipe):
    """Weekly product demand with the multi-task forecaster (see the module docstring)."""

    name: ClassVar[str] = "demand"
    Options: ClassVar[type[RecipeOptions]] = DemandOptions
    default_tasks: ClassVar[tuple[str, ...]] = FORECAST_TASKS
    scorer_class: ClassVar[type[Scorer]] = DemandScorer
    needs_timestamps: ClassVar[bool] = True

    @property
    def tasks(self) -> list[str]:
        """The configured task names, else the options' ``tasks``."""
        return self.config.task_names or list(self.options.tasks)

    @property
    def target(self) -> str:
        return self.tasks[0]

    def fit(self, dataset: Dataset, split: Split | None) -> TrainingRun:
        """Series from the dataset's events; train up to ``T - horizon``, test on the last
        ``horizon`` periods once."""
        opts: ForecastOptions = self.options
        data = demand_from_interactions(dataset.interactions, dataset.catalog, name=dataset.name)
        panel = build_panel(data, freq=opts.freq, text_dim=opts.text_dim)
        origin = panel.n_periods - 1 - opts.horizon
        feats = panel_features(panel, opts)
        tasks = tuple(self.tasks)
        model, result = train_forecaster(
            panel,
            origin,
            opts,
            self.config.train.train_config(),
            tasks=tasks,
            feats=feats,
            weighting=self.weighting(tasks),
        )
        test = make_windows(panel, np.array([origin]), opts, feats, launching=False)
        pred = predict_windows(model, test)
        y = test.columns["units"].numpy()
        metrics = forecast_metrics(
            y,
            pred.get("units", pred.get("p50")),
            panel.units[test.series, : origin + 1],
            panel.first[test.series],
            p50=pred.get("p50"),
            p90=pred.get("p90"),
            p_no_sale=pred.get("no_sale"),
            trend_pred=pred["trend"].argmax(1) if "trend" in pred else None,
            trend_true=test.columns["trend"].numpy(),
        )
        scorer = DemandScorer(model, opts.model_dump(mode="json"))
        return TrainingRun.from_fit(
            scorer,
            result,
            monitor=next(iter(result.best_scores), "mean"),
            n_train=0,
            test={**metrics, "origin": str(panel.periods[origin]), "horizon": opts.horizon},
            info={"series": panel.n_series, "periods": panel.n_periods},
        )
