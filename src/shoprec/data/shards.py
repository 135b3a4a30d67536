"""Training rows as Parquet shards, read one shard at a time: data larger than memory.

:class:`TensorData` holds every row as one tensor per column; for tens of millions of rows
that is more memory than a machine has. :class:`ShardedData` is the same columns written as
a folder of Parquet files (``shard-00000.parquet`` ... plus ``shards.json``), and it offers
what the training loop and the evaluators use of :class:`TensorData`:

* ``len(data)`` — rows over all shards (from ``shards.json``, nothing read);
* :meth:`ShardedData.epoch` — one epoch of shuffled global batches for one rank of
  ``world_size``, one shard in memory at a time (plus the rows a shard left over for the
  next batch): the shards in a seeded random order, the rows of each shard in a seeded
  random order, and batch ``k`` made of the next ``batch_size`` rows of that stream. Rank
  ``r`` takes every ``world_size``-th row of each global batch from ``r`` on, exactly as
  :func:`shoprec.train.distributed.global_batches` does for in-memory rows, so every row is
  used once per epoch across the ranks, any number of processes steps on the same global
  batches, and a single shard gives exactly the in-memory order (same generator draws);
* :meth:`ShardedData.batches` — rows in file order (what :func:`~shoprec.train.loop.predict`
  uses);
* ``data.columns[name]`` — one whole column, read from every shard when asked (labels and
  ids for metrics), never all columns at once.

Rows are spread over the shards at random when written (:class:`ShardWriter` with
``scatter=True``), so each shard is a sample of all rows and shuffling within shards and
across the shard order mixes the whole data.

Peak memory while training is one shard (``shard_rows`` rows of int64 / float32 columns,
about 80 MB per million rows of the pairs recipe) plus the model, whatever the total.

Example:
    >>> import tempfile
    >>> data = TensorData({"x": torch.arange(10), "y": torch.zeros(10)})
    >>> sharded = ShardedData.write(data, tempfile.mkdtemp(), shard_rows=4)
    >>> len(sharded), sharded.n_shards
    (10, 3)
    >>> g = torch.Generator().manual_seed(0)
    >>> sorted(int(x) for b, _ in sharded.epoch(3, 0, 1, g) for x in b["x"])
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from shoprec.data.batches import TensorData, to_tensors

log = logging.getLogger(__name__)

__all__ = ["ShardWriter", "ShardedData"]

INDEX = "shards.json"
_FORMAT = "shoprec.shards"


def _to_disk(name: str, values: np.ndarray) -> pl.Series:
    """A column as stored: integers as Int32 when they fit (ids), floats as Float32."""
    if values.dtype.kind in "iub":
        if len(values) == 0 or (values.min() >= -(2**31) and values.max() < 2**31):
            return pl.Series(name, values.astype(np.int32, copy=False))
        return pl.Series(name, values.astype(np.int64, copy=False))
    return pl.Series(name, values.astype(np.float32, copy=False))


def _read(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of one shard as arrays. Read by pyarrow without threads: training processes
    may be forked (e.g. by torch.multiprocessing) from one whose reader pools were running,
    and a pool copied mid-use into a forked child can hang it."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns, use_threads=False)
    return {c: table.column(c).to_numpy() for c in table.column_names}


class ShardWriter:
    """Writes encoded rows into ``n_shards`` Parquet files of a folder.

    Args:
        directory: the folder (created).
        n_shards: the number of files.
        scatter: True: every written row goes to a shard drawn at random (seeded), so each
            shard is a random sample of all rows; False: each :meth:`write` call goes to the
            next shard in turn (rows keep their order within a call).
        seed: seed of the scatter draws.
    """

    def __init__(
        self, directory: str | Path, n_shards: int, *, scatter: bool = True, seed: int = 0
    ) -> None:
        if n_shards < 1:
            raise ValueError(f"n_shards must be at least 1, got {n_shards}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_shards = n_shards
        self.scatter = scatter
        self._rng = np.random.default_rng(seed)
        self._writers: dict[int, Any] = {}
        self._rows = [0] * n_shards
        self._next = 0
        self._schema: dict[str, str] | None = None

    def _file(self, shard: int) -> str:
        return f"shard-{shard:05d}.parquet"

    def _append(self, shard: int, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        writer = self._writers.get(shard)
        if writer is None:
            writer = pq.ParquetWriter(self.directory / self._file(shard), table.schema)
            self._writers[shard] = writer
        writer.write_table(table)
        self._rows[shard] += frame.height

    def write(self, columns: Mapping[str, np.ndarray | Tensor]) -> None:
        """Append rows (columns of equal length: int ids, float features and labels)."""
        frame = pl.DataFrame(
            [
                _to_disk(k, v.numpy() if isinstance(v, Tensor) else np.asarray(v))
                for k, v in columns.items()
            ]
        )
        schema = {k: str(v) for k, v in frame.schema.items()}
        if self._schema is None:
            self._schema = schema
        elif schema != self._schema:
            raise ValueError(f"rows of another schema: {schema}, expected {self._schema}")
        if frame.height == 0:
            return
        if not self.scatter:
            self._append(self._next % self.n_shards, frame)
            self._next += 1
            return
        shard = self._rng.integers(0, self.n_shards, size=frame.height)
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(self.n_shards + 1))
        for s in range(self.n_shards):
            lo, hi = bounds[s], bounds[s + 1]
            if hi > lo:
                self._append(s, frame[order[lo:hi]])

    def close(self) -> ShardedData:
        """Finish the files, write ``shards.json``; the written data."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        shards = [{"file": self._file(s), "rows": r} for s, r in enumerate(self._rows) if r > 0]
        index = {
            "format": _FORMAT,
            "version": 1,
            "rows": sum(self._rows),
            "columns": self._schema or {},
            "shards": shards,
        }
        (self.directory / INDEX).write_text(json.dumps(index, indent=1))
        return ShardedData(self.directory)


