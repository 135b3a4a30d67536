"""The catalog the recommender serves: the artifact's item table by position, with live stock
and products added at run time.

Positions are rows of the artifact's ``items.parquet`` (the scorer's item order). Arrays the
serving path reads per request (price, category codes, stock, the new-item mask) are kept
ready here, so a request indexes, never filters a dataframe.

Products added while serving (:meth:`Catalog.add_items`) need a scorer that can score items
from their attributes: one with ``add_items(items_frame) -> positions`` (the ``content``
recipe's). Their rows are appended to the scorer, to this table and to the retrieval vectors
and indexes; a scorer without the hook is refused with :class:`CatalogError`.

Example:
    >>> cat = Catalog(pl.DataFrame({"item": ["a", "b"], "price": [2.0, 5.0]}), np.array([0, 1]) > 0)
    >>> cat.position("b"), cat.new_items()
    (1, ['b'])
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from shoprec.errors import ShoprecError

if TYPE_CHECKING:
    from shoprec.recipes.base import Scorer
    from shoprec.recommend.retrieve import Retrieval

#: Attribute columns an item table may have besides ``item``.
ATTRIBUTES = ("title", "category", "brand", "price", "stock")


class UnknownItemError(ShoprecError, KeyError):
    """An item id the artifact does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


class CatalogError(ShoprecError, ValueError):
    """Products that cannot be added (a recipe that cannot score them, or bad rows)."""


class DuplicateItemError(CatalogError):
    """Products that are already in the catalog."""


