"""UCI Online Retail: every invoice line of a UK online gift shop, 2010-12-01 .. 2011-12-09.

Two files are read from ``$SHOPREC_DATA/online_retail/``:

* ``online_retail.parquet`` (:func:`load`): all 541,909 lines, without ``InvoiceNo`` and
  ``StockCode``. The product key is the cleaned ``Description``.
* ``online_retail_2010-12_2011-06_with_codes.parquet`` (:func:`load_with_codes`): the first
  240,007 lines with all 8 original columns. The product key is the ``StockCode`` and a
  ``C`` prefix on ``InvoiceNo`` marks a cancellation.

Canonical mapping: ``user`` = ``CustomerID`` as an integer string (``"17850"``), ``item`` =
product key, ``timestamp`` = ``InvoiceDate``, ``behavior`` = ``buy`` (or ``return`` for a
negative quantity / cancelled invoice), ``quantity`` = ``abs(Quantity)``, ``price`` =
``UnitPrice`` (GBP), ``domain`` = ``Country``.

Data-quality decisions, applied in this order; each raw line is counted under the first
reason that matches, so ``len(interactions) + dropped.total == raw_rows``:

1. ``missing_description``: null or blank description (all are stock-keeping lines).
2. ``guest``: no ``CustomerID`` (135,080 raw lines, 1,454 of them already counted under
   rule 1; among them every damaged / lost / found stock adjustment). With
   ``include_guests=True`` they are kept instead, one pseudo user per guest basket.
3. ``non_product``: postage, carriage, packing, manual adjustments, discounts, bank and
   Amazon fees, charity commission, samples, bad-debt adjustments, gift vouchers, image
   licences and the token-priced cushion pads (:data:`NON_PRODUCT_DESCRIPTIONS`).
4. ``non_finite_price``: ``UnitPrice`` NaN or infinite (none in the shipped files), then
   ``non_positive_price``: ``UnitPrice <= 0`` (free goods, write-offs).
5. ``zero_quantity`` and ``quantity_sign_mismatch`` (a cancellation invoice with a positive
   quantity or a sale with a negative one): defensive, none occur in the shipped files.
6. ``cancelled_order_pair``: a purchase line and the line that cancels it in full (same
   customer, product, quantity and unit price, at most :data:`CANCEL_WINDOW` later) are both
   dropped: an order corrected before it could ship says little about taste and its
   quantities are often absurd (the +80,995 / -80,995 "PAPER CRAFT , LITTLE BIRDIE" order
   of 2011-12-09 and the +74,215 / -74,215 "MEDIUM CERAMIC TOP STORAGE JAR" order of
   2011-01-18 are two such pairs). Later returns are kept as ``return`` events.
7. ``country_not_selected``: outside ``countries``, when given.

The kept lines then pass the checks every loader applies (:data:`~shoprec.data.schema.EVENT_RULES`:
ids, prices, quantities, timestamps in range), under ``on_bad_rows``; none trips on the shipped
files. One exception to the common policy, on purpose: identical lines (same customer,
product, minute, quantity and price; 5,303 of the kept lines) are kept, not dropped as
duplicates. The file has no line number and times only to the minute, and the file with
codes shows such repeats inside one invoice (1,931 lines): the same product scanned twice
on one order, whose quantities add up.

Descriptions are cleaned by stripping outer whitespace and collapsing inner runs of it, so
``"X "``, ``" X"`` and ``"X"`` are one product (as are 8 pairs that differ only by a double
space). The catalog has one row per kept item: ``title`` = the description, ``price`` = the
median unit price of the item's kept lines (all positive). The data has no category, brand
or stock, so those are null.

With the defaults, :func:`load` keeps 403,517 of 541,909 lines (395,611 buys, 7,906
returns; 4,361 customers, 3,865 products, 37 countries: Hong Kong has only guest lines).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import polars as pl

from shoprec.data.paths import dataset_dir
from shoprec.data.schema import (
    DEFAULT_ON_BAD_ROWS,
    ROW,
    Behavior,
    Catalog,
    Dataset,
    DropReport,
    Interactions,
    OnBadRows,
    RowChecks,
)

NAME = "online_retail"
SOURCE = "https://archive.ics.uci.edu/dataset/352/online+retail"

FILE = "online_retail.parquet"
CODES_FILE = "online_retail_2010-12_2011-06_with_codes.parquet"

#: Format of ``InvoiceDate`` in the file with codes (``12/1/10 8:26``: month/day/2-digit year).
CODES_DATE_FORMAT = "%m/%d/%y %H:%M"

#: Cleaned descriptions of lines that are not products sold to a customer.
NON_PRODUCT_DESCRIPTIONS: frozenset[str] = frozenset(
    {
        "POSTAGE",
        "DOTCOM POSTAGE",
        "CARRIAGE",
        "Next Day Carriage",
        "PACKING CHARGE",
        "Manual",
        "Discount",
        "Bank Charges",
        "AMAZON FEE",
        "CRUK Commission",
        "SAMPLES",
        "Adjust bad debt",
        "High Resolution Image",
        # a pad thrown in with cushion orders at a token 0.001 GBP, not a sale
        "PADS TO MATCH ALL CUSHIONS",
    }
)

#: Descriptions starting with this are gift vouchers (stored value, not merchandise).
VOUCHER_PREFIX = "Dotcomgiftshop Gift Voucher"

#: Upper-cased stock codes of non-product lines (file with codes only).
NON_PRODUCT_CODES: frozenset[str] = frozenset(
    {"POST", "DOT", "C2", "M", "D", "S", "B", "AMAZONFEE", "BANK CHARGES", "CRUK", "PADS"}
)

#: A cancellation at most this long after the purchase it exactly undoes drops both lines.
CANCEL_WINDOW = timedelta(days=1)

_REASON_TEXT: dict[str, str] = {
    "missing_description": "null or blank description",
    "guest": "guest line without CustomerID",
    "non_product": "postage / fee / adjustment / voucher line, not a product",
    "non_finite_price": "unit price NaN or infinite",
    "non_positive_price": "unit price zero or negative",
    "zero_quantity": "quantity zero",
    "quantity_sign_mismatch": "quantity sign disagrees with the invoice type",
    "cancelled_order_pair": "purchase and its full cancellation within CANCEL_WINDOW",
    "country_not_selected": "country not in the requested countries",
}

logger = logging.getLogger(__name__)


def load(
    *,
    include_guests: bool = False,
    countries: list[str] | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load all 541,909 lines of Online Retail in canonical form, cleaned as the module says.

    Args:
        include_guests: keep guest lines (no ``CustomerID``) instead of dropping them. Each
            guest basket, i.e. each (country, invoice minute), becomes its own pseudo user
            ``"guest:<Country>:<YYYY-mm-dd HH:MM>"``, as the file has no invoice number; one
            user for all guests would be a giant user that buys everything.
        countries: keep only these countries (as spelled in the data, e.g.
            ``["United Kingdom", "EIRE"]``); lines of the others are counted as
            ``country_not_selected``.
        on_bad_rows: what the common checks do with a kept line that fails them
            (``drop`` and count, or ``refuse``).

    Returns:
        The dataset: interactions with behaviors ``buy`` and ``return``, a catalog keyed by
        the cleaned description, ``raw_rows`` = 541,909 and the drops by reason.

    Raises:
        DatasetNotFoundError: when ``online_retail/online_retail.parquet`` is not under the
            data root.
        ValueError: for a country that does not occur in the data.

    Example:
        >>> ds = load()
        >>> buys = ds.interactions.of("buy")  # 395,611 lines; the rest are returns
    """
    folder = dataset_dir(NAME, name=NAME, source=SOURCE, required=(FILE,))
    path = folder / FILE
    raw = _with_titles(pl.read_parquet(path))
    frame = raw.select(
        pl.col("CustomerID").cast(pl.Int64).cast(pl.String).alias("customer"),
        (
            pl.lit("guest:")
            + pl.col("Country")
            + pl.lit(":")
            + pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M")
        ).alias("guest_user"),
        pl.col("title").alias("item"),
        "title",
        pl.col("InvoiceDate").cast(pl.Datetime("ms")).alias("timestamp"),
        pl.col("Quantity").cast(pl.Int64).alias("signed_quantity"),
        pl.col("UnitPrice").cast(pl.Float64).alias("price"),
        pl.col("Country").alias("domain"),
        (pl.col("Quantity") < 0).alias("is_return"),
        pl.col("non_product_title").alias("non_product"),
    )
    return _finish(
        frame,
        name=NAME,
        path=path,
        include_guests=include_guests,
        countries=countries,
        on_bad_rows=on_bad_rows,
        notes={
            "item": "cleaned Description (outer whitespace stripped, inner runs collapsed)",
            "return": "negative Quantity (returns and cancellations)",
            "guest_user": "guest:<Country>:<YYYY-mm-dd HH:MM> (one per guest basket)",
        },
    )


