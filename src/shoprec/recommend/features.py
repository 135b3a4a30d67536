"""Model input for one shopper x many items without a dataframe per request.

:meth:`FeatureBuilder.pairs <shoprec.pipeline.FeatureBuilder.pairs>` joins attribute tables
and encodes every (user, item) pair through Polars: right for training and batch scoring,
but on the serving path it costs milliseconds per request. Every feature column belongs to
one side (the item table's columns are the item side; the user id, the user's attributes
and their main domain are the user side), so :class:`PairEncoder` encodes the item side of
the whole catalog once, the user side once per shopper (all known shoppers at start, others
on first sight), and assembles a batch by indexing: no Python loop over candidates.

Example:
    >>> enc = PairEncoder(scorer.builder)  # a PairsScorer's  # doctest: +SKIP
    >>> batch = enc.batch("u12", np.array([3, 17, 40]))  # doctest: +SKIP
    >>> model.predict(batch)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import polars as pl
import torch
from torch import Tensor

from shoprec.data.encode import OOV
from shoprec.pipeline import FeatureBuilder

#: Shoppers outside the user table whose encoded row is kept (least recently used dropped).
UNKNOWN_CACHE = 10_000
#: Cache key of every shopper outside the user table whose id the encoder does not know
#: (their user-side input is the same row: OOV id, no attributes).
_ANONYMOUS = "\x00anonymous"


def split_columns(builder: FeatureBuilder) -> tuple[list[str], list[str]]:
    """The builder's feature columns of the user side and of the item side."""
    item_side = set(builder.item_table.columns)
    cols = builder.categorical + builder.numeric
    return [c for c in cols if c not in item_side], [c for c in cols if c in item_side]


def _encode(builder: FeatureBuilder, frame: pl.DataFrame, columns: list[str]) -> dict[str, Tensor]:
    arrays = builder.encoder.transform(frame, columns)
    return {
        k: torch.from_numpy(np.array(v, copy=True)).to(
            torch.float32 if np.issubdtype(v.dtype, np.floating) else torch.int64
        )
        for k, v in arrays.items()
    }


class PairEncoder:
    """Cached item-side and user-side model input of a :class:`FeatureBuilder`.

    Args:
        builder: the artifact's feature builder.
        users: shoppers whose rows are encoded up front (the user table by default).
    """

    def __init__(self, builder: FeatureBuilder, users: list[str] | None = None) -> None:
        self.builder = builder
        self.user_columns, self.item_columns = split_columns(builder)
        items = builder.item_table
        self.items: dict[str, Tensor] = _encode(builder, items, self.item_columns)
        if users is None:
            users = builder.user_table["user"].to_list() if builder.user_table is not None else []
        self._user_row = {u: i for i, u in enumerate(users)}
        any_item = items["item"][:1]
        self.users: dict[str, Tensor] = (
            _encode(builder, builder.frame(users, any_item), self.user_columns) if users else {}
        )
        self._in_table = (
            set(builder.user_table["user"].to_list()) if builder.user_table is not None else set()
        )
        self._user_ids = (
            builder.encoder.idmaps_.get("user") if "user" in self.user_columns else None
        )
        self._unknown: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def user_row(self, user: str) -> dict[str, Tensor]:
        """The shopper's user-side input, each value of shape ``(1,)`` (or ``(1, ...)``)."""
        i = self._user_row.get(user)
        if i is not None:
            return {k: v[i : i + 1] for k, v in self.users.items()}
        key = user
        if user not in self._in_table and (
            self._user_ids is None or self._user_ids.id(user) == OOV
        ):
            key = _ANONYMOUS
        with self._lock:
            row = self._unknown.get(key)
            if row is not None:
                self._unknown.move_to_end(key)
                return row
        any_item = self.builder.item_table["item"][:1]
        row = _encode(self.builder, self.builder.frame([user], any_item), self.user_columns)
        with self._lock:
            self._unknown[key] = row
            if len(self._unknown) > UNKNOWN_CACHE:
                self._unknown.popitem(last=False)
        return row

    def batch(self, user: str, positions: np.ndarray | Tensor) -> dict[str, Tensor]:
        """Model input for ``user`` x the items at ``positions`` (rows of the item table)."""
        index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        n = index.shape[0]
        out = {k: v.index_select(0, index) for k, v in self.items.items()}
        for k, v in self.user_row(user).items():
            out[k] = v.expand(n, *v.shape[1:])
        return out
