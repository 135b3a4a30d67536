"""Train the demand forecaster on a panel of series and forecast from an origin.

The steps, each a function the recipe, ``shoprec forecast`` and the benchmark share::

    panel = build_panel(load_demand(cfg.data), text_dim=opts.text_dim)   # series.py
    model, fit = train_forecaster(panel, origin, opts, train_config)     # windows + fit()
    table = forecast_table(model, panel, origin, opts)                   # one row per h

*Windows.* A training sample is one series at one origin ``t`` (the last period it may
read): its last ``history_len`` periods and covariates in, the next ``horizon`` periods out.
Every origin from the first period on is used, for every series launched by then, plus the
series that launch within the horizon (so the net learns how new products start). Origins
are cut so that no target reaches past the data the caller allows (``origin``): validation
windows are the ``horizon`` periods before ``origin``, training windows end before them.

*Covariates* (the ``static`` batch key): the series' age, share of periods with a sale,
periods since the last sale, log price (standardised) and its 4-period change, cumulative
units; the title vector (when ``text_dim > 0``); and, for transfer to new products, the
demand level of the ``neighbours`` most similar established products by title vector
(mean ``log1p`` units per period over their last 8 periods), so a product with no history
starts from what products like it sell. Calendar features of the forecast periods are the
``future`` key.

Example:
    >>> from shoprec.data.simulate import simulate_shop
    >>> from shoprec.inventory.series import build_panel, demand_from_simulation
    >>> shop = simulate_shop(n_events=20_000, n_users=400, n_items=60, n_days=140)
    >>> panel = build_panel(demand_from_simulation(shop))
    >>> opts = ForecastOptions(history_len=8)
    >>> model, _ = train_forecaster(panel, panel.n_periods - 1, opts)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shoprec.data.batches import TensorData, to_tensors
from shoprec.inventory.metrics import forecast_metrics, trend_labels
from shoprec.inventory.series import Panel
from shoprec.models.forecaster import (
    FORECAST_TASKS,
    TREND_CLASSES,
    DemandForecaster,
    ForecasterConfig,
)

if TYPE_CHECKING:
    from shoprec.config import ExperimentConfig
    from shoprec.train.loop import FitResult, TrainConfig

log = logging.getLogger(__name__)

__all__ = [
    "ForecastOptions",
    "Windows",
    "forecast_options",
    "forecast_table",
    "history_table",
    "make_windows",
    "predict_windows",
    "run_forecast",
    "train_forecaster",
]

#: Periods of the established products' demand that the neighbour feature averages.
NEIGHBOUR_PERIODS = 8
#: Periods of history written to ``history.parquet``.
HISTORY_PERIODS = 52
_N_STATIC_BASE = 8


class ForecastOptions(BaseModel):
    """Settings of the forecaster: the demand recipe's options and a config's ``forecast:``.

    Unknown keys are errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    freq: Literal["week", "day"] = "week"  # period of the series
    horizon: int = Field(4, ge=1, le=52)  # periods forecast at once
    history_len: int = Field(16, ge=2, le=104)  # periods the encoder reads
    tasks: tuple[str, ...] = FORECAST_TASKS  # heads trained; one name = single-task
    text_dim: int = Field(0, ge=0, le=384)  # title-vector components (0: none)
    neighbours: int = Field(10, ge=0)  # similar products for new ones (needs text_dim)
    trend_threshold: float = Field(0.2, gt=0)  # log-ratio band of "flat"
    target_clip: float | None = Field(None, gt=0)  # training targets capped at this x scale
    model: dict[str, Any] = Field(default_factory=dict)  # ForecasterConfig fields
    seeds: int = Field(1, ge=1)  # models averaged (a seed ensemble)
    # reorder advice (shoprec forecast): inventory/stock.py
    lead_time_weeks: float = Field(2.0, ge=0)
    service_level: float = Field(0.9, gt=0, lt=1)
    risk_threshold: float = Field(0.5, ge=0, le=1)
    stock: Path | None = None  # CSV / Parquet: item, stock[, lead_time_weeks]

    @model_validator(mode="after")
    def _check(self) -> ForecastOptions:
        unknown = [t for t in self.tasks if t not in FORECAST_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"forecast tasks must be among {list(FORECAST_TASKS)}; got {unknown}")
        allowed = set(ForecasterConfig.__dataclass_fields__) - {
            "history_len", "horizon", "n_static", "n_future", "n_markets", "n_categories",
            "n_brands", "tasks",
        }  # fmt: skip
        bad = sorted(set(self.model) - allowed)
        if bad:
            raise ValueError(f"unknown forecast model key(s) {bad}; allowed: {sorted(allowed)}")
        periods = self.lead_time_weeks * (7 if self.freq == "day" else 1)
        if periods > self.horizon:
            raise ValueError(
                f"lead_time_weeks = {self.lead_time_weeks} is beyond the horizon of "
                f"{self.horizon} {self.freq}s; raise horizon or shorten the lead time"
            )
        return self


