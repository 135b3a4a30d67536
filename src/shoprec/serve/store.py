"""The event store: every event the service acknowledges is in SQLite (WAL mode) first.

``append`` commits before it returns, with ``synchronous=FULL`` so the write-ahead log is
synced on each commit: an acknowledged event survives a crash of the process or the machine.
WAL lets readers (``recent_of``, ``count``) run while a write is in progress, in this process
(one read connection per thread) and in every other process serving the same file.

The store is the one source of truth of the service's live state, so that several worker
processes (``shoprec serve --workers N``) answer alike:

* **Live events**: :class:`StoredSessions` is the :class:`~shoprec.recommend.SessionLog` the
  service hands its recommenders; a request reads the shopper's latest events from the store
  (one indexed query), so an event acknowledged by one worker is in the next answer of any.
* **Changes** (a model reload, stock levels, products added, a shopper forgotten): each is a
  row of the ``changes`` table (:meth:`EventStore.record_change`), numbered in the order they
  were made. A worker compares the newest number with the last one it applied on every
  request (:meth:`EventStore.last_change`, one indexed read) and applies what it lacks, in
  order, before it answers. :meth:`EventStore.change_lock` (an ``flock`` beside the
  database) lets one worker at a time make a change. A service start writes a ``start`` row
  (:meth:`EventStore.begin_epoch`); a worker that starts (or restarts) replays the rows since
  it, so it serves what the others serve.

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
    >>> [e.item for e in StoredSessions(store).recent("u1")]
    ['i2']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shoprec.recommend.session import Event, SessionLog

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
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    made_at REAL NOT NULL,
    pid INTEGER NOT NULL
);
"""
#: How long a connection waits for another one's lock before it fails, milliseconds.
BUSY_TIMEOUT_MS = 10_000
#: Kinds of rows in the ``changes`` table.
CHANGE_KINDS = ("start", "reload", "forget", "stock", "catalog")


@dataclass(frozen=True)
class Change:
    """One row of the ``changes`` table: what a worker changed in the served state.

    Attributes:
        id: its number (changes apply in this order).
        kind: one of :data:`CHANGE_KINDS`.
        payload: what to apply (``artifact`` for start / reload / forget, ``user`` for
            forget, ``stock`` for stock, ``items`` (product rows) for catalog).
        pid: the process that made it.
    """

    id: int
    kind: str
    payload: dict[str, Any]
    pid: int