def load_with_codes(
    *,
    include_guests: bool = False,
    countries: list[str] | None = None,
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Load the first 240,007 lines (2010-12 .. 2011-06) with invoice numbers and stock codes.

    The item is the upper-cased ``StockCode`` (``85123a`` and ``85123A`` are one product),
    its title the most frequent cleaned description of that code among the kept lines. A
    ``C`` prefix on ``InvoiceNo`` marks a cancellation (``return``). The same rules as
    :func:`load` apply; non-product lines are also recognised by stock code (``POST``,
    ``DOT``, ``M``, ``gift_0001_*``, ...). The interactions carry an extra ``invoice``
    column (the basket key).

    Args:
        include_guests: keep guest lines, each guest invoice as pseudo user
            ``"guest:<InvoiceNo>"``.
        countries: keep only these countries (as spelled in the data).
        on_bad_rows: as in :func:`load`.

    Returns:
        The dataset with ``raw_rows`` = 240,007.

    Raises:
        DatasetNotFoundError: when the file is not under the data root.
        ValueError: for a country that does not occur in the data.
    """
    folder = dataset_dir(NAME, name=NAME, source=SOURCE, required=(CODES_FILE,))
    path = folder / CODES_FILE
    raw = _with_titles(pl.read_parquet(path))
    code = pl.col("StockCode").str.strip_chars().str.to_uppercase()
    invoice = pl.col("InvoiceNo").str.strip_chars()
    frame = raw.select(
        pl.col("CustomerID").cast(pl.Int64).cast(pl.String).alias("customer"),
        (pl.lit("guest:") + invoice).alias("guest_user"),
        code.alias("item"),
        "title",
        pl.col("InvoiceDate")
        .str.strip_chars()
        .str.strptime(pl.Datetime("ms"), CODES_DATE_FORMAT, strict=True)
        .alias("timestamp"),
        pl.col("Quantity").cast(pl.Int64).alias("signed_quantity"),
        pl.col("UnitPrice").cast(pl.Float64).alias("price"),
        pl.col("Country").alias("domain"),
        invoice.str.starts_with("C").alias("is_return"),
        (
            pl.col("non_product_title")
            | code.is_in(list(NON_PRODUCT_CODES))
            | code.str.starts_with("GIFT_")
        ).alias("non_product"),
        invoice.alias("invoice"),
    )
    return _finish(
        frame,
        name=f"{NAME}_with_codes",
        path=path,
        include_guests=include_guests,
        countries=countries,
        on_bad_rows=on_bad_rows,
        notes={
            "item": "upper-cased StockCode; title = its most frequent cleaned Description",
            "return": "InvoiceNo with a 'C' prefix (cancellation)",
            "guest_user": "guest:<InvoiceNo> (one per guest invoice)",
        },
    )


def _with_titles(raw: pl.DataFrame) -> pl.DataFrame:
    """Add ``title`` (the cleaned ``Description``) and ``non_product_title`` to raw lines.

    The text is cleaned once per distinct description (a few thousand) and joined back,
    which is several times faster than cleaning half a million strings.
    """
    text = pl.col("Description").str.strip_chars().str.replace_all(r"\s+", " ")
    titles = (
        raw.select(pl.col("Description").unique().drop_nulls())
        .with_columns(pl.when(text.str.len_chars() > 0).then(text).alias("title"))
        .with_columns(
            (
                pl.col("title").is_in(list(NON_PRODUCT_DESCRIPTIONS))
                | pl.col("title").str.starts_with(VOUCHER_PREFIX)
            )
            .fill_null(False)
            .alias("non_product_title")
        )
    )
    return raw.join(titles, on="Description", how="left", maintain_order="left").with_columns(
        pl.col("non_product_title").fill_null(False)
    )


def _cancelled_pairs(frame: pl.DataFrame) -> pl.Series:
    """Row ids of purchase/cancellation pairs that exactly undo each other.

    Each cancellation is matched (greedily, as-of backward in time) to the latest purchase of
    the same user, item, absolute quantity and unit price at most :data:`CANCEL_WINDOW`
    before it; a purchase is paired with at most one cancellation.

    Args:
        frame: candidate lines with ``_row, user, item, timestamp, signed_quantity, price,
            is_return``.

    Returns:
        The ``_row`` ids of both lines of every pair.
    """
    keys = ["user", "item", "abs_quantity", "price"]
    base = frame.select(
        "_row",
        "user",
        "item",
        "timestamp",
        "price",
        "is_return",
        pl.col("signed_quantity").abs().alias("abs_quantity"),
    )
    cancels = base.filter(pl.col("is_return")).drop("is_return").sort("timestamp")
    buys = (
        base.filter(~pl.col("is_return"))
        .select(*keys, pl.col("timestamp").alias("buy_time"), pl.col("_row").alias("buy_row"))
        .sort("buy_time")
    )
    matched = (
        cancels.join_asof(
            buys,
            left_on="timestamp",
            right_on="buy_time",
            by=keys,
            strategy="backward",
            tolerance=CANCEL_WINDOW,
            check_sortedness=False,
        )
        .filter(pl.col("buy_row").is_not_null())
        .sort("timestamp", "_row")
        .unique(subset="buy_row", keep="first", maintain_order=True)
    )
    return pl.concat([matched["_row"], matched["buy_row"]]).alias("_row")


def _finish(
    frame: pl.DataFrame,
    *,
    name: str,
    path: Path,
    include_guests: bool,
    countries: list[str] | None,
    notes: dict[str, str],
    on_bad_rows: OnBadRows = DEFAULT_ON_BAD_ROWS,
) -> Dataset:
    """Apply the drop rules to a normalised frame and build the :class:`Dataset`.

    Args:
        frame: one row per raw line with ``customer, guest_user, item, title, timestamp,
            signed_quantity, price, domain, is_return, non_product`` and any extra columns
            to keep (e.g. ``invoice``).
        name: the dataset's name.
        path: the file read, for the meta.
        include_guests: keep guest lines under their ``guest_user`` id.
        countries: countries to keep, or None for all.
        notes: file-specific notes for the meta.
        on_bad_rows: what the common checks do with a kept line that fails them.
    """
    raw_rows = frame.height
    if countries is not None:
        known = set(frame["domain"].unique().to_list())
        unknown = sorted(set(countries) - known)
        if unknown:
            raise ValueError(
                f"unknown countries {unknown}; the data has: {', '.join(sorted(known))}"
            )

    is_guest = pl.col("customer").is_null()
    qty = pl.col("signed_quantity")
    reason = (
        pl.when(pl.col("title").is_null())
        .then(pl.lit("missing_description"))
        .when(is_guest & pl.lit(not include_guests))
        .then(pl.lit("guest"))
        .when(pl.col("non_product"))
        .then(pl.lit("non_product"))
        .when(~pl.col("price").is_finite())
        .then(pl.lit("non_finite_price"))
        .when(pl.col("price").is_null() | (pl.col("price") <= 0))
        .then(pl.lit("non_positive_price"))
        .when(qty == 0)
        .then(pl.lit("zero_quantity"))
        .when(pl.col("is_return") != (qty < 0))
        .then(pl.lit("quantity_sign_mismatch"))
        .otherwise(None)
    )
    frame = frame.with_row_index("_row").with_columns(
        pl.coalesce("customer", "guest_user").alias("user"), reason.alias("reason")
    )

    pairs = _cancelled_pairs(frame.filter(pl.col("reason").is_null()))
    frame = frame.with_columns(
        pl.when(pl.col("reason").is_null() & pl.col("_row").is_in(pairs.implode()))
        .then(pl.lit("cancelled_order_pair"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )
    if countries is not None:
        frame = frame.with_columns(
            pl.when(pl.col("reason").is_null() & ~pl.col("domain").is_in(countries))
            .then(pl.lit("country_not_selected"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )

    counts = dict(frame["reason"].drop_nulls().value_counts().iter_rows())
    dropped = DropReport()
    for key, text in _REASON_TEXT.items():
        n = int(counts.get(key, 0))
        dropped.add(key, n)
        if n:
            logger.info("%s: dropped %d of %d lines: %s (%s)", name, n, raw_rows, key, text)

    kept = frame.filter(pl.col("reason").is_null())
    extra = [c for c in ("invoice",) if c in kept.columns]
    checks = RowChecks(
        on_bad_rows=on_bad_rows,
        report=dropped,
        file=path,
        columns={"user": "CustomerID", "item": "Description", "timestamp": "InvoiceDate"}
        | {"quantity": "Quantity", "price": "UnitPrice", "domain": "Country"},
        duplicates=False,  # identical lines are kept: see the module docstring
        header_lines=0,
    )
    checked = Interactions.from_frame(
        kept.select(
            "user",
            "item",
            "timestamp",
            pl.when(pl.col("is_return"))
            .then(pl.lit(Behavior.RETURN.value))
            .otherwise(pl.lit(Behavior.BUY.value))
            .alias("behavior"),
            qty.abs().alias("quantity"),
            "price",
            "domain",
            *extra,
            "_row",
            pl.col("_row").alias(ROW),
        ),
        checks,
    ).df
    if checked.height < kept.height:  # lines the common checks dropped leave the catalog too
        kept = kept.filter(pl.col("_row").is_in(checked["_row"].implode()))
    interactions = Interactions(checked.drop("_row"))
    events = interactions.df
    titles = (
        kept.group_by("item", "title")
        .len()
        .sort(["item", "len", "title"], descending=[False, True, False])
        .unique(subset="item", keep="first", maintain_order=True)
        .select("item", "title")
    )
    catalog = titles.join(
        kept.group_by("item").agg(pl.col("price").median()), on="item", how="left"
    ).sort("item")
    logger.info(
        "%s: kept %d of %d lines (%d users, %d items)",
        name,
        events.height,
        raw_rows,
        events["user"].n_unique(),
        catalog.height,
    )
    return Dataset(
        name=name,
        interactions=interactions,
        catalog=Catalog.from_frame(catalog, RowChecks(on_bad_rows, dropped)),
        raw_rows=raw_rows,
        dropped=dropped,
        meta={
            "source": SOURCE,
            "file": str(path),
            "include_guests": include_guests,
            "countries": None if countries is None else list(countries),
            "notes": {
                **notes,
                "user": "CustomerID as an integer string",
                "quantity": "abs(Quantity)",
                "price": "UnitPrice in GBP; catalog price = median over kept lines",
                "domain": "Country",
                "category": "null: the data has no category",
                "non_product_descriptions": sorted(NON_PRODUCT_DESCRIPTIONS),
                "cancel_window_hours": CANCEL_WINDOW.total_seconds() / 3600,
                "drop_order": list(_REASON_TEXT),
            },
        },
    )
