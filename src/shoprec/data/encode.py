"""Turn feature columns into model-ready arrays: integer ids and normalised numbers.

:class:`Encoder` follows scikit-learn: configure in ``__init__``, :meth:`Encoder.fit` on the
training part only (learned state ends in ``_``), then :meth:`Encoder.transform` any part.

Id convention for every categorical and sequence column:

* ``0`` — padding (only ever produced to pad sequences),
* ``1`` — OOV: a value unseen in training, seen fewer than ``min_count`` times, or null,
* ``2 .. V+1`` — the ``V`` known values, most frequent first (ties by value), so
  ``vocab_size(col) == V + 2``,
* ``V+2 .. V+1+B`` — only with ``hash_buckets=B > 0``: an unknown or rare (non-null) value goes
  to bucket ``V + 2 + fnv1a64(value) % B`` instead of OOV (null still maps to OOV), so
  ``vocab_size(col) == V + 2 + B``. The hash is FNV-1a 64-bit of the value's UTF-8 string
  (:func:`stable_hash`, vectorised in NumPy): the same bucket in every process, on every
  machine and in every version, unlike Python's ``hash`` or Polars' ``Series.hash``.

Large id spaces (millions of users or items): ``min_count`` keeps only the values seen often
enough to learn an embedding, and ``hash_buckets`` gives the long tail a few shared rows
instead of one OOV row; :meth:`Encoder.memory_bytes` reports what the vocabulary and its
embedding rows cost per id.

Vocabulary keys are strings: values are cast with Polars' ``cast(pl.String)`` before fitting and
before lookup, so ``7`` and ``"7"`` are the same value, and a vocabulary survives JSON unchanged.
(Floats cast as Polars writes them, e.g. ``1.0`` -> ``"1.0"``; bools as ``"true"``/``"false"``.)

Numeric columns are standardised with the training mean and (population) standard deviation;
nulls and NaNs become 0 after normalisation (the training mean), with an optional
``<col>__isnull`` 0/1 flag. A constant column gets std 1.

State is saved as plain JSON (:meth:`Encoder.to_json`), never pickle; a loaded encoder
transforms identically.

Example:
    >>> import polars as pl
    >>> train = pl.DataFrame({"item": ["a", "b", "a"], "price": [1.0, 2.0, 3.0]})
    >>> enc = Encoder(categorical=["item"], numeric=["price"]).fit(train)
    >>> enc.transform(pl.DataFrame({"item": ["a", "zzz"], "price": [2.0, None]}))["item"]
    array([2, 1])
    >>> enc.vocab_size("item")
    4
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shoprec.errors import DataError, ShoprecError

log = logging.getLogger(__name__)

__all__ = ["OOV", "PAD", "Encoder", "IdMap", "NotFittedError", "stable_hash"]

PAD = 0  #: id used to pad sequences
OOV = 1  #: id for unknown, rare or null values
_FIRST = 2  #: id of the first known value
_FORMAT = "shoprec.encoder"
_VERSION = 1
_HASH = "fnv1a64"  #: the bucket hash named in saved state
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


class NotFittedError(ShoprecError):
    """The encoder was used before :meth:`Encoder.fit` (or :meth:`Encoder.from_dict`)."""


def stable_hash(values: Iterable[Any] | pl.Series) -> np.ndarray:
    """FNV-1a 64-bit hash of each value's string (as the vocabulary keys: ``cast(pl.String)``).

    Vectorised over the values: one pass per byte position over the values still that long
    (total work proportional to the bytes hashed). Null hashes as the empty string.

    Args:
        values: the values (a Series or anything Polars can hold).

    Returns:
        ``(N,)`` uint64 hashes; the same for the same value in any process or version.

    Example:
        >>> hex(int(stable_hash(["a"])[0]))  # the published FNV-1a 64 test vector
        '0xaf63dc4c8601ec8c'
    """
    s = values if isinstance(values, pl.Series) else pl.Series(list(values), strict=False)
    s = s.cast(pl.String).fill_null("")
    lens = s.str.len_bytes().to_numpy().astype(np.int64)
    h = np.full(lens.shape[0], _FNV_OFFSET, dtype=np.uint64)
    if not lens.size:
        return h
    data = np.frombuffer(str(s.str.join("").item()).encode("utf-8"), dtype=np.uint8)
    starts = np.cumsum(lens) - lens
    active = np.flatnonzero(lens > 0)
    j = 0
    while active.size:  # byte position j of every value longer than j
        h[active] = (h[active] ^ data[starts[active] + j].astype(np.uint64)) * _FNV_PRIME
        j += 1
        active = active[lens[active] > j]
    return h


@dataclass(frozen=True)
class IdMap:
    """Read-only view of one column's vocabulary: value <-> integer id.

    Attributes:
        column: the column (or shared vocabulary) name.
        values: the known values in id order: ``values[i]`` has id ``i + 2``.
        buckets: hashed ids for unknown and rare values, after the known ones (0: all OOV).

    Example:
        >>> m = IdMap("item", ("a", "b"))
        >>> m.id("b"), m.id("nope"), m.value(2), m.size
        (3, 1, 'a', 4)
    """

    column: str
    values: tuple[str, ...]
    buckets: int = 0

    @property
    def size(self) -> int:
        """Number of ids including padding, OOV and hash buckets (embedding table rows)."""
        return len(self.values) + _FIRST + self.buckets

    def __len__(self) -> int:
        return len(self.values)

    @cached_property
    def index(self) -> dict[str, int]:
        """``{value: id}`` for the known values (built once, on first use)."""
        return {v: i for i, v in enumerate(self.values, start=_FIRST)}

    @cached_property
    def _series(self) -> pl.Series:
        return pl.Series("value", self.values, dtype=pl.String)

    def id(self, value: Any) -> int:
        """The id of one value (OOV for unknown values or None)."""
        if value is None:
            return OOV
        if isinstance(value, str) and (value in self.index or not self.buckets):
            return self.index.get(value, OOV)
        return int(self.encode([value])[0])

    def value(self, id_: int) -> str | None:
        """The value of one id (None for padding, OOV and hash buckets)."""
        if not 0 <= id_ < self.size:
            raise IndexError(f"id {id_} out of range for '{self.column}' (size {self.size})")
        if id_ < _FIRST or id_ >= _FIRST + len(self.values):
            return None
        return self.values[id_ - _FIRST]

    def encode(self, values: Iterable[Any] | pl.Series) -> np.ndarray:
        """Ids (int64) of many values, vectorised."""
        s = values if isinstance(values, pl.Series) else pl.Series(list(values), strict=False)
        ids = _lookup(s, self._series).to_numpy()
        if self.buckets:
            miss = np.flatnonzero((ids == OOV) & s.is_not_null().to_numpy())
            if miss.size:
                ids = ids.copy()
                h = stable_hash(s.gather(miss)) % np.uint64(self.buckets)
                ids[miss] = _FIRST + len(self.values) + h.astype(np.int64)
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str | None]:
        """Values of many ids (None for padding, OOV and hash buckets)."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.size):
            raise IndexError(f"ids out of range for '{self.column}': must be in [0, {self.size})")
        return self._table[arr].tolist()

    @cached_property
    def _table(self) -> np.ndarray:
        table = np.empty(self.size, dtype=object)  # id -> value; None for PAD, OOV, buckets
        table[_FIRST : _FIRST + len(self.values)] = self.values
        return table

    @property
    def known_ids(self) -> np.ndarray:
        """The ids of the known values, ``2 .. V+1`` (int64)."""
        return np.arange(_FIRST, _FIRST + len(self.values), dtype=np.int64)

    def vocab_bytes(self) -> int:
        """Bytes the vocabulary holds in this process: the value strings, their tuple, and
        the lookup Series and ``{value: id}`` dict where they have been built."""
        import sys

        n = sys.getsizeof(self.values) + sum(map(sys.getsizeof, self.values))
        if "_series" in self.__dict__:
            n += int(self._series.estimated_size())
        if "index" in self.__dict__:
            n += sys.getsizeof(self.index)  # the keys are the strings counted above
        return n