def forecast_options(cfg: ExperimentConfig) -> ForecastOptions:
    """The forecaster settings of a config: its ``forecast:`` section, else the demand
    recipe's options, else the defaults."""
    raw = getattr(cfg, "forecast", None)
    if raw is not None:
        opts = raw if isinstance(raw, ForecastOptions) else ForecastOptions.model_validate(raw)
    elif cfg.recipe.name == "demand":
        opts = ForecastOptions.model_validate(cfg.recipe.model_extra or {})
    else:
        opts = ForecastOptions()
    if opts.stock is not None and not opts.stock.is_absolute() and cfg.source is not None:
        opts = opts.model_copy(update={"stock": Path(cfg.source).parent / opts.stock})
    return opts


# ------------------------------------------------------------------------------ windows


@dataclass
class Windows:
    """Samples of (series, origin): the batch columns and where each row comes from.

    Attributes:
        columns: the batch (``history``, ``static``, ``future``, ids, ``scale`` and, with
            targets, ``units``, ``returns``, ``trend``).
        series: ``(B,)`` series row in the panel.
        origin: ``(B,)`` origin period index.
    """

    columns: dict[str, torch.Tensor]
    series: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.series)

    @property
    def data(self) -> TensorData:
        return TensorData(self.columns)


def neighbour_index(text: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most similar other series by title vector (cosine), ``(N, k)``; empty
    when there are no vectors."""
    n = text.shape[0]
    if text.shape[1] == 0 or k <= 0 or n < 2:
        return np.zeros((n, 0), np.int64)
    k = min(k, n - 1)
    sim = text @ text.T  # (N, N), rows L2-normalised
    np.fill_diagonal(sim, -np.inf)
    has = np.abs(text).sum(1) > 0
    sim[:, ~has] = -np.inf
    return np.argpartition(-sim, k - 1, axis=1)[:, :k].astype(np.int64)


def neighbour_level(panel: Panel, knn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per series and period, the mean demand level of its title neighbours that were
    established (sold for at least :data:`NEIGHBOUR_PERIODS` periods) at that period.

    Returns:
        ``(level, known)``, each ``(N, T)``: mean ``log1p`` units per period over the
        neighbours' last :data:`NEIGHBOUR_PERIODS` periods, and whether any neighbour counted.
    """
    n, t = panel.units.shape
    if knn.shape[1] == 0:
        return np.zeros((n, t), np.float32), np.zeros((n, t), np.float32)
    k = NEIGHBOUR_PERIODS
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(panel.units, 1)], 1)  # (N, T + 1)
    lo = np.maximum(np.arange(t) + 1 - k, 0)
    recent = (csum[:, 1:] - csum[:, lo]) / k  # (N, T) mean units of the last k periods
    level = np.log1p(recent)
    established = (np.arange(t)[None, :] - panel.first[:, None]) >= k - 1  # (N, T)
    lv = level[knn] * established[knn]  # (N, K, T)
    cnt = established[knn].sum(1)  # (N, T)
    out = np.where(cnt > 0, lv.sum(1) / np.maximum(cnt, 1), 0.0)
    return out.astype(np.float32), (cnt > 0).astype(np.float32)


