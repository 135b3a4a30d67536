"""Demand series per product (and per product and market) from any table of sales events.

A shop's demand is what its ``buy`` events sold, per period; its ``return`` events are kept
apart (units sold back), never netted against sales. Everything starts from
:class:`DemandData` (daily sales per item and market, the catalog and, where known, the
stock on hand) and ends in a :class:`Panel`: one dense ``(series, periods)`` array per
quantity, zero-filled from each series' first sale to the last complete period, plus the
covariates the forecaster reads (calendar, price, product attributes, title vectors).

Sources, all through :func:`load_demand` (a config's ``data:`` section):

* any :class:`~shoprec.data.schema.Interactions` with quantities (the shop's own CSV or
  Parquet through the usual column mapping, or any built-in event dataset):
  :func:`demand_from_interactions`;
* UCI Online Retail: product = the cleaned ``Description``, non-product lines (postage,
  fees, vouchers, ...) dropped by its loader; guest lines are sales too, so the demand
  configs load it with ``include_guests: true``;
* the simulated shop: sales from its events (filled units only: a buy that met no stock is
  not a sale), launch days and stock from its ``demand.parquet``
  (:func:`demand_from_simulation`).

Weeks start on Monday. A first or last week that the data covers only partly is dropped
(Online Retail ends on Friday 2011-12-09: its last week, from 2011-12-05, would look like a
collapse in demand).

Example:
    >>> from shoprec.data.simulate import simulate_shop
    >>> data = demand_from_simulation(simulate_shop(n_events=5_000, n_users=300, n_items=80))
    >>> panel = build_panel(data, freq="week")
    >>> panel.units.shape[0] == panel.keys.height
    True
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from shoprec.data.schema import Behavior, Catalog, Dataset, Interactions
from shoprec.errors import DataError

if TYPE_CHECKING:
    from shoprec.config import DataSection
    from shoprec.data.simulate import SimulatedShop

log = logging.getLogger(__name__)

__all__ = [
    "DemandData",
    "Panel",
    "build_panel",
    "calendar_features",
    "demand_from_interactions",
    "demand_from_simulation",
    "load_demand",
    "period_sales",
    "title_vectors",
]

Freq = Literal["week", "day"]

#: Columns of :attr:`DemandData.sales`.
SALES_COLUMNS = ("item", "market", "date", "units", "returns", "revenue")


@dataclass
class DemandData:
    """Daily sales per item and market, with what is known about the items.

    Attributes:
        name: the source's name.
        sales: one row per item, market and day with any event: ``item, market, date``
            (Date), ``units`` (sold), ``returns`` (units returned), ``revenue`` (sold units x
            unit price; null prices count 0).
        catalog: ``item, title, category, brand, price, stock`` (any may be null), one row
            per item, including items that never sold.
        launch: optional ``item, launch`` (Date): when an item went on sale, for items that
            may have sold nothing in their first days (the simulator knows it).
        start, end: first and last day the data covers.
    """

    name: str
    sales: pl.DataFrame
    catalog: pl.DataFrame
    start: dt.date
    end: dt.date
    launch: pl.DataFrame | None = None

    @property
    def stock(self) -> pl.DataFrame:
        """``item, stock`` for items whose stock is known (may be empty)."""
        return self.catalog.select("item", "stock").drop_nulls("stock")

    def markets(self) -> list[str]:
        """Markets by units sold, the biggest first."""
        by = self.sales.group_by("market").agg(pl.col("units").sum()).sort(["units", "market"])
        return by["market"].reverse().to_list()


def demand_from_interactions(
    interactions: Interactions, catalog: Catalog | None = None, *, name: str = "events"
) -> DemandData:
    """Daily sales and returns per item and market from canonical events.

    ``buy`` events are sales (``quantity`` units each), ``return`` events returns; every other
    behavior is ignored. The ``domain`` column is the market.

    Args:
        interactions: events with timestamps and quantities.
        catalog: item attributes; items in it that never sold are kept (new products).
        name: the source's name.

    Returns:
        The :class:`DemandData`.

    Raises:
        DataError: no timestamps, or no ``buy`` events.
    """
    df = interactions.df
    if not interactions.has_time:
        raise DataError(
            "demand series need event timestamps; the events have none", column="timestamp"
        )
    df = df.filter(
        pl.col("behavior").is_in([Behavior.BUY.value, Behavior.RETURN.value])
        & pl.col("timestamp").is_not_null()
    )
    if df.filter(pl.col("behavior") == Behavior.BUY.value).height == 0:
        raise DataError("demand series need 'buy' events with quantities; there are none")
    is_buy = pl.col("behavior") == Behavior.BUY.value
    qty = pl.col("quantity").fill_null(1).cast(pl.Float64)
    sales = (
        df.group_by(
            "item", pl.col("domain").alias("market"), pl.col("timestamp").dt.date().alias("date")
        )
        .agg(
            pl.when(is_buy).then(qty).otherwise(0.0).sum().alias("units"),
            pl.when(is_buy).then(0.0).otherwise(qty).sum().alias("returns"),
            pl.when(is_buy).then(qty * pl.col("price").fill_null(0.0)).otherwise(0.0).sum()
            .alias("revenue"),
        )
        .sort("item", "market", "date")
    )  # fmt: skip
    ts = pl.col("timestamp")
    span = interactions.df.select(ts.min().dt.date().alias("a"), ts.max().dt.date().alias("b"))
    start, end = span.row(0)
    return DemandData(
        name=name,
        sales=sales.select(SALES_COLUMNS),
        catalog=_catalog(sales, catalog),
        start=start,
        end=end,
    )


def _catalog(sales: pl.DataFrame, catalog: Catalog | None) -> pl.DataFrame:
    """The catalog's rows plus items that sold without being in it; price filled from sales."""
    from shoprec.data.schema import CATALOG_SCHEMA

    sold = sales.group_by("item").agg(
        (pl.col("revenue").sum() / pl.col("units").sum().clip(1e-9)).alias("_price")
    )
    base = (
        catalog.df.select(list(CATALOG_SCHEMA))
        if catalog is not None
        else pl.DataFrame(schema=CATALOG_SCHEMA)
    )
    out = base.join(sold, on="item", how="full", coalesce=True)
    return (
        out.with_columns(
            pl.col("price").fill_null(pl.when(pl.col("_price") > 0).then(pl.col("_price")))
        )
        .drop("_price")
        .sort("item")
    )