class Catalog:
    """Item ids, attributes, prices, categories, stock and new items, by position.

    Args:
        items: the item table (``item`` plus any of :data:`ATTRIBUTES`), in position order.
        is_new: ``(N,)`` True for items without training events.
    """

    def __init__(self, items: pl.DataFrame, is_new: np.ndarray) -> None:
        self.stock_overrides: dict[str, int] = {}
        self.added = items.clear().select("item")  # rows added at run time
        self._lock = threading.Lock()
        self._set(items, np.asarray(is_new, dtype=bool))

    def _set(self, table: pl.DataFrame, is_new: np.ndarray) -> None:
        """(Re)build the per-position arrays; each attribute is replaced in one assignment."""
        cols = table.columns
        if "price" in cols:  # NaN / inf / negative prices are unknown: scores stay finite
            price = pl.col("price").cast(pl.Float64, strict=False)
            table = table.with_columns(
                pl.when(price.is_finite() & (price >= 0)).then(price).alias("price")
            )
        if "stock" in cols:  # a NaN stock read from a float column is unknown
            table = table.with_columns(pl.col("stock").cast(pl.Int64, strict=False))
        ids = table["item"].cast(pl.String).to_list()
        self.price = (
            table["price"].cast(pl.Float64).fill_null(1.0).to_numpy() if "price" in cols else None
        )
        names = table["category"].cast(pl.String).fill_null("") if "category" in cols else None
        self.category_names = names.to_numpy() if names is not None else None
        self.categories = (
            names.replace_strict(
                names.unique(maintain_order=True), range(names.n_unique()), return_dtype=pl.Int64
            ).to_numpy()
            if names is not None
            else np.zeros(len(ids), np.int64)
        )
        stock = (
            table["stock"].cast(pl.Int64).fill_null(-1).to_numpy().copy()
            if "stock" in cols
            else np.full(len(ids), -1, np.int64)
        )
        pos = dict(zip(ids, range(len(ids)), strict=True))
        for item, n in self.stock_overrides.items():
            if item in pos:
                stock[pos[item]] = n
        self.stock = stock
        self.out_of_stock = stock == 0  # kept in step with stock by set_stock
        self.is_new = is_new
        self.new_positions = np.flatnonzero(is_new)
        self._info = {c: table[c].to_list() for c in cols if c not in ("item", "stock")}
        self.table = table
        self.ids = ids
        self.pos = pos

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def position(self, item: str) -> int:
        """The item's row; :class:`UnknownItemError` if unknown."""
        try:
            return self.pos[item]
        except KeyError:
            raise UnknownItemError(f"unknown item '{item}'") from None

    def has_item(self, item: str) -> bool:
        return item in self.pos

    def attributes(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Title, category, brand, price, stock (None where unknown) of items by position."""
        rows = []
        for p in np.asarray(positions, dtype=np.int64).tolist():
            row = {col: values[p] for col, values in self._info.items()}
            row["stock"] = int(self.stock[p]) if self.stock[p] >= 0 else None
            rows.append(row)
        return rows

    def title(self, position: int) -> str | None:
        titles = self._info.get("title")
        return titles[position] if titles is not None else None

    def new_items(self) -> list[str]:
        """Items without training events (launched after the model's data, or added)."""
        return [self.ids[p] for p in self.new_positions.tolist()]

    def set_stock(self, stock: Mapping[str, int]) -> list[str]:
        """Set live stock levels (0 = out of stock); returns the ids it does not know. The
        levels are kept in :attr:`stock_overrides` (a reload re-applies them)."""
        unknown = [i for i in stock if i not in self.pos]
        with self._lock:
            for item, n in stock.items():
                p = self.pos.get(item)
                if p is not None:
                    self.stock[p] = int(n)
                    self.out_of_stock[p] = int(n) == 0
                    self.stock_overrides[item] = int(n)
        return unknown

    def check_new(self, items: pl.DataFrame) -> pl.DataFrame:
        """New product rows, checked: an ``item`` column of distinct ids not in the catalog,
        and only :data:`ATTRIBUTES` besides it.

        Raises:
            CatalogError: rows that cannot be added (the message says why).
            DuplicateItemError: ids already in the catalog.
        """
        if "item" not in items.columns or items.height == 0:
            raise CatalogError("new products need at least one row with an 'item' id")
        extra = sorted(set(items.columns) - {"item", *ATTRIBUTES})
        if extra:
            raise CatalogError(f"unknown product columns {extra}; allowed: item, {ATTRIBUTES}")
        ids = items["item"].cast(pl.String)
        if ids.null_count() or ids.is_duplicated().any():
            raise CatalogError("new products need distinct, non-empty item ids")
        known = [i for i in ids.to_list() if i in self.pos]
        if known:
            raise DuplicateItemError(f"already in the catalog: {known[:10]}")
        return items.with_columns(ids)

    def add_items(self, items: pl.DataFrame, scorer: Scorer, retrieval: Retrieval) -> np.ndarray:
        """Add products at run time: to the scorer, the retrieval vectors, this table, and
        last the retrieval index.

        The order keeps every request consistent: a position reaches the candidates (through
        the index, swapped in last) only once the scorer, the vectors and the catalog know it.

        Args:
            items: ``item`` plus any of :data:`ATTRIBUTES`, one row per new product.
            scorer: the artifact's scorer; it needs ``add_items(items) -> positions``.
            retrieval: the candidate sources to extend.

        Returns:
            ``(M,)`` the new positions (``n_items ... n_items + M - 1``).

        Raises:
            CatalogError: the recipe cannot score new products, or the rows are bad.
        """
        hook = getattr(scorer, "add_items", None)
        if not callable(hook):
            raise CatalogError(
                f"the '{scorer.recipe}' recipe cannot score products added at run time (its "
                "scorer has no add_items): add them to the data and train again, or serve a "
                "recipe that scores items from their attributes (content)"
            )
        items = self.check_new(items)
        with self._lock:
            n = self.n_items
            positions = np.asarray(hook(items), dtype=np.int64)
            expected = np.arange(n, n + items.height)
            if not np.array_equal(positions, expected) or len(scorer.items) != n + items.height:
                raise CatalogError(
                    f"the '{scorer.recipe}' scorer put the new products at positions "
                    f"{positions.tolist()[:5]}..., not after the catalog's {n} items"
                )
            index = retrieval.add_items(items, publish=False)
            table = pl.concat([self.table, items], how="diagonal_relaxed")
            self._set(table, np.concatenate([self.is_new, np.ones(items.height, dtype=bool)]))
            self.added = pl.concat([self.added, items], how="diagonal_relaxed")
            retrieval.index = index
        return positions