@dataclass
class PanelFeatures:
    """Covariates of a panel computed once and shared by every window."""

    log_price: np.ndarray  # (N, T) standardised log price, 0 where unknown
    price_known: np.ndarray  # (N, T)
    neighbour: np.ndarray  # (N, T)
    neighbour_known: np.ndarray  # (N, T)
    use_text: bool


def panel_features(panel: Panel, opts: ForecastOptions, use_text: bool = True) -> PanelFeatures:
    """Price and neighbour covariates of every series and period."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.log(panel.price.astype(np.float64))
    known = np.isfinite(lp)
    mu, sd = (lp[known].mean(), lp[known].std() + 1e-6) if known.any() else (0.0, 1.0)
    log_price = np.where(known, (lp - mu) / sd, 0.0).astype(np.float32)
    knn = neighbour_index(panel.text, opts.neighbours if use_text else 0)
    level, nknown = neighbour_level(panel, knn)
    return PanelFeatures(log_price, known.astype(np.float32), level, nknown, use_text)


def n_static(panel: Panel, feats: PanelFeatures) -> int:
    text = panel.text.shape[1] if feats.use_text else 0
    return _N_STATIC_BASE + text


def make_windows(
    panel: Panel,
    origins: np.ndarray,
    opts: ForecastOptions,
    feats: PanelFeatures,
    *,
    targets: bool = True,
    series: np.ndarray | None = None,
    launching: bool = True,
    unsold: bool = False,
) -> Windows:
    """Samples of every series at every origin in ``origins`` (see the module docstring).

    Args:
        panel: the series.
        origins: origin period indices (the last period each sample reads).
        opts: history length, horizon, trend threshold.
        feats: :func:`panel_features` of the panel.
        targets: add ``units``, ``returns`` and ``trend`` (origins must leave ``horizon``
            periods after them).
        series: only these series rows (default all).
        launching: keep series that first sell within the horizon after the origin.
        unsold: keep series with no sale by the origin at all (forecasting new products).

    Returns:
        The :class:`Windows`.
    """
    L, H = opts.history_len, opts.horizon
    n, t_all = panel.units.shape
    rows = np.arange(n) if series is None else np.asarray(series, np.int64)
    ii, tt = np.meshgrid(rows, np.asarray(origins, np.int64), indexing="ij")
    ii, tt = ii.ravel(), tt.ravel()
    first = panel.first[ii]
    keep = first <= tt
    if launching:
        keep |= (first > tt) & (first <= tt + H)
    if unsold:
        keep |= first > tt
    ii, tt = ii[keep], tt[keep]
    b = len(ii)

    pad = np.zeros((n, L), np.float32)
    units_p = np.concatenate([pad, panel.units], 1)  # (N, L + T)
    returns_p = np.concatenate([pad, panel.returns], 1)
    hidx = tt[:, None] + 1 + np.arange(L)[None, :]  # (B, L) padded index of t-L+1..t
    period = tt[:, None] - L + 1 + np.arange(L)[None, :]  # (B, L) real index
    launched = (period >= panel.first[ii][:, None]) & (period >= 0)
    hist = units_p[ii[:, None], hidx]
    ret = returns_p[ii[:, None], hidx]
    n_obs = launched.sum(1)
    scale = 1.0 + hist.sum(1) / np.maximum(n_obs, 1)
    age = np.clip(tt - panel.first[ii] + 1, 0, 52) / 52.0
    sold_any = (hist > 0) & launched
    share = sold_any.sum(1) / np.maximum(n_obs, 1)
    last_sale = np.where(sold_any.any(1), L - 1 - np.argmax(sold_any[:, ::-1], 1), L)
    since = np.where(n_obs > 0, (L - 1 - last_sale) / L, 1.0)
    csum = np.cumsum(panel.units, 1)
    cum = np.log1p(csum[ii, tt]) / 10.0
    lp = feats.log_price[ii, tt]
    lp_prev = feats.log_price[ii, np.maximum(tt - 4, 0)]
    static = [
        age,
        share,
        since,
        lp,
        feats.price_known[ii, tt],
        lp - lp_prev,
        cum,
        feats.neighbour[ii, tt] * feats.neighbour_known[ii, tt],
    ]
    static_arr = np.stack(static, 1).astype(np.float32)
    if feats.use_text and panel.text.shape[1]:
        static_arr = np.concatenate([static_arr, panel.text[ii]], 1)
    fidx = np.minimum(tt[:, None] + 1 + np.arange(H)[None, :], panel.calendar.shape[0] - 1)
    future = panel.calendar[fidx]  # (B, H, 4)
    cols: dict[str, Any] = {
        "history": np.stack([hist / scale[:, None], ret / scale[:, None], launched], -1),
        "static": static_arr,
        "future": future,
        "market": panel.market[ii],
        "category": panel.category[ii],
        "brand": panel.brand[ii],
        "scale": scale.astype(np.float32),
    }
    if targets:
        if b and tt.max() + H > t_all - 1:
            raise ValueError("an origin leaves fewer than horizon periods for its targets")
        tidx = tt[:, None] + 1 + np.arange(H)[None, :]
        y = panel.units[ii[:, None], tidx]
        cols["units"] = y
        cols["returns"] = panel.returns[ii[:, None], tidx]
        past = units_p[ii[:, None], tt[:, None] + 1 + np.arange(L - H, L)[None, :]]
        cols["trend"] = trend_labels(past, y, opts.trend_threshold)
    return Windows(to_tensors(cols), ii, tt)


# ------------------------------------------------------------------------------ training


def _forecaster_config(
    panel: Panel, feats: PanelFeatures, opts: ForecastOptions, tasks: tuple[str, ...]
) -> ForecasterConfig:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.model.items()}
    return ForecasterConfig(
        history_len=opts.history_len,
        horizon=opts.horizon,
        n_static=n_static(panel, feats),
        n_future=panel.calendar.shape[1],
        n_markets=max(len(panel.market_names), int(panel.market.max(initial=0)) + 1),
        n_categories=len(panel.category_names) + 1,
        n_brands=len(panel.brand_names) + 1,
        tasks=tasks,
        **values,
    )


def validation_scores(
    model: DemandForecaster, windows: Windows, panel: Panel, batch_size: int = 8192
) -> dict[str, float]:
    """Validation metrics of the heads the model has, as ``<task>/<metric>`` (higher is
    better: errors are negated)."""
    pred = predict_windows(model, windows, batch_size)
    y = windows.columns["units"].numpy()
    hist = panel.units[windows.series, : int(windows.origin.max(initial=0)) + 1]
    m = forecast_metrics(
        y,
        pred.get("units", pred.get("p50", np.zeros_like(y))),
        hist,
        panel.first[windows.series],
        p50=pred.get("p50"),
        p90=pred.get("p90"),
        p_no_sale=pred.get("no_sale"),
        trend_pred=pred["trend"].argmax(1) if "trend" in pred else None,
        trend_true=windows.columns["trend"].numpy(),
    )
    out: dict[str, float] = {}
    tasks = model.config.tasks
    if "units" in tasks:
        out["units/neg_wape"] = -m["wape"]
    if "quantiles" in tasks:
        out["quantiles/neg_pinball"] = -(m["pinball50"] + m["pinball90"]) / 2
    if "no_sale" in tasks and np.isfinite(m["no_sale_auc"]):
        out["no_sale/auc"] = m["no_sale_auc"]
    if "returns" in tasks:
        r = windows.columns["returns"].numpy()
        out["returns/neg_wape"] = -float(np.abs(pred["returns"] - r).sum() / max(r.sum(), 1e-9))
    if "trend" in tasks:
        out["trend/accuracy"] = m["trend_accuracy"]
    return out


def predict_windows(
    model: DemandForecaster | list[DemandForecaster], windows: Windows, batch_size: int = 8192
) -> dict[str, np.ndarray]:
    """Forecasts in units for every window: ``units`` (mean), ``p50``, ``p90``, ``no_sale``,
    ``returns`` ``(B, H)`` and ``trend`` ``(B, 3)`` probabilities (the heads there are); a
    list of models is averaged (a seed ensemble)."""
    models = model if isinstance(model, list) else [model]
    parts: list[dict[str, np.ndarray]] = []
    for m in models:
        chunks: dict[str, list[np.ndarray]] = {}
        for batch in windows.data.batches(batch_size):
            for k, v in m.predict(batch).items():
                chunks.setdefault(k, []).append(v.numpy())
        parts.append({k: np.concatenate(v) for k, v in chunks.items()})
    avg = {k: np.mean([p[k] for p in parts], axis=0) for k in parts[0]}
    out: dict[str, np.ndarray] = {}
    for k, v in avg.items():
        if k == "quantiles":
            qs = models[0].config.quantiles
            for j, q in enumerate(qs):
                out[f"p{round(q * 100)}"] = v[..., j]
        else:
            out[k] = v
    return out


def train_forecaster(
    panel: Panel,
    origin: int,
    opts: ForecastOptions,
    train_config: TrainConfig | None = None,
    *,
    tasks: tuple[str, ...] | None = None,
    seed: int | None = None,
    use_text: bool = True,
    series: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    init: DemandForecaster | None = None,
    weighting: Any = None,
    feats: PanelFeatures | None = None,
    valid_series: np.ndarray | None = None,
) -> tuple[DemandForecaster, FitResult]:
    """Train on the data up to period ``origin`` (inclusive) with the one fit loop.

    Validation windows are the series at origin ``origin - horizon``; training windows end
    before them. The best epoch on validation is kept (the first task's main metric).

    Args:
        panel: the series.
        origin: the last period the model may learn from.
        opts: the forecaster settings.
        train_config: epochs, batch size, learning rate, patience, seed, threads.
        tasks: heads to train (default ``opts.tasks``).
        seed: overrides the train config's seed.
        use_text: read the title vectors and neighbour levels (False: the no-transfer twin).
        series: train on these series rows only (default all).
        weight: ``(N,)`` per-series sample weights (e.g. the source market's lambda).
        init: a model to start from (fine-tuning); its config must match.
        weighting: a loss-balancing strategy (:mod:`shoprec.train.weighting`).
        feats: precomputed :func:`panel_features` (recomputed when None).
        valid_series: select the epoch on these series only (default: ``series``).

    Returns:
        The trained model (eval mode) and the loop's result.
    """
    from shoprec.train.loop import TrainConfig, fit

    cfg = train_config or TrainConfig(epochs=20, batch_size=512, lr=2e-3, patience=3)
    if seed is not None:
        cfg = _replace(cfg, seed=seed)
    tasks = tuple(tasks or opts.tasks)
    feats = feats or panel_features(panel, opts, use_text)
    H = opts.horizon
    valid_origin = origin - H
    train_origins = np.arange(0, valid_origin - H + 1)
    if len(train_origins) == 0:
        raise ValueError(
            f"too little history to train: {origin + 1} periods up to the origin, and "
            f"training needs more than {2 * H} (two horizons: targets and validation)"
        )
    train = make_windows(panel, train_origins, opts, feats, series=series)
    valid = make_windows(
        panel,
        np.array([valid_origin]),
        opts,
        feats,
        series=series if valid_series is None else valid_series,
        launching=False,
    )
    if opts.target_clip is not None:  # one wholesale order must not dominate the loss
        cap = opts.target_clip * train.columns["scale"].unsqueeze(1)
        for key in ("units", "returns"):
            train.columns[key] = torch.minimum(train.columns[key], cap)
    if weight is not None:
        train.columns["weight"] = torch.as_tensor(weight[train.series], dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    model = DemandForecaster(_forecaster_config(panel, feats, opts, tasks))
    if init is not None:
        model.load_state_dict(init.state_dict())
    monitor = {
        "units": "units/neg_wape",
        "quantiles": "quantiles/neg_pinball",
        "no_sale": "no_sale/auc",
        "returns": "returns/neg_wape",
        "trend": "trend/accuracy",
    }[tasks[0]]
    cfg = _replace(cfg, monitor=monitor)
    t0 = time.perf_counter()
    result = fit(
        model,
        train.data,
        config=cfg,
        weighting=weighting,
        evaluator=lambda m: validation_scores(m, valid, panel),  # type: ignore[arg-type]
    )
    log.info(
        "forecaster %s: %d train / %d valid windows, best epoch %d (%s %.4f), %.1f s",
        "+".join(tasks),
        len(train),
        len(valid),
        result.best_epoch,
        monitor,
        result.best_score,
        time.perf_counter() - t0,
    )
    return model, result


def _replace(cfg: TrainConfig, **values: Any) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, **values)


def forecast_table(
    model: DemandForecaster | list[DemandForecaster],
    panel: Panel,
    origin: int,
    opts: ForecastOptions,
    feats: PanelFeatures | None = None,
    *,
    unsold: bool = True,
) -> pl.DataFrame:
    """Forecasts of every series from ``origin``: one row per series and horizon.

    Returns:
        The panel's key columns, ``origin, horizon, week, mean, p50, p90, p_no_sale,
        returns, trend`` (``week``: the forecast period's start).
    """
    one = model[0] if isinstance(model, list) else model
    feats = feats or panel_features(panel, opts, one.config.n_static > _N_STATIC_BASE)
    win = make_windows(panel, np.array([origin]), opts, feats, targets=False, unsold=unsold)
    pred = predict_windows(model, win)
    H = opts.horizon
    b = len(win)
    start = panel.periods[origin]
    step = panel.step
    keys = panel.keys.select(pl.all().gather(np.repeat(win.series, H)))
    trend = np.array(TREND_CLASSES)[pred["trend"].argmax(1)] if "trend" in pred else np.full(b, "")
    mean = pred.get("units", pred.get("p50"))
    zeros = np.zeros((b, H), np.float32)
    weeks = [start + step * int(h) for h in np.tile(np.arange(1, H + 1), b)]
    return keys.with_columns(
        pl.lit(start).cast(pl.Date).alias("origin"),
        pl.Series("horizon", np.tile(np.arange(1, H + 1), b), dtype=pl.Int64),
        pl.Series("week", weeks, dtype=pl.Date),
        pl.Series("mean", np.maximum(mean, 0).ravel(), dtype=pl.Float64),
        pl.Series("p50", np.maximum(pred.get("p50", mean), 0).ravel(), dtype=pl.Float64),
        pl.Series("p90", np.maximum(pred.get("p90", mean), 0).ravel(), dtype=pl.Float64),
        pl.Series("p_no_sale", pred.get("no_sale", zeros).ravel(), dtype=pl.Float64),
        pl.Series("returns", pred.get("returns", zeros).ravel(), dtype=pl.Float64),
        pl.Series("trend", np.repeat(trend, H), dtype=pl.String),
    )


def history_table(panel: Panel, periods: int = HISTORY_PERIODS) -> pl.DataFrame:
    """The last ``periods`` periods of every series with a sale: ``item, [market,] week,
    units, returns``."""
    t = panel.n_periods
    lo = max(t - periods, 0)
    n = panel.n_series
    rows = np.repeat(np.arange(n), t - lo)
    cols = np.tile(np.arange(lo, t), n)
    keep = cols >= np.minimum(panel.first[rows], t)
    rows, cols = rows[keep], cols[keep]
    return panel.keys.select(pl.all().gather(rows)).with_columns(
        pl.Series("week", [panel.periods[c] for c in cols], dtype=pl.Date),
        pl.Series("units", panel.units[rows, cols], dtype=pl.Float64),
        pl.Series("returns", panel.returns[rows, cols], dtype=pl.Float64),
    )


# ------------------------------------------------------------------------------ command


def _stock_table(
    opts: ForecastOptions, catalog: pl.DataFrame, items: pl.Series
) -> tuple[pl.DataFrame, str]:
    """Stock on hand per item: the ``stock`` file, else the catalog's, else 0 (said so)."""
    from shoprec.errors import DataError

    if opts.stock is not None:
        path = Path(opts.stock)
        if not path.exists():
            raise DataError(f"the stock file {path} does not exist (forecast.stock)")
        table = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
        missing = [c for c in ("item", "stock") if c not in table.columns]
        if missing:
            raise DataError(
                f"the stock file {path} lacks column(s) {missing}; it needs item, stock "
                "(and optionally lead_time_weeks)"
            )
        return table.with_columns(pl.col("item").cast(pl.String)), str(path)
    known = catalog.select("item", "stock").drop_nulls("stock")
    if known.height:
        return known, "catalog"
    log.warning(
        "no stock is known (no forecast.stock file, no stock in the catalog): the reorder "
        "list assumes 0 units on hand, i.e. it is the quantity to cover the lead time"
    )
    return pl.DataFrame({"item": items, "stock": np.zeros(len(items))}), "none (0 assumed)"


def run_forecast(cfg: ExperimentConfig, out: str | Path | None = None) -> Path:
    """``shoprec forecast CONFIG``: train on all the data, forecast from the last complete
    period, write ``forecast.parquet``, ``history.parquet``, ``reorder.parquet`` and
    ``forecast.json`` into ``out`` (default ``<config output>/forecast``).

    Args:
        cfg: an experiment config (the demand recipe's, or any with a ``forecast:``
            section; its ``data:`` is read).
        out: the folder to write.

    Returns:
        The folder.

    Raises:
        DataError: data without timestamps or purchases, or a bad stock file.
        InventoryError: a lead time beyond the horizon.
    """
    from shoprec.inventory.series import build_panel, load_demand
    from shoprec.inventory.stock import reorder_table

    opts = forecast_options(cfg)
    folder = Path(out) if out is not None else cfg.output_dir / "forecast"
    train_cfg = cfg.train.train_config()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    t0 = time.perf_counter()
    data = load_demand(cfg.data)
    panel = build_panel(data, freq=opts.freq, text_dim=opts.text_dim, horizon_pad=opts.horizon)
    origin = panel.n_periods - 1
    feats = panel_features(panel, opts)
    models, fits = [], []
    for s in range(opts.seeds):
        m, r = train_forecaster(
            panel, origin, opts, train_cfg, seed=train_cfg.seed + s, feats=feats
        )
        models.append(m)
        fits.append(r)
    table = forecast_table(models, panel, origin, opts, feats)
    history = history_table(panel)
    items = table["item"].unique(maintain_order=True)
    stock, stock_source = _stock_table(opts, data.catalog, items)
    reorder = reorder_table(  # stock.py keeps lead times and cover in weeks for any freq
        table,
        stock,
        lead_time_weeks=opts.lead_time_weeks,
        service_level=opts.service_level,
        risk_threshold=opts.risk_threshold,
        periods_per_week=7 if opts.freq == "day" else 1,
    )
    folder.mkdir(parents=True, exist_ok=True)
    table.write_parquet(folder / "forecast.parquet")
    history.write_parquet(folder / "history.parquet")
    reorder.write_parquet(folder / "reorder.parquet")
    valid = {
        k: float(np.mean([f.best_scores.get(k, math.nan) for f in fits]))
        for k in fits[0].best_scores
    }
    meta = {
        "model": DemandForecaster.model_name,
        "data": data.name,
        "freq": opts.freq,
        "horizon": opts.horizon,
        "origin": str(panel.periods[origin]),
        "first_period": str(panel.periods[0]),
        "series": int(panel.n_series),
        "metrics": {"valid": valid, "best_epochs": [f.best_epoch for f in fits]},
        "stock_source": stock_source,
        "at_risk": int(reorder["at_risk"].sum()),
        "config": {
            "forecast": opts.model_dump(mode="json"),
            "train": {k: v for k, v in vars(train_cfg).items() if not k.startswith("_")},
            "experiment": cfg.name,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (folder / "forecast.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    log.info("forecast of %d series from %s written to %s", panel.n_series, meta["origin"], folder)
    return folder