def demand_from_simulation(shop: SimulatedShop) -> DemandData:
    """The simulated shop's sales (its filled buys and returns per market), launch days and
    final stock (from ``demand.parquet`` and the catalog).

    Args:
        shop: a :class:`~shoprec.data.simulate.SimulatedShop`.

    Returns:
        The :class:`DemandData`, with ``launch`` set.
    """
    ds = shop.dataset
    data = demand_from_interactions(ds.interactions, ds.catalog, name="simulated")
    launch = shop.demand.group_by("item").agg(pl.col("date").min().alias("launch"))
    start = dt.date.fromisoformat(shop.config.start)
    data.start = min(data.start, start)
    data.end = start + dt.timedelta(days=shop.config.n_days - 1)
    data.launch = launch.sort("item")
    return data


def load_demand(data: DataSection) -> DemandData:
    """The demand data a config's ``data:`` section names.

    ``dataset: simulated`` keeps the simulator's launch days and stock; every other source
    goes through the one dataset resolver (:func:`shoprec.experiment.load_dataset`) and
    :func:`demand_from_interactions`.

    Raises:
        DataError: the source cannot be read, has no timestamps or no purchases.
    """
    if data.dataset == "simulated":
        from shoprec.data.simulate import simulate_shop

        sim = data.simulate.model_dump(exclude_none=True) if data.simulate else {}
        return demand_from_simulation(simulate_shop(**sim))
    from shoprec.experiment import load_dataset

    ds = load_dataset(data)
    if not isinstance(ds, Dataset):  # pragma: no cover - load_dataset refuses tabular data
        raise DataError("demand series need events, not a tabular dataset")
    return demand_from_interactions(ds.interactions, ds.catalog, name=ds.name)


# ----------------------------------------------------------------------------- periods


def _period_start(date: pl.Expr, freq: Freq) -> pl.Expr:
    return date.dt.truncate("1w") if freq == "week" else date


def full_periods(start: dt.date, end: dt.date, freq: Freq) -> list[dt.date]:
    """Starts of the periods that ``start..end`` covers completely (weeks start Monday)."""
    if freq == "day":
        return [start + dt.timedelta(days=k) for k in range((end - start).days + 1)]
    first = start + dt.timedelta(days=(7 - start.weekday()) % 7)  # Monday on or after start
    last = end - dt.timedelta(days=(end.weekday() + 1) % 7)  # Sunday on or before end
    n = ((last - first).days + 1) // 7
    return [first + dt.timedelta(weeks=k) for k in range(max(n, 0))]


def period_sales(data: DemandData, *, freq: Freq = "week", by_market: bool = False) -> pl.DataFrame:
    """Sales per series and period, complete periods only (sparse: periods with sales).

    Args:
        data: daily sales.
        freq: ``week`` (Monday starts) or ``day``.
        by_market: one series per (item, market) instead of per item.

    Returns:
        ``item, [market,] period, units, returns, revenue``.
    """
    periods = full_periods(data.start, data.end, freq)
    keys = ["item", "market"] if by_market else ["item"]
    if not periods:
        raise DataError(
            f"the data ({data.start} .. {data.end}) covers no complete {freq}; "
            "demand series need at least one"
        )
    lo, hi = periods[0], periods[-1] + dt.timedelta(days=6 if freq == "week" else 0)
    return (
        data.sales.filter(pl.col("date").is_between(lo, hi))
        .group_by(*keys, _period_start(pl.col("date"), freq).alias("period"))
        .agg(pl.col("units").sum(), pl.col("returns").sum(), pl.col("revenue").sum())
        .sort(*keys, "period")
    )