class EventStore:
    """Append-only SQLite table of events and of served-state changes, safe to share between
    threads and between processes.

    Args:
        path: the database file (created with its folder if missing), or ``":memory:"`` (one
            process only).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.shared = self.path != ":memory:"
        if self.shared:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._lock = threading.Lock()  # the write connection's
        self._local = threading.local()  # one read connection per thread (files only)
        self._readers: list[sqlite3.Connection] = []
        with self._lock:
            self.journal_mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted events are overwritten
            self._db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return db

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: this thread's own one for a file (readers never wait
        for each other or for a writer in WAL mode), the write connection in memory."""
        if not self.shared:
            with self._lock:
                yield self._db
            return
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            db.execute("PRAGMA query_only=ON")
            with self._lock:
                self._readers.append(db)
        yield db

    # --------------------------------------------------------------------------- events
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
        with self._reading() as db:
            rows = db.execute(
                "SELECT user, item, behavior, timestamp FROM ("
                "  SELECT *, ROW_NUMBER() OVER (PARTITION BY user ORDER BY id DESC) AS n"
                "  FROM events"
                ") WHERE n <= ? ORDER BY id",
                (per_user,),
            ).fetchall()
        return [Event(u, i, b, float(t)) for u, i, b, t in rows]

    def recent_of(self, user: str, limit: int = 50) -> list[Event]:
        """The latest ``limit`` events of one shopper, oldest first (one indexed query)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT item, behavior, timestamp FROM events WHERE user = ? "
                "ORDER BY id DESC LIMIT ?",
                (user, limit),
            ).fetchall()
        return [Event(user, i, b, float(t)) for i, b, t in reversed(rows)]

    def users(self) -> list[str]:
        """Shoppers with at least one stored event."""
        with self._reading() as db:
            return [u for (u,) in db.execute("SELECT DISTINCT user FROM events")]

    def held(self, per_user: int) -> int:
        """Stored events counting at most ``per_user`` per shopper (the live events)."""
        with self._reading() as db:
            n = db.execute(
                "SELECT SUM(MIN(n, ?)) FROM (SELECT COUNT(*) AS n FROM events GROUP BY user)",
                (per_user,),
            ).fetchone()[0]
        return int(n or 0)

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
        with self._reading() as db:
            rows = db.execute(
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
        with self._reading() as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -------------------------------------------------------------------------- changes
    def record_change(self, kind: str, payload: dict[str, Any]) -> int:
        """Store one change of the served state (committed before it returns); returns its
        number. Hold :meth:`change_lock` from before the change was made until this."""
        if kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {kind!r}; known: {CHANGE_KINDS}")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO changes (kind, payload, made_at, pid) VALUES (?, ?, ?, ?)",
                (kind, json.dumps(payload), time.time(), os.getpid()),
            )
            return int(cur.lastrowid or 0)

    def begin_epoch(self, artifact: str | Path) -> int:
        """Mark a service start serving ``artifact``: its workers replay the changes from
        this one (changes of earlier runs are not replayed); returns its number."""
        return self.record_change("start", {"artifact": str(artifact)})

    def last_change(self) -> int:
        """The newest change's number (0: none); one read of the table's last row."""
        with self._reading() as db:
            return int(db.execute("SELECT MAX(id) FROM changes").fetchone()[0] or 0)

    def changes_since(self, after: int) -> list[Change]:
        """Changes numbered above ``after``, in order."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, kind, payload, pid FROM changes WHERE id > ? ORDER BY id", (after,)
            ).fetchall()
        return [Change(int(i), k, json.loads(p), int(pid)) for i, k, p, pid in rows]

    @contextlib.contextmanager
    def change_lock(self, exclusive: bool = True) -> Iterator[None]:
        """Hold the store's change lock (an ``flock`` on ``<database>.lock``): exclusive
        while making a change (so that no other worker records one meanwhile), shared while
        applying others' (so that no artifact is rewritten while it is being loaded).
        Blocking: call it off the event loop. A no-op in memory (one process)."""
        if not self.shared:
            yield
            return
        with open(self.path + ".lock", "a+b") as fh:  # a descriptor of its own each time
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
            self._db.close()


class StoredSessions(SessionLog):
    """A :class:`~shoprec.recommend.SessionLog` whose events are the store's: nothing is held
    in memory, every read is a query, so every process serving the same store sees the same
    live events (and a forgotten shopper's are gone for all of them at once).

    Args:
        store: the event store.
        max_events: events a read returns per shopper (the newest).
    """

    def __init__(self, store: EventStore, max_events: int = 50) -> None:
        super().__init__(max_events)
        self.store = store

    def add(self, user: str, item: str, behavior: str, timestamp: float | None = None) -> Event:
        """Store one event (committed) and return it."""
        event = Event(user, item, behavior, time.time() if timestamp is None else timestamp)
        self.store.append(user, item, behavior, 1, event.timestamp)
        return event

    def extend(self, events: Iterable[Event]) -> None:
        for e in events:
            self.add(e.user, e.item, e.behavior, e.timestamp)

    def recent(self, user: str, limit: int | None = None) -> list[Event]:
        """The shopper's latest events from the store, oldest first (at most ``limit``)."""
        events = self.store.recent_of(user, self.max_events)
        return events[-limit:] if limit else events

    def forget(self, user: str) -> int:
        """Delete the shopper's stored events; returns how many live ones there were."""
        live = len(self.recent(user))
        self.store.forget(user)
        return live

    def users(self) -> list[str]:
        return self.store.users()

    def __len__(self) -> int:
        return self.store.held(self.max_events)
