"""What shoppers did since the model was trained: the real-time signal of recommendations.

The ranking model knows a user by id and attributes, not by what they did a minute ago. A
:class:`SessionLog` keeps each shopper's most recent events in memory so that the next
recommendation uses them: their items seed co-occurrence candidates, move the two-tower query
towards them, boost similar items in the re-ranking and (for buys) filter them out.

It is thread-safe; the HTTP service fills it from its SQLite event store at start-up and shares
one log between the recommenders it swaps in on reload.

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
from collections.abc import Iterable
from dataclasses import dataclass


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

    def users(self) -> list[str]:
        """Shoppers with at least one recorded event."""
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._events.values())
