"""The event store: every event the service acknowledges is in SQLite (WAL mode) first.

``append`` commits before it returns, with ``synchronous=FULL`` so the write-ahead log is
synced on each commit: an acknowledged event survives a crash of the process or the machine.
WAL lets readers (``recent``, ``count``) run while a write is in progress.

``forget`` deletes a shopper's events with ``secure_delete`` on (freed pages are overwritten
with zeros) and checkpoints the write-ahead log, so their events are gone from the files, not
only from query results; :meth:`EventStore.frame`, the events as retraining data, no longer
has them.

Example:
    >>> store = EventStore(":memory:")
    >>> store.append("u1", "i2", "view", timestamp=1.0)
    1
    >>> [(e.user, e.item) for e in store.recent()]
    [('u1', 'i2')]
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import polars as pl

from shoprec.recommend.session import Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    behavior TEXT NOT NULL,
    quantity INTEGER NOT NULL DEFAULT 1,
    timestamp REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user, id);
"""


class EventStore:
    """Append-only SQLite table of events, safe to share between threads.

    Args:
        path: the database file (created with its folder if missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self.journal_mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted events are overwritten
            self._db.executescript(_SCHEMA)

    def append(
        self,
        user: str,
        item: str,
        behavior: str,
        quantity: int = 1,
        timestamp: float | None = None,
    ) -> int:
        """Store one event and commit; returns its row id."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (user, item, behavior, quantity, timestamp, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (user, item, behavior, quantity, now if timestamp is None else timestamp, now),
            )  # autocommit mode: committed (and synced) when execute returns
            return int(cur.lastrowid or 0)

    def recent(self, per_user: int = 50) -> list[Event]:
        """The latest ``per_user`` events of every shopper, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user, item, behavior, timestamp FROM ("
                "  SELECT *, ROW_NUMBER() OVER (PARTITION BY user ORDER BY id DESC) AS n"
                "  FROM events"
                ") WHERE n <= ? ORDER BY id",
                (per_user,),
            ).fetchall()
        return [Event(u, i, b, float(t)) for u, i, b, t in rows]

    def forget(self, user: str) -> int:
        """Delete every event of ``user`` (committed and synced) and checkpoint the log so
        that no copy of them stays in the WAL file; returns how many were deleted."""
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE user = ?", (user,))
            deleted = int(cur.rowcount or 0)
            if deleted and self.journal_mode == "wal":
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return deleted

    def frame(self) -> pl.DataFrame:
        """Every stored event as retraining data: ``user, item, behavior, quantity,
        timestamp`` (UTC datetime), in the order they were stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user, item, behavior, quantity, timestamp FROM events ORDER BY id"
            ).fetchall()
        schema = {
            "user": pl.String,
            "item": pl.String,
            "behavior": pl.String,
            "quantity": pl.Int64,
            "timestamp": pl.Float64,
        }
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        return frame.with_columns(
            (pl.col("timestamp") * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
        )

    def count(self) -> int:
        """Number of stored events."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