def calendar_features(periods: np.ndarray | list[dt.date]) -> np.ndarray:
    """Calendar covariates of period starts: sine and cosine of the week of the year and of
    the day of the week.

    Args:
        periods: ``(T,)`` dates.

    Returns:
        ``(T, 4)`` float32.
    """
    s = pl.Series(list(periods), dtype=pl.Date)
    week = (s.dt.ordinal_day().to_numpy() - 1) / 365.25 * 2 * np.pi
    dow = (s.dt.weekday().to_numpy() - 1) / 7 * 2 * np.pi
    return np.stack([np.sin(week), np.cos(week), np.sin(dow), np.cos(dow)], 1).astype(np.float32)


def title_vectors(titles: list[str | None], dim: int = 16, seed: int = 0) -> np.ndarray:
    """Title vectors from the pretrained sentence encoder (:mod:`shoprec.transfer.text`,
    offline and cached), reduced to ``dim`` principal components and L2-normalised.

    Args:
        titles: ``N`` titles (None: no title, a zero vector).
        dim: components kept (at most the encoder's 384).
        seed: unused; kept for a deterministic signature.

    Returns:
        ``(N, dim)`` float32; rows of missing titles are zero.
    """
    from shoprec.transfer.text import encode_titles

    vecs = encode_titles(titles).astype(np.float64)  # (N, 384)
    has = np.array([t is not None and str(t) != "" for t in titles])
    if has.sum() < 2:
        return np.zeros((len(titles), dim), dtype=np.float32)
    centred = vecs - vecs[has].mean(0)
    _, _, vt = np.linalg.svd(centred[has], full_matrices=False)
    reduced = centred @ vt[:dim].T  # (N, dim)
    reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-9)
    reduced[~has] = 0.0
    return reduced.astype(np.float32)


# ------------------------------------------------------------------------------ panel


@dataclass
class Panel:
    """Dense demand series and their covariates.

    Attributes:
        keys: one row per series: ``item`` (and ``market`` when per market).
        periods: ``(T,)`` period starts (dates), complete periods only.
        freq: ``week`` or ``day``.
        units: ``(N, T)`` units sold (0 before a series' first sale).
        returns: ``(N, T)`` units returned.
        price: ``(N, T)`` unit price (revenue / units where sold, carried forward, the
            catalog price before; NaN when never known).
        first: ``(N,)`` index of the first period with a sale or of the launch (``T`` when
            neither is within the periods: a product that never sold).
        category, brand: ``(N,)`` integer ids (0: unknown, 1..: values in order of
            ``category_names`` / ``brand_names``).
        market: ``(N,)`` integer ids into ``market_names`` (0: the only market when not per
            market).
        text: ``(N, D)`` title vectors (``D = 0`` when off).
        calendar: ``(T + horizon_pad, 4)`` calendar covariates of the periods and of the
            periods after the last (for forecasts).
    """

    keys: pl.DataFrame
    periods: list[dt.date]
    freq: Freq
    units: np.ndarray
    returns: np.ndarray
    price: np.ndarray
    first: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    market: np.ndarray
    text: np.ndarray
    calendar: np.ndarray
    category_names: list[str] = field(default_factory=list)
    brand_names: list[str] = field(default_factory=list)
    market_names: list[str] = field(default_factory=list)

    @property
    def n_series(self) -> int:
        return self.units.shape[0]

    @property
    def n_periods(self) -> int:
        return self.units.shape[1]

    @property
    def step(self) -> dt.timedelta:
        return dt.timedelta(weeks=1) if self.freq == "week" else dt.timedelta(days=1)

    def subset(self, rows: np.ndarray) -> Panel:
        """The panel of the series at ``rows``."""
        rows = np.asarray(rows)
        kw: dict[str, Any] = {
            k: getattr(self, k)[rows]
            for k in ("units", "returns", "price", "first", "category", "brand", "market", "text")
        }
        return Panel(
            keys=self.keys.select(pl.all().gather(rows)),
            periods=self.periods,
            freq=self.freq,
            calendar=self.calendar,
            category_names=self.category_names,
            brand_names=self.brand_names,
            market_names=self.market_names,
            **kw,
        )


