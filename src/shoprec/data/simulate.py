"""A seeded simulated shop with planted, known structure: a test bed for every later stage.

:func:`simulate_shop` returns a :class:`SimulatedShop`: a canonical :class:`Dataset` (events,
catalog, users), the planted ground truth (:class:`SimTruth`) and a daily demand/stock table.
Everything is vectorised NumPy and Polars; one million events take a few seconds.

Planted structure
-----------------
**Markets.** ``n_markets`` markets named ``market_0 .. market_{M-1}``. ``market_0`` is the big
source market (``source_market_share`` of the users, default 60%); the others split the rest
with weights ``1, 1/2, 1/3, ...``. Each event's ``domain`` is the market it happened in.

**Items.** Each item has a category, a brand (mostly from brands whose home category it is), a
price and a title. Prices are lognormal: ``log price = category level + brand premium +
N(0, 0.35^2)``. Titles read ``"<Brand> <adjective> <colour/material> <noun>"``; the noun is one
of the category's nouns, adjective and colour/material are drawn from category-specific
(Dirichlet) distributions, so title words correlate with the category. Each item's latent
vector is a function of its content plus small noise::

    v_i = E_cat[c_i] + E_brand[b_i] + (E_word[adj_i] + E_word[colour_i] + E_word[noun_i]) / 3
          + w_price * z(log price_i) + N(0, item_noise^2 I)

so a new item's appeal can be predicted from its content alone (``SimTruth.item_content_factors``
is the noise-free part).

Each item has a home market (by market size); a share ``shared_item_share`` is sold in every
market, the rest only at home. A share ``new_item_share`` are *new items*: their launch day is
uniform in the last ``new_item_window`` of the time range and they get no events before it
(plus a novelty boost in exposure that decays with ``novelty_days``). Items also have an
exposure popularity (lognormal) and a one-dimensional "fit" value.

**Shared and market-specific tastes** (``taste_overlap`` = rho in [0, 1]). Each market ``m``
also has a market-specific taste ``s_u^m`` per user and factor ``w_i^m`` per item, drawn like
``taste_u`` and ``v_i`` (their own age and gender embeddings, content map and item noise; no
home-market shift, its variance goes into the noise). A user's affinity to an item in market
``m`` adds the two parts::

    affinity = sqrt(rho) taste_u . v_i + sqrt(1 - rho) s_u^m . w_i^m     (then standardised)

which is the dot product of ``[rho^1/4 taste_u, (1 - rho)^1/4 s_u^m]`` (``SimTruth.
market_user_taste``) and ``[rho^1/4 v_i, (1 - rho)^1/4 w_i^m]`` (``market_item_factors``).
The two parts have the same distribution, so a (user, item) pair's affinity has correlation
``rho`` between two markets (in expectation over worlds; one world's value scatters by about
0.1): at 0 nothing a shopper does in one market says anything about their taste in another
(the control where transfer cannot help), at 1 (the default) every market uses ``taste_u . v_i``
as above. Within a market, content still predicts the factor (up to the item noise).
Popularity differs by market to a set degree too (``popularity_overlap``): an item's log
exposure popularity in market ``m`` is ``sqrt(q) log pop_i + sqrt(1 - q) N(0, sigma^2)``
(``SimTruth.market_item_popularity``), so a big market's bestsellers need not sell elsewhere.

**Users.** ``taste_u = market shift[home] + E_age[age band] + E_gender[gender] + N(0, I)``, so
age band, gender and home market all carry information about taste. Users have a lognormal
activity (how many exposures they get) and a "fit" value. A share ``shared_user_share`` also
shop in a second market, where ``second_market_activity`` of their exposures happen.

**Exposures.** An exposure is (user, market, time, item). Time: the day follows a linear trend
(``growth``) with weekly seasonality (``weekly_amplitude``, peak on Sundays); the hour follows a
fixed daily profile (evening peak). Item: ``n_candidates`` candidates are drawn from the
market's items in proportion to popularity (alias method); among those already launched one is
picked with probability ``~ exp(affinity / temperature) * novelty`` (Gumbel-max), so exposure
itself is biased toward items the user likes (as a real recommender's logs are).

**Funnel.** ``affinity = (taste_u . v_i - mean) / std`` (standardised over random pairs),
``mismatch = |fit_u - fit_i| - E|.|``. Each stage happens with probability::

    p_s = sigmoid(intercept_s + market_offset[m, s]
                  + signal_strength * (a_s * affinity + b_s * z(log price) + c_s * mismatch))

conditional on its parent stage: ``impression -> view -> click -> cart -> buy -> return``, with
``favorite`` a side branch of ``click``. Slopes ``(a, b, c)`` are in :data:`STAGE_SLOPES`:
affinity drives the early stages most, buying depends more on price, returns mostly on the
mismatch (and less on affinity). Each ``intercept_s`` is calibrated on a pilot sample of
exposures so that the share of parent events that go on to stage ``s`` is its configured
``<stage>_rate`` (e.g. ~30% of views are clicked); ``market_offset`` then moves the target
markets' rates away from the source market's. With ``impressions=False`` (default) the
exposure *is* the view and no impression events are written. A buy's quantity is
``1 + Poisson(quantity_base * exp(-0.7 z(log price)))`` (more units of cheap items); a return
returns the whole quantity.
Each stage comes strictly after its parent (seconds to minutes; returns 1 day + Exp(6 days)
after the buy); events after the end of the range are dropped.

**Stock and demand.** Each item starts with stock for ``stock_cover_days`` of its (noisily
planned, ``stock_plan_error``) daily demand and follows an (s, S) policy: when stock plus
stock on order falls to ``reorder_point_days`` of planned demand, it reorders up to the target;
orders arrive ``lead_time_days`` later. Buys are filled in time order within each day; a buy
that finds too little stock is filled partially or, with none left, dropped (with its return):
those units are ``lost_sales``. Returned units are not restocked. ``demand`` is one row per
item and day from its launch: units sold, lost sales, stock at the start of the day (after
arrivals) and a stockout flag.

Ids are ``u<index>`` and ``i<index>``; the index is the row in every :class:`SimTruth` array
(:func:`id_index` maps ids back).

Example:
    >>> shop = simulate_shop(n_users=500, n_items=200, n_events=5_000, seed=1)
    >>> shop.dataset.interactions.df.columns
    ['user', 'item', 'timestamp', 'behavior', 'quantity', 'price', 'domain']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shoprec.data.schema import Behavior, Catalog, Dataset, Interactions, Users

logger = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "STAGE_FEATURES",
    "STAGE_SLOPES",
    "SimConfig",
    "SimTruth",
    "SimulatedShop",
    "id_index",
    "simulate_shop",
    "summarize_written",
    "write_shop",
]

MS_PER_DAY = 86_400_000
_CHUNK = 1 << 16  # exposures per vectorised chunk; fixed so results never depend on it
_PILOT = 20_000  # exposures simulated to estimate events per exposure

#: Funnel stages with planted probabilities, each conditional on its parent.
STAGES: tuple[str, ...] = ("view", "click", "favorite", "cart", "buy", "return")
_PARENT = {"view": "impression", "click": "view", "favorite": "click", "cart": "click",
           "buy": "cart", "return": "buy"}  # fmt: skip
#: Columns of :attr:`SimTruth.stage_coef`.
STAGE_FEATURES: tuple[str, ...] = ("intercept", "affinity", "log_price", "mismatch")
#: Planted slopes (affinity, z(log price), mismatch) of each stage's logit.
STAGE_SLOPES: dict[str, tuple[float, float, float]] = {
    "view": (0.8, -0.1, 0.0),
    "click": (1.0, -0.2, 0.0),
    "favorite": (0.8, 0.1, 0.0),
    "cart": (0.7, -0.4, 0.0),
    "buy": (0.4, -0.9, 0.0),
    "return": (-0.4, 0.3, 1.2),
}
_MISMATCH_MEAN = 2.0 / math.sqrt(math.pi)  # E|a - b| for a, b ~ N(0, 1)
_QTY_PRICE_SLOPE = 0.7

# Event codes, in funnel order (ties in time are broken by this order).
_BEHAVIORS: tuple[str, ...] = (
    Behavior.IMPRESSION.value,
    Behavior.VIEW.value,
    Behavior.CLICK.value,
    Behavior.FAVORITE.value,
    Behavior.CART.value,
    Behavior.BUY.value,
    Behavior.RETURN.value,
)
_CODE = {b: k for k, b in enumerate(_BEHAVIORS)}

_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apparel", ("shirt", "dress", "jacket", "sweater")),
    ("shoes", ("sneakers", "boots", "sandals", "loafers")),
    ("electronics", ("headphones", "speaker", "charger", "camera")),
    ("home", ("lamp", "cushion", "rug", "vase")),
    ("kitchen", ("pan", "knife", "kettle", "blender")),
    ("beauty", ("serum", "lipstick", "cream", "perfume")),
    ("sports", ("racket", "dumbbell", "helmet", "jersey")),
    ("toys", ("puzzle", "robot", "doll", "blocks")),
    ("books", ("novel", "cookbook", "atlas", "journal")),
    ("garden", ("planter", "hose", "shovel", "seeds")),
    ("jewelry", ("ring", "necklace", "bracelet", "earrings")),
    ("bags", ("backpack", "tote", "wallet", "suitcase")),
    ("grocery", ("coffee", "tea", "chocolate", "honey")),
    ("pets", ("leash", "collar", "kibble", "catnip")),
    ("office", ("notebook", "pen", "stapler", "planner")),
    ("baby", ("stroller", "bib", "blanket", "rattle")),
)
_ADJECTIVES = (
    "classic", "cozy", "sleek", "vintage", "premium", "compact", "organic", "modern", "rustic",
    "sporty", "elegant", "durable", "lightweight", "bold", "minimalist", "deluxe", "eco",
    "handmade", "smart", "soft", "bright", "slim", "rugged", "essential",
)  # fmt: skip
_COLOURS = (
    "black", "white", "navy", "red", "green", "beige", "grey", "pink", "gold", "silver",
    "cotton", "linen", "leather", "wool", "bamboo", "steel", "ceramic", "oak", "denim", "velvet",
)  # fmt: skip
_SYLLABLES = ("no", "ra", "ki", "lu", "ve", "ta", "mo", "si", "da", "be", "lo", "fi", "ze", "pa",
              "ru", "gi", "ko", "ma", "te", "vo")  # fmt: skip
_AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_P = (0.15, 0.30, 0.25, 0.17, 0.13)
_GENDERS = ("female", "male", "unspecified")
_GENDER_P = (0.50, 0.45, 0.05)
# Share of a day's exposures per hour: quiet nights, an evening peak.
_HOURS = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 6, 6, 6, 6, 7, 8, 9, 10, 9, 6, 4], float)


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulated shop. Every default gives a small, fast shop (~100k events)."""

    seed: int = 0  # everything is a function of the config; same config -> same frames
    n_users: int = 2_000
    n_items: int = 1_000
    n_categories: int = 12  # the first 16 have real names and nouns, later ones synthetic
    n_brands: int = 40
    n_markets: int = 3  # >= 2; market_0 is the big source market
    n_events: int = 100_000  # target total number of events (hit within a few percent)
    n_days: int = 90
    start: str = "2024-01-01"  # ISO date of day 0
    dim: int = 16  # latent dimension of tastes and item factors
    source_market_share: float = 0.6  # share of users whose home is market_0
    shared_user_share: float = 0.1  # share of users also active in a second market
    second_market_activity: float = 0.3  # share of a shared user's exposures in the second one
    shared_item_share: float = 0.3  # share of items sold in every market (others: home only)
    new_item_share: float = 0.1  # share of items launched during the range
    new_item_window: float = 0.25  # new items launch in this last fraction of the days
    new_item_boost: float = 2.0  # extra exposure weight of a new item at launch ...
    novelty_days: float = 14.0  # ... decaying with this time constant (days)
    impressions: bool = False  # write impression events (then view is a sampled stage)
    # Funnel rates: the share of parent events that reach the stage (intercepts are calibrated
    # to hit them; buys lose a little more to stockouts, returns to the end of the range).
    view_rate: float = 0.2  # P(view | impression) (impressions only)
    click_rate: float = 0.3  # P(click | view)
    favorite_rate: float = 0.08  # P(favorite | click)
    cart_rate: float = 0.25  # P(cart | click)
    buy_rate: float = 0.5  # P(buy | cart)
    return_rate: float = 0.1  # P(return | buy)
    signal_strength: float = 1.0  # scales every planted slope; 0 -> funnel ignores features
    market_funnel_shift: float = 0.2  # sd of per-market stage intercept offsets (not market_0)
    market_taste_shift: float = 0.5  # sd of per-market mean taste
    temperature: float = 1.0  # exposure choice ~ exp(affinity / temperature)
    n_candidates: int = 16  # popularity-drawn candidates per exposure
    popularity_sigma: float = 1.0  # lognormal sd of item exposure popularity
    # Cross-market structure: the share of a market's item-factor (taste) variance that is
    # shared by all markets (the rest is market-specific); the affinity correlation of a
    # (user, item) pair between two markets. 1 = one taste space, 0 = unrelated markets.
    taste_overlap: float = 1.0
    popularity_overlap: float = 1.0  # the same share for log item popularity
    activity_sigma: float = 1.0  # lognormal sd of user activity
    item_noise: float = 0.3  # sd of the item-factor part not explained by content
    quantity_base: float = 0.25  # Poisson mean of extra units bought at average price
    weekly_amplitude: float = 0.25  # relative weekly swing of traffic (peak on Sunday)
    growth: float = 0.3  # relative traffic growth from first to last day
    stock_cover_days: float = 30.0  # order-up-to level, in days of planned demand
    reorder_point_days: float = 7.0  # reorder when stock + on order <= this many days
    lead_time_days: int = 5  # days from reorder to arrival
    stock_plan_error: float = 0.5  # lognormal sd of the planned vs true demand rate

    def __post_init__(self) -> None:
        if self.n_markets < 2:
            raise ValueError(f"n_markets must be >= 2, got {self.n_markets}")
        for name in ("n_users", "n_items", "n_categories", "n_brands", "n_events", "n_days",
                     "dim", "n_candidates"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_items < self.n_markets:
            raise ValueError("n_items must be at least n_markets")
        for name in ("source_market_share", "shared_user_share", "second_market_activity",
                     "shared_item_share", "new_item_share", "new_item_window",
                     "taste_overlap", "popularity_overlap"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("view_rate", "click_rate", "favorite_rate", "cart_rate", "buy_rate",
                     "return_rate"):  # fmt: skip
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        dt.date.fromisoformat(self.start)

    @property
    def markets(self) -> list[str]:
        """Market names, ``market_0`` first."""
        return [f"market_{m}" for m in range(self.n_markets)]

    def base_rate(self, stage: str) -> float:
        """The configured conditional rate of a funnel stage at average features."""
        return float(getattr(self, f"{stage}_rate"))


@dataclass
class SimTruth:
    """The planted ground truth. Arrays are indexed by user/item index (``u7`` -> row 7).

    Shapes: ``U`` users, ``I`` items, ``D`` latent dim, ``M`` markets, ``C`` categories,
    ``B`` brands, ``V`` title-word vocabulary, ``S`` = len(STAGES).
    """

    # users
    user_taste: np.ndarray  # (U, D) float32
    user_activity: np.ndarray  # (U,) relative exposure rate
    user_fit: np.ndarray  # (U,) fit value used by the return mismatch
    user_home_market: np.ndarray  # (U,) int
    user_second_market: np.ndarray  # (U,) int, -1 = none
    user_age_band: np.ndarray  # (U,) int into age_bands
    user_gender: np.ndarray  # (U,) int into genders
    age_emb: np.ndarray  # (len(age_bands), D)
    gender_emb: np.ndarray  # (len(genders), D)
    market_taste_shift: np.ndarray  # (M, D)
    # items
    item_factors: np.ndarray  # (I, D) float32, content part + noise
    item_content_factors: np.ndarray  # (I, D) the noise-free content part
    item_category: np.ndarray  # (I,) int
    item_brand: np.ndarray  # (I,) int
    item_title_words: np.ndarray  # (I, 3) int into vocabulary: adjective, colour, noun
    item_price: np.ndarray  # (I,) float
    item_fit: np.ndarray  # (I,)
    item_popularity: np.ndarray  # (I,) exposure weight (the shared part)
    item_home_market: np.ndarray  # (I,) int
    item_markets: np.ndarray  # (M, I) bool: sold in market m
    item_launch_day: np.ndarray  # (I,) int, 0 for items there from the start
    # content -> factor map
    category_emb: np.ndarray  # (C, D)
    brand_emb: np.ndarray  # (B, D)
    word_emb: np.ndarray  # (V, D)
    price_coef: np.ndarray  # (D,) factor per unit of z(log price)
    # funnel
    stage_coef: np.ndarray  # (S, 4) per STAGE_FEATURES: calibrated intercept, scaled slopes
    market_stage_offset: np.ndarray  # (M, S) added to the intercept in market m
    # scalars and names
    affinity_mean: float
    affinity_std: float
    log_price_mean: float
    log_price_std: float
    item_noise: float
    start: str
    n_days: int
    markets: list[str]
    categories: list[str]
    brands: list[str]
    vocabulary: list[str]
    age_bands: list[str]
    genders: list[str]
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # (M, U, 2D) and (M, I, 2D) float32 taste and factor in each market (taste_overlap < 1):
    # the shared and the market-specific parts, stacked; None: every market uses
    # user_taste and item_factors
    market_user_taste: np.ndarray | None = None
    market_item_factors: np.ndarray | None = None
    # (M, I) exposure weight of each item in each market; None: item_popularity everywhere
    market_item_popularity: np.ndarray | None = None
    stage_features: list[str] = field(default_factory=lambda: list(STAGE_FEATURES))
    config: dict[str, Any] = field(default_factory=dict)

    def taste_in(self, market: int) -> tuple[np.ndarray, np.ndarray]:
        """User tastes (U, D') and item factors (I, D') in one market: their dot products
        are the raw affinities (``user_taste``, ``item_factors`` when tastes are shared)."""
        if self.market_item_factors is None or self.market_user_taste is None:
            return self.user_taste, self.item_factors
        return self.market_user_taste[market], self.market_item_factors[market]

    def popularity_in(self, market: int) -> np.ndarray:
        """(I,) exposure popularity of the items in one market."""
        if self.market_item_popularity is None:
            return self.item_popularity
        return self.market_item_popularity[market]

    def affinity(
        self, users: np.ndarray, items: np.ndarray, markets: np.ndarray | int = 0
    ) -> np.ndarray:
        """Standardised planted affinity of user/item index pairs, in a market.

        Args:
            users: (N,) user indices.
            items: (N,) item indices.
            markets: (N,) market indices or one market index (matters when
                ``taste_overlap < 1``).

        Returns:
            (N,) float64 ``(taste . v^m - affinity_mean) / affinity_std``.
        """
        if self.market_item_factors is None or self.market_user_taste is None:
            t, v = self.user_taste[users], self.item_factors[items]
        else:
            m = np.broadcast_to(markets, np.shape(items))
            t, v = self.market_user_taste[m, users], self.market_item_factors[m, items]
        dots = np.einsum("nd,nd->n", t.astype(np.float64), v)
        return (dots - self.affinity_mean) / self.affinity_std

    def mismatch(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Centred fit mismatch ``|fit_u - fit_i| - E|.|`` of index pairs, shape (N,)."""
        return np.abs(self.user_fit[users] - self.item_fit[items]) - _MISMATCH_MEAN

    def log_price_z(self, items: np.ndarray) -> np.ndarray:
        """Standardised log price of items, shape (N,)."""
        return (np.log(self.item_price[items]) - self.log_price_mean) / self.log_price_std

    def stage_probability(
        self, stage: str, users: np.ndarray, items: np.ndarray, markets: np.ndarray | int = 0
    ) -> np.ndarray:
        """Planted probability of ``stage`` given its parent stage, for index pairs.

        Args:
            stage: one of :data:`STAGES`.
            users: (N,) user indices.
            items: (N,) item indices.
            markets: (N,) market indices or one market index.

        Returns:
            (N,) probabilities.
        """
        s = self.stages.index(stage)
        a, b, c, d = self.stage_coef[s]
        logit = (
            a
            + self.market_stage_offset[markets, s]
            + b * self.affinity(users, items, markets)
            + c * self.log_price_z(items)
            + d * self.mismatch(users, items)
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def save(self, path: str | Path) -> None:
        """Write ``truth.npz`` (arrays) and ``truth.json`` (scalars, names, config) to a folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays, scalars = {}, {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                scalars[f.name] = value
        np.savez_compressed(path / "truth.npz", **arrays)  # type: ignore[arg-type]
        (path / "truth.json").write_text(json.dumps(scalars, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SimTruth:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        scalars = json.loads((path / "truth.json").read_text())
        with np.load(path / "truth.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(**arrays, **scalars)


@dataclass
class SimulatedShop:
    """What :func:`simulate_shop` returns.

    Attributes:
        dataset: canonical events (``domain`` = market), catalog and users; name "simulated".
        truth: the planted factors and coefficients.
        demand: one row per item and day from its launch: ``item, date, demand`` (units
            sold), ``lost_sales`` (units wanted but out of stock), ``stock`` (at the start
            of the day, after arrivals), ``stockout`` (stock ran out or lost sales).
        config: the configuration that produced it.
    """

    dataset: Dataset
    truth: SimTruth
    demand: pl.DataFrame
    config: SimConfig

    def save(self, path: str | Path) -> Path:
        """Write ``interactions/catalog/users/demand.parquet``, ``config.json`` and ``truth/``.

        Returns:
            The folder written to.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ds = self.dataset
        ds.interactions.df.write_parquet(path / "interactions.parquet")
        if ds.catalog is not None:
            ds.catalog.df.write_parquet(path / "catalog.parquet")
        if ds.users is not None:
            ds.users.df.write_parquet(path / "users.parquet")
        self.demand.write_parquet(path / "demand.parquet")
        (path / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))
        self.truth.save(path / "truth")
        logger.info("saved simulated shop to %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SimulatedShop:
        """Read a folder written by :meth:`save`."""
        path = Path(path)
        config = SimConfig(**json.loads((path / "config.json").read_text()))
        dataset = Dataset(
            name="simulated",
            interactions=Interactions.from_frame(pl.read_parquet(path / "interactions.parquet")),
            catalog=Catalog.from_frame(pl.read_parquet(path / "catalog.parquet")),
            users=Users.from_frame(pl.read_parquet(path / "users.parquet")),
            meta=_meta(config),
        )
        return cls(
            dataset=dataset,
            truth=SimTruth.load(path / "truth"),
            demand=pl.read_parquet(path / "demand.parquet"),
            config=config,
        )


def id_index(ids: pl.Series | Sequence[str]) -> np.ndarray:
    """Map simulated ids (``"u12"``, ``"i7"``) to their integer index (12, 7).

    Args:
        ids: string ids with a one-letter prefix.

    Returns:
        (N,) int64 indices into the :class:`SimTruth` arrays.
    """
    s = ids if isinstance(ids, pl.Series) else pl.Series(list(ids), dtype=pl.String)
    return s.str.slice(1).cast(pl.Int64).to_numpy()


def simulate_shop(config: SimConfig | None = None, **overrides: Any) -> SimulatedShop:
    """Simulate a shop with planted structure (see the module docstring).

    Args:
        config: the configuration; defaults to ``SimConfig()``.
        **overrides: fields replaced in ``config`` (e.g. ``n_events=10_000, seed=3``).

    Returns:
        The dataset, the planted truth and the daily demand table.

    Example:
        >>> shop = simulate_shop(n_events=5_000, n_users=300, n_items=100, seed=2)
        >>> shop.dataset.name
        'simulated'
    """
    cfg = dataclasses.replace(config or SimConfig(), **overrides)
    t0 = time.perf_counter()
    truth, sampler, n_exposures = _setup(cfg)
    sim = _Chunk.concat(list(_exposure_chunks(cfg, sampler, n_exposures)))
    t1 = time.perf_counter()

    filled, demand, final_stock = _run_stock(cfg, truth, sim, np.random.default_rng([cfg.seed, 3]))
    events = _events_frame(cfg, truth, sim, filled)
    t2 = time.perf_counter()

    catalog, users = _tables(cfg, truth, final_stock)
    dataset = Dataset(
        name="simulated",
        interactions=Interactions.from_frame(events),
        catalog=Catalog.from_frame(catalog),
        users=Users.from_frame(users),
        raw_rows=events.height,
        meta=_meta(cfg),
    )
    logger.info(
        "simulated %d events in %.2fs (exposures %.2fs, stock and frames %.2fs)",
        events.height,
        time.perf_counter() - t0,
        t1 - t0,
        t2 - t1,
    )
    return SimulatedShop(dataset=dataset, truth=truth, demand=demand, config=cfg)


def write_shop(
    path: str | Path,
    config: SimConfig | None = None,
    *,
    chunk_events: int = 1_000_000,
    **overrides: Any,
) -> Path:
    """Simulate a shop straight to disk, holding about ``chunk_events`` events at a time.

    The same events as :func:`simulate_shop` with the same config (row order aside), written
    in the layout of :meth:`SimulatedShop.save`: ``interactions.parquet`` as one row group
    per chunk (every reader, ``pl.scan_parquet`` included, streams it), ``catalog``,
    ``users``, ``demand.parquet``, ``config.json`` and ``truth/``. Memory holds the world
    (per user and item arrays), one chunk of events and the buys (a few percent of the
    events: the stock simulation fills them in time order over the whole range), never all
    events. Rows are grouped by chunk (every event but buys and returns, then those), each
    chunk in time order; readers that need the global order sort.

    Args:
        path: the folder to write.
        config: the configuration; defaults to ``SimConfig()``.
        chunk_events: events per Parquet row group (and held in memory at once).
        **overrides: fields replaced in ``config`` (e.g. ``n_events=50_000_000``).

    Returns:
        The folder written to.

    Example:
        >>> import tempfile
        >>> out = write_shop(tempfile.mkdtemp(), n_events=3_000, n_users=200, n_items=80)
        >>> pl.scan_parquet(out / "interactions.parquet").select(pl.len()).collect().item() > 0
        True
    """
    import pyarrow.parquet as pq

    if chunk_events < 1:
        raise ValueError(f"chunk_events must be positive, got {chunk_events}")
    cfg = dataclasses.replace(config or SimConfig(), **overrides)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth, sampler, n_exposures = _setup(cfg)
    empty = np.zeros(0, dtype=np.int64)
    writer: pq.ParquetWriter | None = None
    target = path / "interactions.parquet"
    rows = 0

    def write(frame: pl.DataFrame) -> None:
        nonlocal writer, rows
        table = frame.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(target, table.schema)
        writer.write_table(table, row_group_size=chunk_events)
        rows += frame.height

    buys: list[_Chunk] = []
    pending: list[_Chunk] = []
    held = 0
    try:
        for sim in _exposure_chunks(cfg, sampler, n_exposures):
            buys.append(dataclasses.replace(sim, **{f: getattr(sim, f)[:0] for f in _EV_FIELDS}))
            pending.append(
                dataclasses.replace(sim, **{f: getattr(sim, f)[:0] for f in _BUY_FIELDS})
            )
            held += len(sim.ev_user)
            if held >= chunk_events:
                write(_events_frame(cfg, truth, _Chunk.concat(pending), empty))
                pending, held = [], 0
        if pending:
            write(_events_frame(cfg, truth, _Chunk.concat(pending), empty))
        bought = _Chunk.concat(buys)
        del buys
        filled, demand, final_stock = _run_stock(
            cfg, truth, bought, np.random.default_rng([cfg.seed, 3])
        )
        for lo in range(0, len(filled), chunk_events):
            part = slice(lo, lo + chunk_events)
            one = dataclasses.replace(bought, **{f: getattr(bought, f)[part] for f in _BUY_FIELDS})
            write(_events_frame(cfg, truth, one, filled[part]))
    finally:
        if writer is not None:
            writer.close()
    catalog, users = _tables(cfg, truth, final_stock)
    catalog.write_parquet(path / "catalog.parquet")
    users.write_parquet(path / "users.parquet")
    demand.write_parquet(path / "demand.parquet")
    (path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    truth.save(path / "truth")
    logger.info(
        "wrote %d simulated events to %s in %.2fs (chunks of %d)",
        rows,
        path,
        time.perf_counter() - t0,
        chunk_events,
    )
    return path


def summarize_written(path: str | Path) -> dict[str, Any]:
    """Counts of a folder :func:`write_shop` wrote, from streamed scans (no full load).

    Returns:
        ``name``, ``events``, ``users``, ``items``, ``start``, ``end``,
        ``events_per_behavior`` and ``events_per_domain``.
    """
    lf = pl.scan_parquet(Path(path) / "interactions.parquet")
    head = lf.select(
        pl.len().alias("events"),
        pl.col("user").n_unique().alias("users"),
        pl.col("item").n_unique().alias("items"),
        pl.col("timestamp").min().alias("start"),
        pl.col("timestamp").max().alias("end"),
    ).collect(engine="streaming")

    def counts(col: str) -> dict[str, int]:
        df = lf.group_by(col).len().sort("len", descending=True).collect(engine="streaming")
        return dict(zip(df[col].to_list(), df["len"].to_list(), strict=True))

    row = head.row(0, named=True)
    return {
        "name": "simulated",
        **{k: row[k] for k in ("events", "users", "items")},
        "start": str(row["start"]),
        "end": str(row["end"]),
        "events_per_behavior": counts("behavior"),
        "events_per_domain": counts("domain"),
    }


def _setup(cfg: SimConfig) -> tuple[SimTruth, _Sampler, int]:
    """The world, the calibrated sampler and the number of exposures for ``cfg.n_events``."""
    truth = _build_world(cfg, np.random.default_rng([cfg.seed, 0]))
    sampler = _Sampler(cfg, truth)
    _calibrate(cfg, truth, sampler, np.random.default_rng([cfg.seed, 1]))
    pilot = sampler.simulate(_PILOT, np.random.default_rng([cfg.seed, 4]), 0)
    per_exposure = max(pilot.n_events / _PILOT, 1e-9)
    n_exposures = max(1, round(cfg.n_events / per_exposure))
    logger.info(
        "simulating %d exposures (%.3f events each) for ~%d events",
        n_exposures,
        per_exposure,
        cfg.n_events,
    )
    return truth, sampler, n_exposures


def _exposure_chunks(cfg: SimConfig, sampler: _Sampler, n_exposures: int) -> Iterator[_Chunk]:
    """The exposures' events, ``_CHUNK`` exposures at a time, each chunk seeded by its index."""
    for k, lo in enumerate(range(0, n_exposures, _CHUNK)):
        n = min(_CHUNK, n_exposures - lo)
        yield sampler.simulate(n, np.random.default_rng([cfg.seed, 2, k]), lo)


# --------------------------------------------------------------------------- world


def _meta(cfg: SimConfig) -> dict[str, Any]:
    return {
        "source": "shoprec.data.simulate",
        "markets": cfg.markets,
        "source_market": cfg.markets[0],
        "start": cfg.start,
        "n_days": cfg.n_days,
        "config": dataclasses.asdict(cfg),
    }


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:  # one pass per brand; brands are few
        k = 2 if rng.random() < 0.6 else 3
        name = "".join(rng.choice(_SYLLABLES, size=k)).capitalize()
        if name in seen:
            name = f"{name}{len(names)}"
        seen.add(name)
        names.append(name)
    return names


def _market_shares(cfg: SimConfig) -> np.ndarray:
    rest = 1.0 / np.arange(1, cfg.n_markets)
    rest = rest / rest.sum() * (1.0 - cfg.source_market_share)
    shares = np.concatenate([[cfg.source_market_share], rest])
    return shares / shares.sum()


def _build_world(cfg: SimConfig, rng: np.random.Generator) -> SimTruth:
    """Draw markets, items (content, factors, prices), users and funnel coefficients."""
    U, I, D, M = cfg.n_users, cfg.n_items, cfg.dim, cfg.n_markets  # noqa: E741
    C, B = cfg.n_categories, cfg.n_brands

    # vocabulary and categories
    categories, nouns = [], []
    for c in range(C):
        if c < len(_CATEGORIES):
            categories.append(_CATEGORIES[c][0])
            nouns.append(list(_CATEGORIES[c][1]))
        else:
            categories.append(f"category_{c}")
            nouns.append([f"thing{c}{x}" for x in "abcd"])
    vocabulary = [*_ADJECTIVES, *_COLOURS, *[w for ns in nouns for w in ns]]
    n_adj, n_col = len(_ADJECTIVES), len(_COLOURS)
    noun_offset = n_adj + n_col
    brands = _brand_names(B, rng)

    # content embeddings: the map from content to item factors
    category_emb = rng.normal(0.0, 0.7, (C, D))
    brand_emb = rng.normal(0.0, 0.4, (B, D))
    word_emb = rng.normal(0.0, 0.8, (len(vocabulary), D))
    price_coef = rng.normal(0.0, 0.3, D)

    # items: category, brand, title words, price
    category_p = rng.dirichlet(np.full(C, 3.0))
    item_category = rng.choice(C, size=I, p=category_p)
    brand_home = rng.integers(0, C, B)
    own_brand = rng.random(I) < 0.8
    item_brand = rng.integers(0, B, I)
    for c in range(C):  # per category, not per item
        mine = np.flatnonzero(brand_home == c)
        rows = np.flatnonzero((item_category == c) & own_brand)
        if len(mine) and len(rows):
            item_brand[rows] = rng.choice(mine, size=len(rows))
    adj_p = rng.dirichlet(np.full(n_adj, 0.3), size=C)  # (C, n_adj)
    col_p = rng.dirichlet(np.full(n_col, 0.3), size=C)
    item_adj = _sample_rows(adj_p[item_category], rng)
    item_col = _sample_rows(col_p[item_category], rng)
    item_noun = np.array([len(ns) for ns in nouns])[item_category]
    item_noun = (rng.random(I) * item_noun).astype(np.int64)
    noun_start = noun_offset + np.concatenate([[0], np.cumsum([len(ns) for ns in nouns])[:-1]])
    item_title_words = np.stack(
        [item_adj, n_adj + item_col, noun_start[item_category] + item_noun], axis=1
    )
    cat_level = rng.uniform(math.log(8.0), math.log(150.0), C)
    brand_premium = rng.normal(0.0, 0.3, B)
    log_price = cat_level[item_category] + brand_premium[item_brand] + rng.normal(0, 0.35, I)
    item_price = np.round(np.exp(log_price), 2).clip(0.5)
    log_price = np.log(item_price)
    lp_mean, lp_std = float(log_price.mean()), float(log_price.std() + 1e-9)
    lp_z = (log_price - lp_mean) / lp_std

    item_content = (
        category_emb[item_category]
        + brand_emb[item_brand]
        + word_emb[item_title_words].mean(axis=1)
        + lp_z[:, None] * price_coef[None, :]
    )
    item_factors = item_content + rng.normal(0.0, cfg.item_noise, (I, D))

    # markets, launch, popularity
    shares = _market_shares(cfg)
    item_home = rng.choice(M, size=I, p=shares)
    item_home[:M] = np.arange(M)  # every market sells something of its own
    shared = rng.random(I) < cfg.shared_item_share
    item_markets = np.zeros((M, I), dtype=bool)
    item_markets[item_home, np.arange(I)] = True
    item_markets[:, shared] = True
    is_new = rng.random(I) < cfg.new_item_share
    first_new_day = min(cfg.n_days - 1, int(cfg.n_days * (1.0 - cfg.new_item_window)))
    launch = np.where(is_new, rng.integers(first_new_day, cfg.n_days, I), 0)
    launch[:M] = 0  # ... from day 0
    item_popularity = rng.lognormal(0.0, cfg.popularity_sigma, I)
    item_fit = rng.normal(0.0, 1.0, I)

    # users
    user_home = rng.choice(M, size=U, p=shares)
    second = (user_home + rng.integers(1, M, U)) % M
    user_second = np.where(rng.random(U) < cfg.shared_user_share, second, -1)
    age = rng.choice(len(_AGE_BANDS), size=U, p=_AGE_P)
    gender = rng.choice(len(_GENDERS), size=U, p=_GENDER_P)
    age_emb = rng.normal(0.0, 0.5, (len(_AGE_BANDS), D))
    gender_emb = rng.normal(0.0, 0.5, (len(_GENDERS), D))
    market_shift = rng.normal(0.0, cfg.market_taste_shift, (M, D))
    taste = market_shift[user_home] + age_emb[age] + gender_emb[gender] + rng.normal(0, 1, (U, D))
    user_activity = rng.lognormal(0.0, cfg.activity_sigma, U)
    user_fit = rng.normal(0.0, 1.0, U)

    market_taste, market_factors, market_pop = _market_parts(
        cfg,
        np.random.default_rng([cfg.seed, 5]),  # own stream: rho = 1 leaves the world as it was
        (taste, item_factors, item_popularity),
        (user_home, age, gender),
        (item_category, item_brand, item_title_words, lp_z),
    )

    # affinity standardisation over random pairs (each in its shopper's home market)
    pu, pi = rng.integers(0, U, 50_000), rng.integers(0, I, 50_000)
    if market_taste is None or market_factors is None:
        dots = np.einsum("nd,nd->n", taste[pu], item_factors[pi])
    else:
        m = user_home[pu]
        dots = np.einsum("nd,nd->n", market_taste[m, pu], market_factors[m, pi])
    aff_mean, aff_std = float(dots.mean()), float(dots.std() + 1e-9)

    # funnel coefficients
    stage_coef = np.array(
        [
            [_logit(cfg.base_rate(s)), *(cfg.signal_strength * x for x in STAGE_SLOPES[s])]
            for s in STAGES
        ]
    )
    offsets = rng.normal(0.0, cfg.market_funnel_shift, (M, len(STAGES)))
    offsets[0] = 0.0

    return SimTruth(
        user_taste=taste.astype(np.float32),
        user_activity=user_activity,
        user_fit=user_fit,
        user_home_market=user_home,
        user_second_market=user_second,
        user_age_band=age,
        user_gender=gender,
        age_emb=age_emb,
        gender_emb=gender_emb,
        market_taste_shift=market_shift,
        item_factors=item_factors.astype(np.float32),
        item_content_factors=item_content,
        item_category=item_category,
        item_brand=item_brand,
        item_title_words=item_title_words,
        item_price=item_price,
        item_fit=item_fit,
        item_popularity=item_popularity,
        item_home_market=item_home,
        item_markets=item_markets,
        item_launch_day=launch,
        category_emb=category_emb,
        brand_emb=brand_emb,
        word_emb=word_emb,
        price_coef=price_coef,
        stage_coef=stage_coef,
        market_stage_offset=offsets,
        affinity_mean=aff_mean,
        affinity_std=aff_std,
        log_price_mean=lp_mean,
        log_price_std=lp_std,
        item_noise=cfg.item_noise,
        start=cfg.start,
        n_days=cfg.n_days,
        markets=cfg.markets,
        categories=categories,
        brands=brands,
        vocabulary=vocabulary,
        age_bands=list(_AGE_BANDS),
        genders=list(_GENDERS),
        config=dataclasses.asdict(cfg),
        market_user_taste=market_taste,
        market_item_factors=market_factors,
        market_item_popularity=market_pop,
    )


def _market_parts(
    cfg: SimConfig,
    rng: np.random.Generator,
    shared: tuple[np.ndarray, np.ndarray, np.ndarray],
    user_attrs: tuple[np.ndarray, np.ndarray, np.ndarray],
    content: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Per-market tastes, item factors and popularity: shared and market-specific parts.

    Args:
        cfg: the config (``taste_overlap``, ``popularity_overlap``).
        rng: the stream for the market-specific parts.
        shared: user tastes (U, D), item factors (I, D), item popularity (I,).
        user_attrs: user home market, age band and gender, each (U,).
        content: item category, brand, title words (I, 3) and z(log price).

    Returns:
        ``(M, U, 2D)`` tastes and ``(M, I, 2D)`` factors, float32 (both None when
        ``taste_overlap`` is 1), and ``(M, I)`` popularity (None when ``popularity_overlap``
        is 1).
    """
    taste, item_factors, item_popularity = shared
    _, age, gender = user_attrs
    category, brand, words, lp_z = content
    M, (U, D), I = cfg.n_markets, taste.shape, len(item_factors)  # noqa: E741
    market_taste = market_factors = None
    if cfg.taste_overlap < 1.0:
        a, b = cfg.taste_overlap**0.25, (1.0 - cfg.taste_overlap) ** 0.25
        n_words = int(words.max()) + 1
        market_taste = np.empty((M, U, 2 * D), dtype=np.float32)
        market_factors = np.empty((M, I, 2 * D), dtype=np.float32)
        for m in range(M):  # a few markets: one vectorised draw each, as the shared parts
            # no home-market shift (where a shopper lives would carry across markets); its
            # variance goes into the noise so both parts have the same spread
            own_taste = (
                rng.normal(0.0, 0.5, (len(_AGE_BANDS), D))[age]
                + rng.normal(0.0, 0.5, (len(_GENDERS), D))[gender]
                + rng.normal(0.0, math.sqrt(1.0 + cfg.market_taste_shift**2), (U, D))
            )
            own_factors = (
                rng.normal(0.0, 0.7, (cfg.n_categories, D))[category]
                + rng.normal(0.0, 0.4, (cfg.n_brands, D))[brand]
                + rng.normal(0.0, 0.8, (n_words, D))[words].mean(axis=1)
                + lp_z[:, None] * rng.normal(0.0, 0.3, D)[None, :]
                + rng.normal(0.0, cfg.item_noise, (I, D))
            )
            market_taste[m] = np.concatenate([a * taste, b * own_taste], axis=1)
            market_factors[m] = np.concatenate([a * item_factors, b * own_factors], axis=1)
    popularity = None
    if cfg.popularity_overlap < 1.0:
        q = cfg.popularity_overlap
        own_log = rng.normal(0.0, cfg.popularity_sigma, (M, I))
        log_pop = math.sqrt(q) * np.log(item_popularity)[None, :] + math.sqrt(1.0 - q) * own_log
        popularity = np.exp(log_pop)
    return market_taste, market_factors, popularity


def _sample_rows(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a (N, K) probability matrix."""
    cum = np.cumsum(p, axis=1)
    u = rng.random((p.shape[0], 1)) * cum[:, -1:]
    return np.minimum((cum < u).sum(axis=1), p.shape[1] - 1)


# --------------------------------------------------------------------------- exposures


@dataclass
class _Chunk:
    """Simulated events of a batch of exposures, before stock is applied.

    ``ev_*``: every event except buys and returns (one row each). ``buy_*``: one row per buy
    (with its return, if any, and whether the return falls inside the range).
    """

    ev_user: np.ndarray
    ev_item: np.ndarray
    ev_market: np.ndarray
    ev_time: np.ndarray
    ev_code: np.ndarray
    ev_exposure: np.ndarray
    buy_user: np.ndarray
    buy_item: np.ndarray
    buy_market: np.ndarray
    buy_time: np.ndarray
    buy_qty: np.ndarray
    buy_exposure: np.ndarray
    ret_time: np.ndarray
    ret_kept: np.ndarray  # returned and the return is inside the range

    @property
    def n_events(self) -> int:
        return len(self.ev_user) + len(self.buy_user) + int(self.ret_kept.sum())

    @classmethod
    def concat(cls, parts: list[_Chunk]) -> _Chunk:
        return cls(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(cls)
            }
        )


_EV_FIELDS = tuple(f"ev_{x}" for x in ("user", "item", "market", "time", "code", "exposure"))
_BUY_FIELDS = tuple(
    [f"buy_{x}" for x in ("user", "item", "market", "time", "qty", "exposure")]
    + ["ret_time", "ret_kept"]
)


class _Alias:
    """Walker/Vose alias table: O(1) draws from a fixed discrete distribution.

    Built once per distribution (a loop over its support, not over events).
    """

    def __init__(self, weights: np.ndarray) -> None:
        n = len(weights)
        scaled = (np.asarray(weights, dtype=np.float64) * (n / np.sum(weights))).tolist()
        prob, alias = [1.0] * n, list(range(n))
        small = [k for k, w in enumerate(scaled) if w < 1.0]
        large = [k for k, w in enumerate(scaled) if w >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            prob[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        self.prob = np.array(prob)
        self.alias = np.array(alias, dtype=np.int64)

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Map uniforms in [0, 1) (any shape) to indices; one uniform gives both choices."""
        x = u * len(self.prob)
        k = np.minimum(x.astype(np.int64), len(self.prob) - 1)
        return np.where(x - k < self.prob[k], k, self.alias[k])


class _Sampler:
    """Vectorised exposure and funnel sampler over a fixed world."""

    def __init__(self, cfg: SimConfig, truth: SimTruth) -> None:
        self.cfg = cfg
        self.truth = truth
        self.end_ms = cfg.n_days * MS_PER_DAY
        self.user_alias = _Alias(truth.user_activity)
        days = np.arange(cfg.n_days)
        dow = (dt.date.fromisoformat(cfg.start).weekday() + days) % 7  # Monday = 0
        weekly = 1.0 + cfg.weekly_amplitude * np.cos(2 * np.pi * (dow - 6) / 7)
        trend = 1.0 + cfg.growth * days / max(cfg.n_days - 1, 1)
        self.day_cum = np.cumsum(weekly * trend)
        self.hour_cum = np.cumsum(_HOURS)
        self.pools = [np.flatnonzero(truth.item_markets[m]) for m in range(cfg.n_markets)]
        self.pool_alias = [_Alias(truth.popularity_in(m)[p]) for m, p in enumerate(self.pools)]
        self.launch_ms = truth.item_launch_day.astype(np.int64) * MS_PER_DAY
        self.is_new = truth.item_launch_day > 0
        self.tastes = [truth.taste_in(m) for m in range(cfg.n_markets)]  # float32
        self.lp_z = (np.log(truth.item_price) - truth.log_price_mean) / truth.log_price_std

    @staticmethod
    def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)

    def expose(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` exposures: who, where, when and which item.

        Returns:
            ``(kept, user, item, market, time_ms, affinity)``; ``kept`` are the positions
            (of ``n``) that found a launched item, the others are dropped.
        """
        cfg, truth = self.cfg, self.truth
        user = self.user_alias.draw(rng.random(n))
        second = truth.user_second_market[user]
        use_second = (second >= 0) & (rng.random(n) < cfg.second_market_activity)
        market = np.where(use_second, second, truth.user_home_market[user])
        day = self._draw(self.day_cum, rng.random(n))
        hour = self._draw(self.hour_cum, rng.random(n))
        t = (day * 24 + hour) * 3_600_000 + (rng.random(n) * 3_600_000).astype(np.int64)

        # popularity-drawn candidates, then Gumbel-max on affinity / temperature (+ novelty)
        C = cfg.n_candidates
        cand = np.empty((n, C), dtype=np.int64)
        dots = np.empty((n, C), dtype=np.float32)
        u_c = rng.random((n, C))
        for m in range(cfg.n_markets):
            rows = np.flatnonzero(market == m)
            if len(rows):
                cand[rows] = self.pools[m][self.pool_alias[m].draw(u_c[rows])]
                tastes, factors = self.tastes[m]
                v = factors[cand[rows]]  # (r, C, D)
                dots[rows] = (v @ tastes[user[rows]][:, :, None])[..., 0]
        aff = (dots - truth.affinity_mean) / truth.affinity_std
        score = aff / cfg.temperature  # (n, C)
        r, c = np.nonzero(self.is_new[cand])  # only new items need launch checks and boosts
        since = (t[r] - self.launch_ms[cand[r, c]]).astype(np.float64)  # ms since launch
        if cfg.new_item_boost > 0:
            fresh = np.exp(-np.maximum(since, 0.0) / (cfg.novelty_days * MS_PER_DAY))
            score[r, c] += np.log1p(cfg.new_item_boost * fresh)
        score[r[since < 0], c[since < 0]] = -np.inf
        gumbel = -np.log(-np.log(np.maximum(rng.random((n, C), dtype=np.float32), 1e-12)))
        k = np.argmax(score + gumbel, axis=1)
        rows = np.arange(n)
        kept = np.flatnonzero(np.isfinite(score[rows, k]))  # no launched candidate: dropped
        k = k[kept]
        return (
            kept,
            user[kept],
            cand[kept, k],
            market[kept],
            t[kept],
            aff[kept, k].astype(np.float64),
        )

    def features(self, user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z(log price) and centred mismatch of exposures, each (n,)."""
        mis = np.abs(self.truth.user_fit[user] - self.truth.item_fit[item]) - _MISMATCH_MEAN
        return self.lp_z[item], mis

    def simulate(self, n: int, rng: np.random.Generator, exposure_offset: int) -> _Chunk:
        """Simulate ``n`` exposures and their funnels."""
        cfg, truth = self.cfg, self.truth
        kept, user, item, market, t, aff = self.expose(n, rng)
        exposure = exposure_offset + kept
        n = len(user)

        # funnel
        lp, mis = self.features(user, item)

        def happens(stage: str, parent: np.ndarray) -> np.ndarray:
            s = STAGES.index(stage)
            a, b, c, d = truth.stage_coef[s]
            logit = a + truth.market_stage_offset[market, s] + b * aff + c * lp + d * mis
            return parent & (rng.random(n) * (1.0 + np.exp(-logit)) < 1.0)

        def after(base: np.ndarray, mean_ms: float, min_ms: int = 1000) -> np.ndarray:
            return base + min_ms + rng.exponential(mean_ms, n).astype(np.int64)

        every = np.ones(n, dtype=bool)
        if cfg.impressions:
            view = happens("view", every)
            t_view = after(t, 5_000)
        else:
            view, t_view = every, t
        click = happens("click", view)
        t_click = after(t_view, 20_000)
        fav = happens("favorite", click)
        t_fav = after(t_click, 60_000)
        cart = happens("cart", click)
        t_cart = after(t_click, 90_000)
        buy = happens("buy", cart)
        t_buy = after(t_cart, 300_000)
        ret = happens("return", buy)
        t_ret = after(t_buy, 6 * MS_PER_DAY, MS_PER_DAY)

        stages = [(view, t_view, "view"), (click, t_click, "click"), (fav, t_fav, "favorite"),
                  (cart, t_cart, "cart")]  # fmt: skip
        if cfg.impressions:
            stages.insert(0, (every, t, "impression"))
        sel, times, codes = [], [], []
        for mask, tt, name in stages:
            keep = np.flatnonzero(mask & (tt < self.end_ms))
            sel.append(keep)
            times.append(tt[keep])
            codes.append(np.full(len(keep), _CODE[name], dtype=np.int8))
        idx = np.concatenate(sel)

        b = np.flatnonzero(buy & (t_buy < self.end_ms))
        lam = cfg.quantity_base * np.exp(-_QTY_PRICE_SLOPE * lp[b])
        qty = 1 + np.minimum(rng.poisson(lam), 19)
        return _Chunk(
            ev_user=user[idx].astype(np.int32),
            ev_item=item[idx].astype(np.int32),
            ev_market=market[idx].astype(np.int8),
            ev_time=np.concatenate(times),
            ev_code=np.concatenate(codes),
            ev_exposure=exposure[idx],
            buy_user=user[b].astype(np.int32),
            buy_item=item[b].astype(np.int32),
            buy_market=market[b].astype(np.int8),
            buy_time=t_buy[b],
            buy_qty=qty.astype(np.int64),
            buy_exposure=exposure[b],
            ret_time=t_ret[b],
            ret_kept=ret[b] & (t_ret[b] < self.end_ms),
        )


def _calibrate(
    cfg: SimConfig, truth: SimTruth, sampler: _Sampler, rng: np.random.Generator
) -> None:
    """Set each stage's intercept so its rate among (expected) parent events is its base rate.

    Uses a pilot sample of exposures; the slopes and market offsets stay as planted.
    """
    _, user, item, market, _, aff = sampler.expose(_PILOT, rng)
    lp, mis = sampler.features(user, item)
    reach = {"impression": np.ones(len(user))}
    for s, stage in enumerate(STAGES):
        _, b, c, d = truth.stage_coef[s]
        rest = truth.market_stage_offset[market, s] + b * aff + c * lp + d * mis
        weight = reach[_PARENT[stage]]
        target = cfg.base_rate(stage)
        lo, hi = -30.0, 30.0
        for _ in range(60):  # bisection: the weighted mean rate rises with the intercept
            mid = 0.5 * (lo + hi)
            rate = np.average(1.0 / (1.0 + np.exp(-(mid + rest))), weights=weight)
            lo, hi = (mid, hi) if rate < target else (lo, mid)
        truth.stage_coef[s, 0] = 0.5 * (lo + hi)
        p = 1.0 / (1.0 + np.exp(-(truth.stage_coef[s, 0] + rest)))
        reach[stage] = weight * p if (stage != "view" or cfg.impressions) else weight
    logger.debug("calibrated stage intercepts: %s", truth.stage_coef[:, 0])


# --------------------------------------------------------------------------- stock, frames


def _run_stock(
    cfg: SimConfig, truth: SimTruth, sim: _Chunk, rng: np.random.Generator
) -> tuple[np.ndarray, pl.DataFrame, np.ndarray]:
    """Apply an (s, S) stock policy day by day; fill buys in time order.

    Returns:
        Filled quantity per buy (0 = lost), the demand frame and the final stock per item.
    """
    I, T, L = cfg.n_items, cfg.n_days, cfg.lead_time_days  # noqa: E741
    day = sim.buy_time // MS_PER_DAY
    order = np.lexsort((sim.buy_time, sim.buy_item, day))
    items, qty, day = sim.buy_item[order], sim.buy_qty[order], day[order]
    # day-major (T, I) arrays, so each day's step reads and writes contiguous rows
    wanted = np.bincount(day * I + items, weights=qty, minlength=T * I)
    wanted = wanted.astype(np.int64).reshape(T, I)

    launch = truth.item_launch_day
    live_days = np.maximum(T - launch, 1)
    rate = wanted.sum(axis=0) / live_days * rng.lognormal(0.0, cfg.stock_plan_error, I)
    reorder_at = np.ceil(rate * cfg.reorder_point_days)
    target = np.maximum(np.ceil(rate * cfg.stock_cover_days) + reorder_at, 1).astype(np.int64)
    reorder_at = reorder_at.astype(np.int64)

    arrivals = np.zeros((T + L + 1, I), dtype=np.int64)
    arrivals[launch, np.arange(I)] = target
    on_order = target.copy()  # ordered, not yet arrived
    stock = np.zeros(I, dtype=np.int64)
    stock_start = np.zeros((T, I), dtype=np.int64)
    sold = np.zeros((T, I), dtype=np.int64)
    filled_sorted = np.zeros(len(qty), dtype=np.int64)
    bounds = np.searchsorted(day, np.arange(T + 1))
    for d in range(T):  # one vectorised step per day
        stock += arrivals[d]
        on_order -= arrivals[d]
        stock_start[d] = stock
        lo, hi = bounds[d], bounds[d + 1]
        if hi > lo:
            it, q = items[lo:hi], qty[lo:hi]
            cs = np.cumsum(q)
            first = np.r_[True, it[1:] != it[:-1]]
            group_base = np.maximum.accumulate(np.where(first, cs - q, 0))
            before = cs - q - group_base  # units wanted earlier that day for this item
            fill = np.clip(stock[it] - before, 0, q)
            filled_sorted[lo:hi] = fill
            sold[d] = np.bincount(it, weights=fill, minlength=I).astype(np.int64)
            stock -= sold[d]
        need = (d >= launch) & (stock + on_order <= reorder_at)
        amount = np.where(need, target - stock - on_order, 0)
        arrivals[d + L] += amount
        on_order += amount

    filled = np.empty_like(filled_sorted)
    filled[order] = filled_sorted
    lost = wanted - sold

    start = dt.date.fromisoformat(cfg.start)
    live = (np.arange(T)[None, :] >= launch[:, None]).ravel()  # (I * T,) item-major

    def item_major(x: np.ndarray) -> np.ndarray:
        return x.T.ravel()[live]

    demand = pl.DataFrame(
        {
            "item": _names("i", np.arange(I)).gather(np.repeat(np.arange(I), T - launch)),
            "date": pl.Series(np.tile(np.arange(T), I)[live], dtype=pl.Int64),
            "demand": item_major(sold),
            "lost_sales": item_major(lost),
            "stock": item_major(stock_start),
        }
    ).with_columns(
        (pl.lit(start) + pl.duration(days=pl.col("date"))).cast(pl.Date).alias("date"),
        ((pl.col("lost_sales") > 0) | (pl.col("stock") == 0)).alias("stockout"),
    )
    n_lost = int(lost.sum())
    logger.info("stock: %d units sold, %d lost to stockouts", int(sold.sum()), n_lost)
    return filled, demand, stock


def _names(prefix: str, idx: np.ndarray) -> pl.Series:
    """``prefix`` + index as strings (``u0, u1, ...``)."""
    ids = pl.Series("id", idx, dtype=pl.Int64).cast(pl.String)
    return pl.select(pl.concat_str(pl.lit(prefix), ids)).to_series()


def _events_frame(cfg: SimConfig, truth: SimTruth, sim: _Chunk, filled: np.ndarray) -> pl.DataFrame:
    """Assemble all events (buys with their filled quantity) into a canonical-shaped frame."""
    b = filled > 0
    r = b & sim.ret_kept
    n_ev, n_b, n_r = len(sim.ev_user), int(b.sum()), int(r.sum())
    raw = pl.DataFrame(
        {
            "u": np.concatenate([sim.ev_user, sim.buy_user[b], sim.buy_user[r]]),
            "i": np.concatenate([sim.ev_item, sim.buy_item[b], sim.buy_item[r]]),
            "t": np.concatenate([sim.ev_time, sim.buy_time[b], sim.ret_time[r]]),
            "code": np.concatenate(
                [
                    sim.ev_code,
                    np.full(n_b, _CODE["buy"], dtype=np.int8),
                    np.full(n_r, _CODE["return"], dtype=np.int8),
                ]
            ),
            "quantity": np.concatenate([np.ones(n_ev, dtype=np.int64), filled[b], filled[r]]),
            "m": np.concatenate([sim.ev_market, sim.buy_market[b], sim.buy_market[r]]),
            "x": np.concatenate([sim.ev_exposure, sim.buy_exposure[b], sim.buy_exposure[r]]),
        }
    ).sort(["t", "x", "code"])
    start = dt.datetime.combine(dt.date.fromisoformat(cfg.start), dt.time())
    behaviors = pl.Series(list(_BEHAVIORS), dtype=pl.String)
    markets = pl.Series(cfg.markets, dtype=pl.String)
    prices = pl.Series(truth.item_price, dtype=pl.Float64)
    return raw.select(
        (pl.lit("u") + pl.col("u").cast(pl.String)).alias("user"),
        (pl.lit("i") + pl.col("i").cast(pl.String)).alias("item"),
        (pl.lit(start, dtype=pl.Datetime("ms")) + pl.duration(milliseconds=pl.col("t"))).alias(
            "timestamp"
        ),
        behaviors.gather(raw["code"].cast(pl.Int64)).alias("behavior"),
        pl.col("quantity"),
        prices.gather(raw["i"].cast(pl.Int64)).alias("price"),
        markets.gather(raw["m"].cast(pl.Int64)).alias("domain"),
    )


def _tables(
    cfg: SimConfig, truth: SimTruth, final_stock: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The catalog (stock = stock on hand at the end) and the users table."""
    words = np.array(truth.vocabulary, dtype=object)
    brands = np.array(truth.brands, dtype=object)
    w = truth.item_title_words
    title = brands[truth.item_brand] + " " + words[w[:, 0]] + " " + words[w[:, 1]] + " "
    title = title + words[w[:, 2]]
    markets = np.array(cfg.markets, dtype=object)
    catalog = pl.DataFrame(
        {
            "item": _names("i", np.arange(cfg.n_items)),
            "title": pl.Series(title.tolist(), dtype=pl.String),
            "category": pl.Series(np.array(truth.categories)[truth.item_category].tolist()),
            "brand": pl.Series(brands[truth.item_brand].tolist(), dtype=pl.String),
            "price": truth.item_price,
            "stock": final_stock,
            "home_market": pl.Series(markets[truth.item_home_market].tolist(), dtype=pl.String),
            "n_markets": truth.item_markets.sum(axis=0).astype(np.int64),
            "launch_date": pl.Series(truth.item_launch_day, dtype=pl.Int64),
        }
    ).with_columns(
        (pl.lit(dt.date.fromisoformat(cfg.start)) + pl.duration(days=pl.col("launch_date")))
        .cast(pl.Date)
        .alias("launch_date")
    )
    second = truth.user_second_market
    users = pl.DataFrame(
        {
            "user": _names("u", np.arange(cfg.n_users)),
            "age_band": pl.Series(np.array(_AGE_BANDS)[truth.user_age_band].tolist()),
            "gender": pl.Series(np.array(_GENDERS)[truth.user_gender].tolist()),
            "home_market": pl.Series(markets[truth.user_home_market].tolist(), dtype=pl.String),
            "second_market": pl.Series(
                np.where(second >= 0, markets[np.maximum(second, 0)], None).tolist(),
                dtype=pl.String,
            ),
        }
    )
    return catalog, users