def _lookup(s: pl.Series, vocab: pl.Series) -> pl.Series:
    """Map values to ids through one vectorised hash lookup (unknown and null -> OOV)."""
    ids = pl.Series("id", np.arange(_FIRST, vocab.len() + _FIRST, dtype=np.int64))
    out = s.cast(pl.String).replace_strict(vocab, ids, default=OOV, return_dtype=pl.Int64)
    return out.fill_null(OOV)


def _frame(data: Any) -> pl.DataFrame:
    """Accept a DataFrame or anything holding one in ``.df`` (Interactions, Catalog, Users)."""
    if isinstance(data, pl.DataFrame):
        return data
    df = getattr(data, "df", None)
    if isinstance(df, pl.DataFrame):
        return df
    raise TypeError(f"expected a polars DataFrame (or a table with .df); got {type(data)}")


class Encoder:
    """Learn vocabularies and numeric statistics on train; turn frames into arrays.

    Args:
        categorical: columns to map to integer ids (one vocabulary each).
        numeric: columns to standardise with the training mean and std.
        sequences: list columns of ids (e.g. recent items). Either names, each getting its
            own vocabulary learned from the list elements, or a mapping ``{seq_col: col}`` to
            share the vocabulary of categorical column ``col`` (e.g. ``{"hist": "item"}``).
        min_count: values seen fewer times than this in training map to OOV (or to a hash
            bucket): the frequency floor that keeps 10M-user vocabularies small.
        hash_buckets: ids after the known ones that unknown and rare non-null values are
            hashed into (:func:`stable_hash`); 0 (default) maps them all to OOV.
        max_seq_len: keep at most this many of the last elements of each sequence; None keeps
            the longest in the frame being transformed.
        null_flags: also output ``<col>__isnull`` (float32 0/1) for every numeric column.

    Attributes:
        idmaps_: ``{column: IdMap}`` for categorical and own-vocabulary sequence columns
            (:attr:`vocab_` gives the same as ``{column: {value: id}}`` dicts).
        mean_: ``{column: training mean}`` for numeric columns.
        std_: ``{column: training std}`` (1.0 where the std is 0 or undefined).
        n_rows_: number of training rows seen by :meth:`fit`.

    Example:
        >>> enc = Encoder(categorical=["user", "item"], numeric=["price"]).fit(train)
        ... # doctest: +SKIP
        >>> arrays = enc.transform(test)  # {"user": int64 (N,), "price": float32 (N,), ...}
        ... # doctest: +SKIP
        >>> enc.to_json(tmp / "encoder.json")  # doctest: +SKIP
    """

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        sequences: Sequence[str] | Mapping[str, str] = (),
        min_count: int = 1,
        max_seq_len: int | None = None,
        null_flags: bool = False,
        hash_buckets: int = 0,
    ) -> None:
        self.categorical = list(categorical)
        self.numeric = list(numeric)
        if isinstance(sequences, Mapping):
            self.sequences: dict[str, str] = {str(k): str(v) for k, v in sequences.items()}
        else:
            self.sequences = {str(s): str(s) for s in sequences}
        self.min_count = int(min_count)
        self.hash_buckets = int(hash_buckets)
        self.max_seq_len = None if max_seq_len is None else int(max_seq_len)
        self.null_flags = bool(null_flags)
        self._check_config()

    def _check_config(self) -> None:
        names = [*self.categorical, *self.numeric, *self.sequences]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"columns listed more than once: {dup}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1; got {self.min_count}")
        if self.hash_buckets < 0:
            raise ValueError(f"hash_buckets must be >= 0; got {self.hash_buckets}")
        if self.max_seq_len is not None and self.max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1; got {self.max_seq_len}")
        for seq, src in self.sequences.items():
            if src != seq and src not in self.categorical:
                raise ValueError(
                    f"sequence '{seq}' shares the vocabulary of '{src}', "
                    f"which is not a categorical column of this encoder"
                )

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return (
            f"Encoder(categorical={self.categorical}, numeric={self.numeric}, "
            f"sequences={self.sequences}, min_count={self.min_count}, "
            f"hash_buckets={self.hash_buckets}) [{state}]"
        )

    # ------------------------------------------------------------------ fit

    @property
    def columns(self) -> list[str]:
        """Every input column the encoder reads."""
        return [*self.categorical, *self.numeric, *self.sequences]

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "idmaps_")

    def fit(self, data: pl.DataFrame | Any) -> Encoder:
        """Learn vocabularies and numeric statistics from the training frame.

        Args:
            data: the training frame (or Interactions/Catalog/Users); never valid/test.

        Returns:
            self.

        Raises:
            DataError: a configured column is missing or a numeric column is not numeric.
        """
        df = _frame(data)
        self._require_columns(df, self.columns)
        counts = {c: df.get_column(c) for c in self.categorical}
        for seq, src in self.sequences.items():
            if src == seq:
                counts[seq] = self._list_column(df, seq).explode()
        self.idmaps_ = {
            col: IdMap(col, self._learn_vocab(s), self.hash_buckets) for col, s in counts.items()
        }
        self.mean_: dict[str, float] = {}
        self.std_: dict[str, float] = {}
        for col in self.numeric:
            x = self._numeric(df, col).drop_nulls()
            mean = x.mean() if x.len() else None
            std = x.std(ddof=0) if x.len() else None
            self.mean_[col] = float(mean) if mean is not None else 0.0  # type: ignore[arg-type]
            std_f = float(std) if std is not None else 0.0  # type: ignore[arg-type]
            self.std_[col] = std_f if np.isfinite(std_f) and std_f > 0 else 1.0
        self.n_rows_ = df.height
        log.info(
            "Encoder fit on %d rows: %s",
            df.height,
            {c: m.size for c, m in self.idmaps_.items()},
        )
        return self

    def _learn_vocab(self, s: pl.Series) -> tuple[str, ...]:
        s = s.cast(pl.String).drop_nulls().alias("v")
        freq = (
            s.value_counts(name="n")
            .filter(pl.col("n") >= self.min_count)
            .sort(["n", "v"], descending=[True, False])
        )
        return tuple(freq["v"].to_list())

    # ------------------------------------------------------------------ transform

    def transform(
        self, data: pl.DataFrame | Any, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Encode a frame with the learned state.

        Args:
            data: a frame (or Interactions/Catalog/Users) holding the encoder's columns.
            columns: encode only these of the encoder's columns (default: all).

        Returns:
            ``{column: array}``: categorical -> int64 ``(N,)``; numeric -> float32 ``(N,)``
            (plus ``<col>__isnull`` float32 ``(N,)`` with ``null_flags``); sequence -> int64
            ``(N, L)`` right-padded with 0, keeping the last ``max_seq_len`` elements.

        Raises:
            NotFittedError: before :meth:`fit`.
            DataError: a needed column is missing (named), or is of the wrong type.
        """
        self._require_fitted()
        df = _frame(data)
        cols = self.columns if columns is None else list(columns)
        unknown = [c for c in cols if c not in self.columns]
        if unknown:
            raise DataError(
                f"the encoder was not configured for column '{unknown[0]}'; "
                f"it knows {self.columns}",
                column=unknown[0],
            )
        self._require_columns(df, cols)
        out: dict[str, np.ndarray] = {}
        for col in cols:
            if col in self.categorical:
                out[col] = self.idmaps_[col].encode(df.get_column(col))
            elif col in self.numeric:
                x = self._numeric(df, col)
                z = ((x - self.mean_[col]) / self.std_[col]).fill_null(0.0)
                out[col] = z.cast(pl.Float32).to_numpy()
                if self.null_flags:
                    out[f"{col}__isnull"] = x.is_null().cast(pl.Float32).to_numpy()
            else:
                out[col] = self._encode_sequence(df, col)
        return out

    def fit_transform(self, data: pl.DataFrame | Any) -> dict[str, np.ndarray]:
        """:meth:`fit` then :meth:`transform` the same frame."""
        return self.fit(data).transform(data)

    def _encode_sequence(self, df: pl.DataFrame, col: str) -> np.ndarray:
        lists = self._list_column(df, col)
        if self.max_seq_len is not None:
            lists = lists.list.tail(self.max_seq_len)
        lens = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        n = lens.shape[0]
        width = int(lens.max()) if n else 0
        if self.max_seq_len is not None:
            width = self.max_seq_len
        out = np.zeros((n, width), dtype=np.int64)  # (N, L), PAD = 0
        flat = lists.explode(keep_nulls=False, empty_as_null=False)
        ids = self.idmaps_[self.sequences[col]].encode(flat)
        rows = np.repeat(np.arange(n), lens)
        starts = np.cumsum(lens) - lens
        pos = np.arange(rows.shape[0]) - np.repeat(starts, lens)
        out[rows, pos] = ids
        return out

    # ------------------------------------------------------------------ vocabularies

    @property
    def vocab_(self) -> dict[str, dict[str, int]]:
        """``{column: {value: id}}`` for categorical and own-vocabulary sequence columns."""
        self._require_fitted()
        return {col: m.index for col, m in self.idmaps_.items()}

    def vocab_size(self, col: str) -> int:
        """Ids in ``col``'s vocabulary including padding, OOV and buckets (``V + 2 + B``)."""
        return self.ids(col).size

    def ids(self, col: str) -> IdMap:
        """The :class:`IdMap` of a categorical or sequence column (e.g. ``"item"``).

        Example:
            >>> enc.ids("item").values[:3]  # the 3 most frequent items, ids 2, 3, 4
            ... # doctest: +SKIP
        """
        self._require_fitted()
        src = self.sequences.get(col, col)
        if src not in self.idmaps_:
            raise DataError(
                f"'{col}' is not a categorical or sequence column of this encoder "
                f"(those are {[*self.categorical, *self.sequences]})",
                column=col,
            )
        return self.idmaps_[src]

    def inverse_transform_ids(self, col: str, ids: Sequence[int] | np.ndarray) -> list[str | None]:
        """Values of ids of ``col``; padding and OOV give None.

        Example:
            >>> enc.inverse_transform_ids("item", [2, 1])  # doctest: +SKIP
            ['a', None]
        """
        return self.ids(col).decode(ids)

    def memory_bytes(self, dim: int) -> dict[str, dict[str, float]]:
        """What each vocabulary costs: its strings and lookup tables in this process, and
        float32 embedding rows of width ``dim`` (``vocab_size`` rows, buckets included).

        Args:
            dim: the embedding width the model would use.

        Returns:
            ``{column: {"known": V, "rows": V+2+B, "vocab_bytes", "embedding_bytes",
            "vocab_bytes_per_id", "embedding_bytes_per_id", "bytes_per_id"}}`` (per known id).

        Example:
            >>> enc.memory_bytes(32)["user"]["bytes_per_id"]  # doctest: +SKIP
            211.4
        """
        self._require_fitted()
        out: dict[str, dict[str, float]] = {}
        for col, m in self.idmaps_.items():
            vocab, emb = m.vocab_bytes(), m.size * int(dim) * 4
            known = max(len(m), 1)
            out[col] = {
                "known": len(m),
                "rows": m.size,
                "vocab_bytes": vocab,
                "embedding_bytes": emb,
                "vocab_bytes_per_id": vocab / known,
                "embedding_bytes_per_id": emb / known,
                "bytes_per_id": (vocab + emb) / known,
            }
        return out

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Configuration and learned state as plain JSON-ready data."""
        self._require_fitted()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "sequences": dict(self.sequences),
            "min_count": self.min_count,
            "hash_buckets": self.hash_buckets,
            "hash": _HASH,
            "max_seq_len": self.max_seq_len,
            "null_flags": self.null_flags,
            "n_rows": self.n_rows_,
            "vocab": {col: list(m.values) for col, m in self.idmaps_.items()},
            "mean": dict(self.mean_),
            "std": dict(self.std_),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Encoder:
        """Rebuild a fitted encoder from :meth:`to_dict` output."""
        if state.get("format") != _FORMAT or state.get("version") != _VERSION:
            raise DataError(
                f"not a shoprec encoder state (format {state.get('format')!r}, "
                f"version {state.get('version')!r}; expected {_FORMAT!r} v{_VERSION})"
            )
        if state.get("hash", _HASH) != _HASH:
            raise DataError(
                f"encoder state hashes rare values with {state.get('hash')!r}; this shoprec "
                f"knows only {_HASH!r}"
            )
        enc = cls(
            categorical=state["categorical"],
            numeric=state["numeric"],
            sequences=state["sequences"],
            min_count=state["min_count"],
            max_seq_len=state["max_seq_len"],
            null_flags=state["null_flags"],
            hash_buckets=state.get("hash_buckets", 0),  # states written before buckets: 0
        )
        enc.idmaps_ = {
            col: IdMap(col, tuple(str(v) for v in vals), enc.hash_buckets)
            for col, vals in state["vocab"].items()
        }
        enc.mean_ = {k: float(v) for k, v in state["mean"].items()}
        enc.std_ = {k: float(v) for k, v in state["std"].items()}
        enc.n_rows_ = int(state["n_rows"])
        return enc

    def to_json(self, path: str | Path) -> Path:
        """Write the state as UTF-8 JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Encoder:
        """Load an encoder written by :meth:`to_json`."""
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"encoder state is not valid JSON: {e}", file=path) from e
        return cls.from_dict(state)

    # ------------------------------------------------------------------ checks

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("this Encoder is not fitted yet; call fit(train) first")

    @staticmethod
    def _require_columns(df: pl.DataFrame, cols: Iterable[str]) -> None:
        for col in cols:
            if col not in df.columns:
                raise DataError(
                    f"the frame has no column '{col}' (it has {df.columns})", column=col
                )

    @staticmethod
    def _numeric(df: pl.DataFrame, col: str) -> pl.Series:
        s = df.get_column(col)
        if not (s.dtype.is_numeric() or s.dtype == pl.Boolean or s.dtype == pl.Null):
            raise DataError(f"numeric column has type {s.dtype}", column=col)
        s = s.cast(pl.Float64)
        # NaN and +-inf are unknown, like null: one inf would make the mean (and every z) NaN
        return pl.select(pl.when(s.is_finite()).then(s).alias(s.name)).to_series()

    @staticmethod
    def _list_column(df: pl.DataFrame, col: str) -> pl.Series:
        s = df.get_column(col)
        if not isinstance(s.dtype, pl.List | pl.Array):
            raise DataError(f"sequence column must be a list column; it is {s.dtype}", column=col)
        if isinstance(s.dtype, pl.Array):
            s = s.arr.to_list()
        return s
