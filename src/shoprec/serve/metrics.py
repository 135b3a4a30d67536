"""Prometheus metrics in the text exposition format (version 0.0.4), without a dependency.

Request counts and latency histograms per route template (``/recommend/{user}``, never the
raw path, so the number of series stays bounded), plus counters the service bumps itself.

Several worker processes (``shoprec serve --workers N``): each :class:`Metrics` given a
``directory`` writes its counts there (``<pid>.json``, replaced atomically, at most
``flush_every`` seconds apart, and at shutdown) and renders the sum over every file there,
its own counts taken live, so ``/metrics`` reports the whole service whichever worker
answers (the others' counts up to ``flush_every`` seconds old; a stopped worker's last
counts stay in the sums, so counters never go down). Gauges (the model, items, live
events) are the answering worker's.

Example:
    >>> m = Metrics()
    >>> m.observe("GET", "/health", 200, 0.002)
    >>> 'shoprec_requests_total{method="GET",route="/health",status="200"} 1' in m.render()
    True
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Upper bounds (seconds) of the latency histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    esc = {
        k: str(v).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
        for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
    """Thread-safe counters and histograms, rendered as Prometheus text.

    Args:
        directory: where the worker processes of one service share their counts (None: one
            process, nothing written).
        flush_every: most seconds between two writes of this process's counts there.
    """

    def __init__(self, directory: str | Path | None = None, flush_every: float = 1.0) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.flush_every = flush_every
        self._flushed = 0.0
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[float]] = {}  # bucket counts, sum, count
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self._help: dict[str, str] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            h = self._latency.setdefault((method, route), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def inc(self, name: str, help_: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to counter ``name`` (with these labels)."""
        with self._lock:
            self._help[name] = help_
            self._counters[name][tuple(sorted(labels.items()))] += value
        self.maybe_flush()

    def snapshot(self) -> dict[str, Any]:
        """This process's counts as JSON-ready data."""
        with self._lock:
            return {
                "requests": [[*k, n] for k, n in self._requests.items()],
                "latency": [[*k, h] for k, h in self._latency.items()],
                "counters": [
                    [name, [list(p) for p in labels], v]
                    for name, series in self._counters.items()
                    for labels, v in series.items()
                ],
                "help": dict(self._help),
            }

    def maybe_flush(self, force: bool = False) -> None:
        """Write this process's counts to ``directory`` if ``flush_every`` seconds passed
        since the last write (``force``: now); atomic (a temporary file renamed)."""
        if self.directory is None:
            return
        now = time.monotonic()
        if not force and now - self._flushed < self.flush_every:
            return
        self._flushed = now
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, path)

    def _merged(self) -> Metrics:
        """A :class:`Metrics` holding the sums of every process's counts (this one's live)."""
        total = Metrics()
        snaps = [self.snapshot()]
        own = f"{os.getpid()}.json"
        for f in sorted(self.directory.glob("*.json")) if self.directory else []:
            if f.name != own:
                try:
                    snaps.append(json.loads(f.read_text()))
                except (OSError, ValueError):
                    continue  # a worker being replaced: counted at its next write
        for snap in snaps:
            for method, route, status, n in snap["requests"]:
                total._requests[(method, route, status)] += n
            for method, route, h in snap["latency"]:
                mine = total._latency.setdefault((method, route), [0.0] * (len(BUCKETS) + 2))
                for i, x in enumerate(h):
                    mine[i] += x
            for name, labels, v in snap["counters"]:
                total._counters[name][tuple(tuple(p) for p in labels)] += v
            total._help.update(snap["help"])
        return total

    def render(
        self, gauges: Mapping[str, tuple[str, float, Mapping[str, str]]] | None = None
    ) -> str:
        """The exposition text; ``gauges`` maps name -> (help, value, labels). With a
        ``directory``, the counts are the sums over every worker process."""
        if self.directory is not None:
            self.maybe_flush(force=True)
            return self._merged().render(gauges)
        lines = [
            "# HELP shoprec_requests_total HTTP requests by method, route template and status.",
            "# TYPE shoprec_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                labels = _labels({"method": method, "route": route, "status": status})
                lines.append(f"shoprec_requests_total{labels} {n}")
            lines += [
                "# HELP shoprec_request_seconds HTTP request latency by method and route.",
                "# TYPE shoprec_request_seconds histogram",
            ]
            for (method, route), h in sorted(self._latency.items()):
                base = {"method": method, "route": route}
                for bound, n in zip(BUCKETS, h, strict=False):
                    lines.append(
                        f"shoprec_request_seconds_bucket{_labels({**base, 'le': bound})} {n:g}"
                    )
                lines.append(
                    f"shoprec_request_seconds_bucket{_labels({**base, 'le': '+Inf'})} {h[-1]:g}"
                )
                lines.append(f"shoprec_request_seconds_sum{_labels(base)} {h[-2]:.6f}")
                lines.append(f"shoprec_request_seconds_count{_labels(base)} {h[-1]:g}")
            for name, series in sorted(self._counters.items()):
                lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
                for labels, v in sorted(series.items()):
                    lines.append(f"{name}{_labels(dict(labels))} {v:g}")
        for name, (help_, value, labels) in sorted((gauges or {}).items()):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware that times every HTTP request into a :class:`Metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
            self.metrics.maybe_flush()