def _ids(values: pl.Series) -> tuple[np.ndarray, list[str]]:
    names = sorted(v for v in values.drop_nulls().unique().to_list())
    lookup = {v: k + 1 for k, v in enumerate(names)}
    ids = values.replace_strict(lookup, default=0, return_dtype=pl.Int64).to_numpy()
    return ids.astype(np.int64), names


def build_panel(
    data: DemandData,
    *,
    freq: Freq = "week",
    by_market: bool = False,
    text_dim: int = 0,
    include_unsold: bool = True,
    horizon_pad: int = 52,
) -> Panel:
    """Dense series per item (or item and market) with their covariates.

    Args:
        data: daily sales and the catalog.
        freq: ``week`` or ``day``.
        by_market: one series per (item, market) with sales.
        text_dim: title-vector components (0: no title vectors, no encoder loaded).
        include_unsold: add catalog items that never sold (per item only; their series are
            all zero and ``first`` is ``T``), so they can be forecast from similar products.
        horizon_pad: calendar rows kept after the last period (forecast weeks).

    Returns:
        The :class:`Panel`.
    """
    sales = period_sales(data, freq=freq, by_market=by_market)
    periods = full_periods(data.start, data.end, freq)
    key_cols = ["item", "market"] if by_market else ["item"]
    keys = sales.select(key_cols).unique(maintain_order=True)
    if include_unsold and not by_market:
        extra = data.catalog.select("item").join(keys, on="item", how="anti")
        keys = pl.concat([keys, extra])
    keys = keys.sort(key_cols)
    n, t = keys.height, len(periods)
    row = keys.with_row_index("_row")
    col = pl.DataFrame(
        {"period": periods, "_col": np.arange(t)}, schema_overrides={"period": pl.Date}
    )
    cells = sales.join(row, on=key_cols).join(col, on="period")
    r, c = cells["_row"].to_numpy().astype(np.int64), cells["_col"].to_numpy().astype(np.int64)
    units = np.zeros((n, t), np.float32)
    returns = np.zeros((n, t), np.float32)
    revenue = np.zeros((n, t), np.float64)
    units[r, c] = cells["units"].to_numpy()
    returns[r, c] = cells["returns"].to_numpy()
    revenue[r, c] = cells["revenue"].to_numpy()

    sold = units > 0
    first = np.where(sold.any(1), sold.argmax(1), t)
    if data.launch is not None:
        launch = keys.join(data.launch, on="item", how="left")["launch"].cast(pl.Date)
        start = periods[0] if periods else data.start
        step = 7 if freq == "week" else 1
        days = (launch - start).dt.total_days().fill_null(t * step).to_numpy()
        idx = np.floor_divide(days, step).astype(np.int64)
        first = np.minimum(first, np.clip(idx, 0, t))

    cat = keys.join(data.catalog, on="item", how="left")
    base_price = cat["price"].cast(pl.Float64).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        seen = np.where(sold, revenue / np.maximum(units, 1e-9), np.nan)
    seen[seen <= 0] = np.nan
    price = _ffill(seen, base_price)
    category, category_names = _ids(cat["category"])
    brand, brand_names = _ids(cat["brand"])
    if by_market:
        market_names = data.markets()
        lookup = {m: k for k, m in enumerate(market_names)}
        market = keys["market"].replace_strict(lookup, return_dtype=pl.Int64).to_numpy()
    else:
        market_names, market = ["all"], np.zeros(n, np.int64)
    if text_dim > 0:
        text = title_vectors(cat["title"].to_list(), dim=text_dim)
    else:
        text = np.zeros((n, 0), np.float32)
    step_td = dt.timedelta(weeks=1) if freq == "week" else dt.timedelta(days=1)
    last = periods[-1] if periods else data.end
    future = [last + step_td * (k + 1) for k in range(horizon_pad)]
    log.info(
        "%s: %d %s series over %d %s periods (%s .. %s), %.0f units sold",
        data.name,
        n,
        "item-market" if by_market else "item",
        t,
        freq,
        periods[0] if periods else None,
        periods[-1] if periods else None,
        float(units.sum()),
    )
    return Panel(
        keys=keys,
        periods=periods,
        freq=freq,
        units=units,
        returns=returns,
        price=price.astype(np.float32),
        first=first.astype(np.int64),
        category=category,
        brand=brand,
        market=np.asarray(market, np.int64),
        text=text,
        calendar=calendar_features([*periods, *future]),
        category_names=category_names,
        brand_names=brand_names,
        market_names=market_names,
    )


def _ffill(values: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Carry each row's last non-NaN value forward; before the first, ``initial``."""
    n, t = values.shape
    idx = np.where(np.isnan(values), 0, np.arange(t)[None, :])
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = values[np.arange(n)[:, None], idx]
    first_missing = np.isnan(filled)
    return np.where(first_missing, np.asarray(initial, np.float64)[:, None], filled)
