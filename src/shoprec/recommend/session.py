"""What shoppers did since the model was trained: the real-time signal of recommendations.

A :class:`SessionLog` keeps each shopper's most recent events in memory so that the next
recommendation uses them: they go to the scorer (``score(..., events=...)``: recipes with
history features add them to what they know of the shopper), their items seed co-occurrence
candidates, move the two-tower query towards them, boost similar items in the re-ranking and
(for excluded behaviors such as buys) filter them out. :class:`LiveEvents` is one shopper's
share of it, as a request reads it.

It is thread-safe and in memory, for one process (the Python API, ``shoprec recommend``). The
HTTP service hands its recommenders :class:`shoprec.serve.store.StoredSessions` instead, the
same interface over its SQLite event store: each read is a query, so every worker process
of ``shoprec serve --workers N`` sees every acknowledged event, and a forgotten shopper's
events are gone for all of them at once.

Example:
    >>> log = SessionLog(max_events=3)
    >>> event = log.add("u1", "i7", "view")
    >>> [e.item for e in log.recent("u1")]
    ['i7']
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from shoprec.recommend.types import RecommenderConfig


@dataclass(frozen=True)
class Event:
    """One shopper event."""

    user: str
    item: str
    behavior: str
    timestamp: float  # seconds since the epoch


class SessionLog:
    """The last ``max_events`` events of each shopper, newest last.

    Args:
        max_events: events kept per shopper.
    """

    def __init__(self, max_events: int = 50) -> None:
        self.max_events = max_events
        self._events: dict[str, deque[Event]] = {}
        self._lock = threading.Lock()

    def add(self, user: str, item: str, behavior: str, timestamp: float | None = None) -> Event:
        """Record one event (``timestamp`` defaults to now) and return it."""
        event = Event(user, item, behavior, time.time() if timestamp is None else timestamp)
        with self._lock:
            queue = self._events.setdefault(user, deque(maxlen=self.max_events))
            queue.append(event)
        return event

    def extend(self, events: Iterable[Event]) -> None:
        """Record many events, oldest first."""
        for e in events:
            self.add(e.user, e.item, e.behavior, e.timestamp)

    def recent(self, user: str, limit: int | None = None) -> list[Event]:
        """The shopper's latest events, oldest first (at most ``limit``)."""
        with self._lock:
            events = list(self._events.get(user, ()))
        return events[-limit:] if limit else events

    def forget(self, user: str) -> int:
        """Drop every live event of ``user``; returns how many there were."""
        with self._lock:
            return len(self._events.pop(user, ()))

    def users(self) -> list[str]:
        """Shoppers with at least one recorded event."""
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._events.values())


@dataclass
class LiveEvents:
    """One shopper's live events as a request uses them.

    Attributes:
        events: the latest ``recent_events`` events on known items, oldest first.
        positions: ``(R,)`` their item positions.
        weights: ``(R,)`` recency weights (the newest 1, each older one ``decay`` times less).
        held_positions: ``(H,)`` positions of every held event on a known item (filters).
        held_behaviors: their behaviors.
        frame: the same events (``user, item, behavior``) for the scorer's ``events``
            argument, or None when there is none.
    """

    events: list[Event]
    positions: np.ndarray
    weights: np.ndarray
    held_positions: np.ndarray
    held_behaviors: list[str]
    frame: pl.DataFrame | None

    @classmethod
    def of(
        cls, log: SessionLog, user: str, known: Mapping[str, int], config: RecommenderConfig
    ) -> LiveEvents:
        """The live events of ``user`` in ``log`` whose item is in ``known`` (id -> position),
        the latest ``config.recent_events`` weighted by ``config.session_decay``."""
        recent, decay = config.recent_events, config.session_decay
        held = [e for e in log.recent(user) if e.item in known]
        events = held[-recent:] if recent else []
        positions = np.array([known[e.item] for e in events], dtype=np.int64)
        weights = decay ** np.arange(len(events))[::-1].astype(float)
        items = [e.item for e in held]
        behaviors = [e.behavior for e in held]
        frame = None
        if held:
            frame = pl.DataFrame(
                {"user": [user] * len(held), "item": items, "behavior": behaviors},
                schema={"user": pl.String, "item": pl.String, "behavior": pl.String},
            )
        held_pos = np.array([known[i] for i in items], dtype=np.int64)
        return cls(events, positions, weights, held_pos, behaviors, frame)