class _Columns(Mapping[str, Tensor]):
    """``data.columns``: a column is read from every shard when asked for, not before."""

    def __init__(self, data: ShardedData) -> None:
        self._data = data

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._data.column_names:
            raise KeyError(name)
        parts = [_read(f, [name])[name] for f in self._data.files]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return to_tensors({name: values})[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data.column_names)

    def __len__(self) -> int:
        return len(self._data.column_names)


class ShardedData:
    """Encoded rows in Parquet shards (see the module docstring), read one shard at a time.

    Args:
        directory: a folder :class:`ShardWriter` (or :meth:`write`) wrote.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index = json.loads((self.directory / INDEX).read_text())
        if index.get("format") != _FORMAT:
            raise ValueError(f"{self.directory / INDEX} is not a shoprec shard index")
        self.column_names: list[str] = list(index["columns"])
        self.shard_rows: list[int] = [int(s["rows"]) for s in index["shards"]]
        self.files: list[Path] = [self.directory / s["file"] for s in index["shards"]]
        self._rows = int(index["rows"])

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        return f"ShardedData({self.directory}, rows={self._rows:,}, shards={self.n_shards})"

    @property
    def n_shards(self) -> int:
        return len(self.files)

    @property
    def columns(self) -> Mapping[str, Tensor]:
        """Whole columns by name, each read from the shards when asked for."""
        return _Columns(self)

    def head(self, n_shards: int) -> ShardedData:
        """The same data restricted to its first ``n_shards`` shards (a view: nothing is
        copied), e.g. to time training on part of a large set."""
        view = copy.copy(self)
        view.files = self.files[:n_shards]
        view.shard_rows = self.shard_rows[:n_shards]
        view._rows = sum(view.shard_rows)
        return view

    def read(self, shard: int) -> dict[str, Tensor]:
        """All columns of one shard as tensors (ints as int64, floats as float32)."""
        return to_tensors(_read(self.files[shard]))

    def batches(self, batch_size: int) -> Iterator[dict[str, Tensor]]:
        """Rows in file order, at most ``batch_size`` at a time (a batch never spans two
        shards)."""
        for shard in range(self.n_shards):
            cols = self.read(shard)
            n = next(iter(cols.values())).shape[0]
            for start in range(0, n, batch_size):
                yield {k: v[start : start + batch_size] for k, v in cols.items()}

    def epoch(
        self, batch_size: int, rank: int, world_size: int, generator: torch.Generator
    ) -> Iterator[tuple[dict[str, Tensor], int]]:
        """One shuffled epoch: this rank's part of each global batch and the batch's size.

        Args:
            batch_size: rows per global batch (over all ranks).
            rank: this process's rank.
            world_size: the number of processes.
            generator: the shuffling generator, seeded alike on every rank.

        Yields:
            ``(batch, global_rows)`` as the in-memory path does: ``batch`` holds every
            ``world_size``-th row of the global batch from ``rank`` on. A last global batch
            with fewer rows than processes is dropped.
        """
        order = torch.randperm(self.n_shards, generator=generator) if self.n_shards > 1 else [0]
        carry: dict[str, Tensor] | None = None  # rows of earlier shards not yet in a batch
        for i, shard in enumerate(order):
            cols = self.read(int(shard))
            n = next(iter(cols.values())).shape[0]
            perm = torch.randperm(n, generator=generator)
            if carry is not None:
                held = next(iter(carry.values())).shape[0]
                cols = {k: torch.cat([carry[k], cols[k]]) for k in cols}
                perm = torch.cat([torch.arange(held), perm + held])
            last = i == self.n_shards - 1
            total = perm.shape[0]
            carry = None
            for start in range(0, total, batch_size):
                chunk = perm[start : start + batch_size]
                if len(chunk) < batch_size and not last:  # finished with the next shard's rows
                    carry = {k: v.index_select(0, chunk) for k, v in cols.items()}
                    break
                if len(chunk) < world_size:
                    break
                mine = chunk[rank::world_size]
                yield {k: v.index_select(0, mine) for k, v in cols.items()}, len(chunk)
            del cols

    @classmethod
    def write(
        cls,
        data: TensorData,
        directory: str | Path,
        *,
        shard_rows: int = 1_000_000,
        scatter: bool = False,
        seed: int = 0,
    ) -> ShardedData:
        """Write in-memory rows as shards of at most ``shard_rows`` rows (in order unless
        ``scatter``); the written data."""
        n = len(data)
        n_shards = max(1, -(-n // shard_rows))
        writer = ShardWriter(directory, n_shards, scatter=scatter, seed=seed)
        if scatter:
            for start in range(0, n, shard_rows):
                writer.write({k: v[start : start + shard_rows] for k, v in data.columns.items()})
        else:
            for start in range(0, max(n, 1), shard_rows):
                writer.write({k: v[start : start + shard_rows] for k, v in data.columns.items()})
        return writer.close()
