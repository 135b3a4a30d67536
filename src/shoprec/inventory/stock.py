"""Stock arithmetic on a demand forecast: lead-time demand, stock-out risk and reorder advice.

Everything here is a pure, vectorised function of a forecast table (one row per item, origin
and horizon, the columns ``shoprec forecast`` writes: ``item, origin, horizon, week, mean,
p50, p90`` and optionally ``p_no_sale``) and a stock table (``item, stock`` and optionally
``lead_time_weeks``). The recommender's stock-aware re-ranking, ``GET /inventory/reorder``
and ``reorder.parquet`` all read :func:`reorder_table`.

**The distributional assumption** (what turns a P50 and a P90 into a stock-out probability):

1. *Lead-time demand quantiles are sums of weekly quantiles.* Demand over a lead time of
   ``L`` weeks (fractional allowed) sums horizons ``1..ceil(L)`` of the latest origin, the
   last week pro-rated by the fraction of it inside the lead time: ``D50 = sum_h w_h p50_h``
   and ``D90 = sum_h w_h p90_h`` with ``w_h = clip(L - (h - 1), 0, 1)``. A sum of quantiles
   is the quantile of the sum when the weeks move together (a shop's weeks do: one trend, one
   season), and errs on the side of more safety stock when they do not. The expected demand
   ``sum_h w_h mean_h`` is exact either way.
2. *No sale at all over the lead time* has probability ``pi0 = prod_h p_no_sale_h ** w_h``
   (weeks independent given the forecast); 0 when the forecast has no ``p_no_sale``.
3. *Positive demand is lognormal*: ``P(D <= x) = pi0 + (1 - pi0) * Phi((ln x - mu) / sigma)``
   for ``x > 0`` (a hurdle lognormal). ``mu`` and ``sigma`` are fitted per item so that the
   mixture's median is ``D50`` and its 90th percentile ``D90``: with ``a = (0.5 - pi0) /
   (1 - pi0)`` and ``b = (0.9 - pi0) / (1 - pi0)``, ``sigma = ln(D90 / D50) / (z_b - z_a)``
   and ``mu = ln D50 - sigma z_a``. When the median is 0 (intermittent demand, or ``pi0 >=
   0.5``) only the P90 pins the positive part; ``sigma`` then takes ``DEFAULT_SIGMA`` and
   ``mu = ln D90 - sigma z_b``. ``pi0`` is kept below what the quantiles allow (below 0.5
   when ``D50 > 0``, below 0.9 when ``D90 > 0``). ``D90 = 0`` means no demand: ``D = 0``.

From that distribution: ``p_stockout = P(D > stock)``; the quantity that meets a service
level ``alpha`` (probability of not running out before the order arrives) is ``q_alpha``, the
mixture's ``alpha`` quantile (``q_0.9 = D90`` exactly); ``reorder_qty = ceil(max(0, q_alpha -
stock))`` whole units; ``weeks_of_cover = stock / mean weekly demand`` over all forecast
horizons (infinite when no demand is forecast); an item is ``at_risk`` when ``p_stockout``
reaches ``risk_threshold`` (default 0.5: the median lead-time demand exceeds the stock).

Example:
    >>> import polars as pl
    >>> fc = pl.DataFrame({"item": ["a", "a"], "horizon": [1, 2], "mean": [5.0, 5.0],
    ...                    "p50": [4.0, 4.0], "p90": [9.0, 9.0]})
    >>> st = pl.DataFrame({"item": ["a"], "stock": [3]})
    >>> reorder_table(fc, st, lead_time_weeks=2.0)["reorder_qty"].to_list()
    [15.0]
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from shoprec.errors import ShoprecError

logger = logging.getLogger(__name__)

#: Lognormal sigma of positive lead-time demand when only its P90 is known (median 0).
DEFAULT_SIGMA = 1.0
#: z-score of the 90th percentile of a standard normal.
Z90 = float(ndtri(0.9))

#: Columns of the table :func:`reorder_table` returns (the ``reorder.parquet`` schema).
REORDER_COLUMNS = (
    "item",
    "stock",
    "lead_time_weeks",
    "demand_p50_lead",
    "demand_p90_lead",
    "weeks_of_cover",
    "p_stockout",
    "reorder_qty",
    "at_risk",
)

_FORECAST_NEEDS = ("item", "horizon", "mean", "p50", "p90")
_EPS = 1e-9


class InventoryError(ShoprecError):
    """A forecast, stock table or inventory setting that cannot be used as asked."""


def _check_columns(frame: pl.DataFrame, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InventoryError(
            f"The {what} lacks column(s) {missing}; it has {frame.columns}. "
            f"A {what} needs {list(needed)}."
        )


def latest_origin(forecast: pl.DataFrame) -> pl.DataFrame:
    """Keep each item's rows of its latest forecast origin (all rows if there is no origin).

    Args:
        forecast: forecast rows (``item, origin, horizon, ...``).

    Returns:
        The rows whose ``origin`` is the item's latest.
    """
    if "origin" not in forecast.columns or forecast.height == 0:
        return forecast
    return forecast.filter(pl.col("origin") == pl.col("origin").max().over("item"))


def forecast_horizon(forecast: pl.DataFrame) -> int:
    """The largest horizon a forecast table covers (0 for an empty table)."""
    if forecast.height == 0:
        return 0
    return int(forecast["horizon"].max())


def check_lead_time(
    lead_time_weeks: float, horizon: float, *, where: str = "lead_time_weeks"
) -> None:
    """Refuse a negative lead time or one beyond the forecast's horizon.

    Args:
        lead_time_weeks: the lead time in weeks.
        horizon: the forecast's largest horizon in weeks.
        where: the setting's name for the message.

    Raises:
        InventoryError: when the lead time is negative, not finite, or longer than ``horizon``.
    """
    if not math.isfinite(lead_time_weeks) or lead_time_weeks < 0:
        raise InventoryError(f"{where} must be a number of weeks >= 0, got {lead_time_weeks!r}.")
    if lead_time_weeks > horizon:
        raise InventoryError(
            f"{where} = {lead_time_weeks} weeks is beyond the forecast's horizon of {horizon} "
            f"weeks; use a lead time of at most {horizon} weeks or forecast further ahead "
            "(the forecaster's horizon setting)."
        )


def lead_time_demand(
    forecast: pl.DataFrame, lead_time: pl.DataFrame | float, *, periods_per_week: int = 1
) -> pl.DataFrame:
    """Expected demand, P50, P90 and P(no sale) over each item's lead time.

    Uses each item's latest origin. Horizons ``1..ceil(L)`` are summed with weights
    ``clip(L - (h - 1), 0, 1)`` (see the module docstring for why quantiles may be summed),
    ``L`` the lead time in forecast periods (weeks x ``periods_per_week``).

    Args:
        forecast: forecast rows with ``item, horizon, mean, p50, p90`` (``origin`` and
            ``p_no_sale`` optional).
        lead_time: one lead time in weeks for every item, or a frame ``item,
            lead_time_weeks`` (items it lacks get none: drop them before or join a default).
        periods_per_week: forecast periods in a week (1 for weekly, 7 for daily forecasts).

    Returns:
        One row per item: ``item, lead_time_weeks, demand_mean_lead, demand_p50_lead,
        demand_p90_lead, p_no_sale_lead, mean_weekly`` (``mean_weekly``: the mean of
        ``mean`` over all horizons, per week, for weeks of cover).

    Raises:
        InventoryError: a missing column, a negative lead time or one beyond the horizon.
    """
    _check_columns(forecast, _FORECAST_NEEDS, "forecast")
    fc = latest_origin(forecast)
    ppw = int(periods_per_week)
    horizon = forecast_horizon(fc) / ppw if fc.height else math.inf  # in weeks
    if isinstance(lead_time, pl.DataFrame):
        _check_columns(lead_time, ("item", "lead_time_weeks"), "lead-time table")
        lt = lead_time.select("item", pl.col("lead_time_weeks").cast(pl.Float64))
        bad = lt.filter(
            pl.col("lead_time_weeks").is_null()
            | ~pl.col("lead_time_weeks").is_finite()
            | (pl.col("lead_time_weeks") < 0)
            | (pl.col("lead_time_weeks") > horizon)
        )
        if bad.height:
            row = bad.row(0, named=True)
            check_lead_time(
                float("nan") if row["lead_time_weeks"] is None else row["lead_time_weeks"],
                horizon,
                where=f"lead_time_weeks of item {row['item']!r}",
            )
        fc = fc.join(lt, on="item", how="inner")
    else:
        check_lead_time(float(lead_time), horizon)
        fc = fc.with_columns(pl.lit(float(lead_time)).alias("lead_time_weeks"))
    has_zero = "p_no_sale" in fc.columns
    w = (pl.col("lead_time_weeks") * ppw - (pl.col("horizon") - 1)).clip(0.0, 1.0)
    log_p0 = (
        (w * pl.col("p_no_sale").cast(pl.Float64).clip(_EPS, 1.0).log()).sum()
        if has_zero
        else pl.lit(-np.inf)
    )
    return (
        fc.group_by("item", maintain_order=True)
        .agg(
            pl.col("lead_time_weeks").first(),
            (w * pl.col("mean")).sum().alias("demand_mean_lead"),
            (w * pl.col("p50").clip(0.0)).sum().alias("demand_p50_lead"),
            (w * pl.col("p90").clip(0.0)).sum().alias("demand_p90_lead"),
            log_p0.exp().alias("p_no_sale_lead"),
            (pl.col("mean").clip(0.0).mean() * ppw).alias("mean_weekly"),
        )
        .with_columns(
            # P90 below P50 (a quantile crossing in the forecast) is read as P90 = P50.
            pl.max_horizontal("demand_p50_lead", "demand_p90_lead").alias("demand_p90_lead"),
            pl.when(pl.col("lead_time_weeks") > 0)
            .then(pl.col("p_no_sale_lead"))
            .otherwise(1.0)
            .alias("p_no_sale_lead"),
        )
    )


def _fit(
    p50: np.ndarray, p90: np.ndarray, p_zero: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per item: (pi0, mu, sigma, no_demand) of the hurdle lognormal through P50 and P90."""
    p50 = np.maximum(np.asarray(p50, dtype=np.float64), 0.0)
    p90 = np.maximum(np.asarray(p90, dtype=np.float64), p50)
    pi0 = np.zeros_like(p50) if p_zero is None else np.clip(np.asarray(p_zero, np.float64), 0, 1)
    no_demand = p90 <= _EPS
    has_median = p50 > _EPS
    # The quantiles outrank p_no_sale: P50 > 0 means P(D = 0) < 0.5, P90 > 0 means < 0.9.
    pi0 = np.where(has_median, np.minimum(pi0, 0.5 - 1e-3), np.minimum(pi0, 0.9 - 1e-3))
    z_a = ndtri(np.clip((0.5 - pi0) / (1.0 - pi0), 1e-12, 1 - 1e-12))
    z_b = ndtri((0.9 - pi0) / (1.0 - pi0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_two = np.log(p90 / p50) / (z_b - z_a)
    sigma = np.where(has_median, np.maximum(np.nan_to_num(sigma_two, nan=0.0), 0.0), DEFAULT_SIGMA)
    safe90 = np.where(no_demand, 1.0, p90)
    mu = np.log(safe90) - sigma * z_b
    return pi0, mu, sigma, no_demand


def stockout_probability(
    stock: np.ndarray, p50: np.ndarray, p90: np.ndarray, p_zero: np.ndarray | None = None
) -> np.ndarray:
    """P(lead-time demand > stock) under the hurdle lognormal through P50 and P90.

    Args:
        stock: (N,) units on hand (negative counts as 0).
        p50: (N,) median lead-time demand.
        p90: (N,) 90th percentile of lead-time demand.
        p_zero: (N,) P(no sale over the lead time), or None for 0.

    Returns:
        (N,) probabilities in [0, 1].

    Example:
        >>> p = stockout_probability(np.array([4.0]), np.array([4.0]), np.array([9.0]))
        >>> round(float(p[0]), 6)
        0.5
    """
    return _exceed(stock, *_fit(p50, p90, p_zero))


def _exceed(
    stock: np.ndarray, pi0: np.ndarray, mu: np.ndarray, sigma: np.ndarray, no_demand: np.ndarray
) -> np.ndarray:
    """P(D > stock) of fitted hurdle lognormals (:func:`_fit`'s output)."""
    stock = np.maximum(np.asarray(stock, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore"):
        log_s = np.log(stock)  # -inf at 0: P(positive demand > 0) = 1
    point = sigma <= _EPS  # P50 == P90 with P(D = 0) = 0: all mass at exp(mu)
    safe_sigma = np.where(point, 1.0, sigma)
    above = np.where(point, (log_s < mu).astype(np.float64), 1.0 - ndtr((log_s - mu) / safe_sigma))
    return np.where(no_demand, 0.0, (1.0 - pi0) * above)


def service_quantity(
    level: float, p50: np.ndarray, p90: np.ndarray, p_zero: np.ndarray | None = None
) -> np.ndarray:
    """The lead-time demand quantile at a service level (the stock that covers it).

    Args:
        level: the service level in (0, 1): P(no stock-out before the order arrives).
        p50: (N,) median lead-time demand.
        p90: (N,) 90th percentile of lead-time demand.
        p_zero: (N,) P(no sale over the lead time), or None for 0.

    Returns:
        (N,) units; at ``level = 0.9`` exactly ``max(p50, p90)``.

    Raises:
        InventoryError: when ``level`` is not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise InventoryError(f"service_level must be strictly between 0 and 1, got {level!r}.")
    pi0, mu, sigma, no_demand = _fit(p50, p90, p_zero)
    frac = np.clip((level - pi0) / (1.0 - pi0), 1e-12, 1.0 - 1e-12)
    q = np.exp(mu + sigma * ndtri(frac))
    return np.where(no_demand | (level <= pi0), 0.0, q)


def reorder_table(
    forecast: pl.DataFrame,
    stock: pl.DataFrame | Mapping[str, float],
    *,
    lead_time_weeks: float = 2.0,
    service_level: float = 0.9,
    risk_threshold: float = 0.5,
    periods_per_week: int = 1,
) -> pl.DataFrame:
    """Reorder advice per item: lead-time demand, cover, stock-out risk and quantity to order.

    Items in the forecast but not in ``stock`` are left out (their stock is unknown); items
    in ``stock`` but not in the forecast too (no forecast, no advice).

    Args:
        forecast: forecast rows (``item, horizon, mean, p50, p90``; ``origin``, ``p_no_sale``
            optional); the latest origin of each item is used.
        stock: a frame ``item, stock`` (and optionally ``lead_time_weeks``, null = the
            default) or a mapping item -> units.
        lead_time_weeks: the lead time for items without their own, in weeks (>= 0, at most
            the forecast's horizon).
        service_level: P(no stock-out before a reorder arrives) the quantity aims for.
        risk_threshold: ``p_stockout`` at or above which an item is ``at_risk``.
        periods_per_week: forecast periods in a week (7 for a daily forecast); lead times
            and weeks of cover stay in weeks.

    Returns:
        The :data:`REORDER_COLUMNS`, sorted: at-risk first, then by ``p_stockout`` and
        ``reorder_qty`` descending, then item.

    Raises:
        InventoryError: missing columns, negative stock, a bad lead time or service level.
    """
    if not 0.0 <= risk_threshold <= 1.0:
        raise InventoryError(f"risk_threshold must be in [0, 1], got {risk_threshold!r}.")
    if not 0.0 < service_level < 1.0:
        raise InventoryError(
            f"service_level must be strictly between 0 and 1, got {service_level!r}."
        )
    if isinstance(stock, Mapping):
        stock = pl.DataFrame(
            {"item": list(stock.keys()), "stock": [float(v) for v in stock.values()]},
            schema={"item": pl.String, "stock": pl.Float64},
        )
    _check_columns(stock, ("item", "stock"), "stock table")
    st = stock.with_columns(pl.col("item").cast(pl.String), pl.col("stock").cast(pl.Float64))
    negative = st.filter(pl.col("stock").is_null() | (pl.col("stock") < 0))
    if negative.height:
        row = negative.row(0, named=True)
        raise InventoryError(
            f"Stock must be a number of units >= 0; item {row['item']!r} has {row['stock']!r}."
        )
    _check_columns(forecast, _FORECAST_NEEDS, "forecast")
    # An empty forecast bounds no lead time (it gives an empty table).
    horizon = (
        forecast_horizon(latest_origin(forecast)) / periods_per_week
        if forecast.height
        else math.inf
    )
    check_lead_time(float(lead_time_weeks), horizon)
    default_lt = pl.lit(float(lead_time_weeks))
    if "lead_time_weeks" in st.columns:
        lt_col = pl.col("lead_time_weeks").cast(pl.Float64).fill_null(default_lt)
    else:
        lt_col = default_lt
    st = st.select("item", "stock", lt_col.alias("lead_time_weeks"))
    fc = forecast.with_columns(pl.col("item").cast(pl.String))
    demand = lead_time_demand(
        fc, st.select("item", "lead_time_weeks"), periods_per_week=periods_per_week
    )
    table = demand.join(st.select("item", "stock"), on="item", how="inner")
    s = table["stock"].to_numpy()
    p50 = table["demand_p50_lead"].to_numpy()
    p90 = table["demand_p90_lead"].to_numpy()
    p0 = table["p_no_sale_lead"].to_numpy()
    p_out = stockout_probability(s, p50, p90, p0)
    need = service_quantity(service_level, p50, p90, p0)
    weekly = table["mean_weekly"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(weekly > _EPS, s / np.maximum(weekly, _EPS), np.inf)
    out = table.with_columns(
        pl.Series("weeks_of_cover", cover, dtype=pl.Float64),
        pl.Series("p_stockout", p_out, dtype=pl.Float64),
        # 1e-9 absorbs float noise so that 9.000000001 - 3 orders 6 units, not 7.
        pl.Series("reorder_qty", np.maximum(np.ceil(need - s - 1e-9), 0.0), dtype=pl.Float64),
        pl.Series("at_risk", p_out >= risk_threshold, dtype=pl.Boolean),
    )
    return out.select(REORDER_COLUMNS).sort(
        ["at_risk", "p_stockout", "reorder_qty", "item"],
        descending=[True, True, True, False],
    )


# --------------------------------------------------------------------- a served forecast

#: Files of a forecast folder (``shoprec forecast`` writes them; only the first is required).
FORECAST_FILES = ("forecast.parquet", "history.parquet", "reorder.parquet", "forecast.json")
#: Weeks of cover reported for an item with stock and no forecast demand (instead of inf).
MAX_COVER_WEEKS = 1000.0


@dataclass(frozen=True)
class ForecastTables:
    """The output of ``shoprec forecast`` as read back for serving.

    Attributes:
        directory: the folder it was read from.
        forecast: ``forecast.parquet`` (item, origin, horizon, week, mean, p50, p90, ...).
        history: ``history.parquet`` (item, week, units, returns), or None if absent.
        reorder: ``reorder.parquet`` (:data:`REORDER_COLUMNS`), or None if absent.
        meta: ``forecast.json`` (model, horizon, origin, metrics, config), ``{}`` if absent.
    """

    directory: Path
    forecast: pl.DataFrame
    history: pl.DataFrame | None
    reorder: pl.DataFrame | None
    meta: dict[str, Any]

    @property
    def horizon(self) -> int:
        """The forecast's horizon in periods (``forecast.json``'s, else the table's largest)."""
        h = self.meta.get("horizon")
        return int(h) if isinstance(h, int | float) and h > 0 else forecast_horizon(self.forecast)

    @property
    def periods_per_week(self) -> int:
        """7 for a daily forecast (``forecast.json``'s ``freq: day``), else 1."""
        return 7 if self.meta.get("freq") == "day" else 1

    @property
    def latest(self) -> pl.DataFrame:
        """Each item's rows of its latest origin."""
        return latest_origin(self.forecast)


def load_forecast(directory: str | Path) -> ForecastTables:
    """Read a forecast folder (``forecast.parquet`` required; the other files optional).

    Args:
        directory: a folder ``shoprec forecast`` wrote.

    Raises:
        InventoryError: no ``forecast.parquet`` there, or a file lacks its columns.
    """
    d = Path(directory)
    path = d / "forecast.parquet"
    if not path.is_file():
        raise InventoryError(
            f"No forecast in {d}: {path.name} is missing. Run `shoprec forecast CONFIG --out "
            f"{d}` first, or point serve.forecast at the folder it wrote."
        )
    try:
        fc = pl.read_parquet(path)
        history = (
            pl.read_parquet(d / "history.parquet") if (d / "history.parquet").is_file() else None
        )
        reorder = (
            pl.read_parquet(d / "reorder.parquet") if (d / "reorder.parquet").is_file() else None
        )
        meta_path = d / "forecast.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (OSError, pl.exceptions.PolarsError, json.JSONDecodeError) as e:
        raise InventoryError(f"Cannot read the forecast in {d}: {e}") from e
    _check_columns(fc, _FORECAST_NEEDS, f"forecast {path}")
    fc = fc.with_columns(pl.col("item").cast(pl.String))
    if history is not None:
        _check_columns(history, ("item", "week", "units"), f"history {d / 'history.parquet'}")
        history = history.with_columns(pl.col("item").cast(pl.String))
    if reorder is not None:
        _check_columns(reorder, ("item", "stock"), f"reorder list {d / 'reorder.parquet'}")
        reorder = reorder.with_columns(pl.col("item").cast(pl.String))
    logger.info("forecast %s: %d items, horizon %d", d, fc["item"].n_unique(), forecast_horizon(fc))
    return ForecastTables(d, fc, history, reorder, meta if isinstance(meta, dict) else {})


class StockSignals:
    """Per catalog position: lead-time demand from a forecast, and the stock signals the
    recommender re-ranks by (``stock``, ``weeks_of_cover``, ``p_stockout``) for live stock.

    The lead-time demand (P50, P90, P(no sale)) and the mean weekly demand are computed once
    per forecast; ``p_stockout`` and ``weeks_of_cover`` are recomputed per request from the
    stock levels of that moment (a few vectorised operations over the candidates).

    Args:
        tables: the loaded forecast.
        ids: the catalog's item ids by position.
        lead_time_weeks: the lead time for items without their own (``reorder.parquet``'s
            ``lead_time_weeks`` column, where present, sets per-item lead times).

    Raises:
        InventoryError: a lead time that is negative or beyond the forecast's horizon.
    """

    def __init__(
        self, tables: ForecastTables, ids: list[str], *, lead_time_weeks: float = 2.0
    ) -> None:
        self.tables = tables
        self.lead_time_weeks = float(lead_time_weeks)
        fc = tables.latest
        ppw = tables.periods_per_week
        check_lead_time(self.lead_time_weeks, forecast_horizon(fc) / ppw if fc.height else math.inf)
        items = fc.select(pl.col("item").unique())
        lt = items.with_columns(pl.lit(self.lead_time_weeks).alias("lead_time_weeks"))
        rt = tables.reorder
        if rt is not None and "lead_time_weeks" in rt.columns:
            own = rt.select("item", pl.col("lead_time_weeks").cast(pl.Float64).alias("own"))
            lt = (
                lt.join(own, on="item", how="left")
                .with_columns(pl.coalesce("own", "lead_time_weeks").alias("lead_time_weeks"))
                .drop("own")
            )
        demand = lead_time_demand(fc, lt, periods_per_week=ppw)
        n = len(ids)
        pos = pl.DataFrame(
            {"item": ids, "_pos": np.arange(n)}, schema={"item": pl.String, "_pos": pl.Int64}
        )
        aligned = pos.join(demand, on="item", how="left").sort("_pos")
        self.has_forecast = aligned["demand_p50_lead"].is_not_null().to_numpy()
        self.p50 = aligned["demand_p50_lead"].fill_null(0.0).to_numpy()
        self.p90 = aligned["demand_p90_lead"].fill_null(0.0).to_numpy()
        self.p_zero = aligned["p_no_sale_lead"].fill_null(1.0).to_numpy()
        self._fitted = _fit(self.p50, self.p90, self.p_zero)  # per item, fixed per forecast
        self.weekly = aligned["mean_weekly"].fill_null(0.0).to_numpy()
        self.lead = aligned["lead_time_weeks"].fill_null(self.lead_time_weeks).to_numpy()
        # a reorder list made without any stock (``shoprec forecast`` assumed 0 on hand) says
        # nothing about stock: taking its zeros would mark every product out of stock
        assumed = str(tables.meta.get("stock_source", "")).startswith("none")
        if rt is not None and not assumed:
            st = pos.join(
                rt.select("item", pl.col("stock").cast(pl.Float64)), on="item", how="left"
            )
            self.forecast_stock = st.sort("_pos")["stock"].fill_null(np.nan).to_numpy()
        else:
            self.forecast_stock = np.full(n, np.nan)

    def _pad(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions within the arrays (products added after the forecast have none)."""
        positions = np.asarray(positions, dtype=np.int64)
        inside = positions < len(self.p50)
        return np.where(inside, positions, 0), inside

    def signals(self, positions: np.ndarray, stock: np.ndarray) -> dict[str, np.ndarray]:
        """``stock``, ``weeks_of_cover`` and ``p_stockout`` of the items at ``positions``.

        Args:
            positions: ``(C,)`` catalog positions.
            stock: ``(C,)`` their stock levels now (negative = unknown).

        Returns:
            Three ``(C,)`` float arrays; NaN where the stock is unknown (and, for the last
            two, where the item has no forecast). Weeks of cover are capped at
            :data:`MAX_COVER_WEEKS`.
        """
        p, inside = self._pad(positions)
        known = (np.asarray(stock) >= 0) & inside & self.has_forecast[p]
        s = np.where(np.asarray(stock) >= 0, np.asarray(stock, dtype=np.float64), np.nan)
        pi0, mu, sigma, none = (a[p] for a in self._fitted)
        p_out = _exceed(np.nan_to_num(s), pi0, mu, sigma, none)
        weekly = self.weekly[p]
        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.where(weekly > _EPS, s / np.maximum(weekly, _EPS), MAX_COVER_WEEKS)
        return {
            "stock": s,
            "weeks_of_cover": np.where(known, np.minimum(cover, MAX_COVER_WEEKS), np.nan),
            "p_stockout": np.where(known, p_out, np.nan),
        }

    def demand(self, position: int) -> dict[str, float] | None:
        """Lead time and lead-time demand of one item (None without a forecast)."""
        p, inside = self._pad(np.array([position]))
        if not inside[0] or not self.has_forecast[p[0]]:
            return None
        i = int(p[0])
        return {
            "lead_time_weeks": float(self.lead[i]),
            "demand_p50_lead": float(self.p50[i]),
            "demand_p90_lead": float(self.p90[i]),
            "p_no_sale_lead": float(self.p_zero[i]),
            "mean_weekly": float(self.weekly[i]),
        }


class NoForecastError(InventoryError):
    """Asked for forecasts or reorder advice while no forecast is loaded."""


class NoItemForecastError(InventoryError):
    """The forecast has no rows for the item asked for."""


@dataclass
class ItemForecast:
    """One item's history, forecast band and reorder advice (``GET /forecast/{item}``).

    Attributes:
        item: the item id.
        origin: the forecast's origin (the last week of data it saw), or None.
        horizon: weeks ahead shown.
        trend: down / flat / up from the forecaster's trend head, or None.
        history: ``{week, units, returns}`` rows, oldest first (up to 52 weeks).
        forecast: ``{week, horizon, mean, p50, p90, p_no_sale, returns}`` rows by horizon.
        reorder: the item's :func:`reorder_table` row at its live stock (None: stock unknown).
    """

    item: str
    origin: Any
    horizon: int
    trend: str | None
    history: list[dict[str, Any]]
    forecast: list[dict[str, Any]]
    reorder: dict[str, Any] | None


def item_forecast(
    tables: ForecastTables,
    item: str,
    stock: float | None,
    *,
    horizon: int | None = None,
    lead_time_weeks: float | None = None,
    default_lead_time_weeks: float = 2.0,
    service_level: float = 0.9,
    risk_threshold: float = 0.5,
    history_weeks: int = 52,
) -> ItemForecast:
    """One item's history, forecast up to ``horizon`` and reorder advice at ``stock``.

    Args:
        tables: the loaded forecast.
        item: the item id.
        stock: its stock now (None: unknown, no reorder advice).
        horizon: weeks ahead to show (default: all the forecast has).
        lead_time_weeks: the lead time (default: the item's own from ``reorder.parquet``,
            else ``default_lead_time_weeks``).
        default_lead_time_weeks: the lead time of an item without its own.
        service_level: as :func:`reorder_table`.
        risk_threshold: as :func:`reorder_table`.
        history_weeks: weeks of history to show.

    Raises:
        InventoryError: no forecast for the item, a horizon beyond the forecast's, or a bad
            lead time or service level.
    """
    rows = tables.latest.filter(pl.col("item") == item).sort("horizon")
    if rows.height == 0:
        raise NoItemForecastError(
            f"No forecast for item {item!r} in {tables.directory} (it had no sales in the "
            "data the forecast was made from, or it was added later)."
        )
    h_max = int(rows["horizon"].max())
    if horizon is not None and not 1 <= horizon <= h_max:
        raise InventoryError(
            f"horizon = {horizon} weeks is beyond the forecast's {h_max} weeks (ask for 1 to "
            f"{h_max}, or forecast further ahead with the forecaster's horizon setting)."
        )
    shown = rows.filter(pl.col("horizon") <= (horizon or h_max))
    cols = [
        c
        for c in ("week", "horizon", "mean", "p50", "p90", "p_no_sale", "returns")
        if c in shown.columns
    ]
    history: list[dict[str, Any]] = []
    if tables.history is not None:
        hist = tables.history.filter(pl.col("item") == item).sort("week").tail(history_weeks)
        keep = [c for c in ("week", "units", "returns") if c in hist.columns]
        history = hist.select(keep).to_dicts()
    lead = lead_time_weeks
    if lead is None and tables.reorder is not None and "lead_time_weeks" in tables.reorder.columns:
        own = tables.reorder.filter(pl.col("item") == item)["lead_time_weeks"]
        lead = float(own[0]) if own.len() and own[0] is not None else None
    lead = default_lead_time_weeks if lead is None else float(lead)
    advice = None
    if stock is not None and stock >= 0:
        table = reorder_table(
            rows, {item: float(stock)}, lead_time_weeks=lead, service_level=service_level,
            risk_threshold=risk_threshold, periods_per_week=tables.periods_per_week,
        )  # fmt: skip
        advice = table.row(0, named=True) if table.height else None
    else:
        check_lead_time(lead, h_max / tables.periods_per_week)
    first = rows.row(0, named=True)
    return ItemForecast(
        item=item,
        origin=first.get("origin"),
        horizon=int(horizon or h_max),
        trend=first.get("trend"),
        history=history,
        forecast=shown.select(cols).to_dicts(),
        reorder=advice,
    )
