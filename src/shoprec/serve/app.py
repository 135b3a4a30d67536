"""The HTTP service: a thin FastAPI layer over :class:`~shoprec.recommend.Recommender`.

It serves any recipe's artifact (``shoprec.artifact.Artifact``): the scorer ranks, live
events reach it through ``scorer.score(..., events=...)``.

::

    GET  /recommend/{user}?k=10&exclude_category=..&fusion=..&explain=false
    GET  /similar/{item}?k=10
    GET  /explain/{user}/{item}
    GET  /history/{user}          GET /users          GET /items/new      GET /audience/{item}
    POST /events                  (API key) stored in SQLite (WAL) before it is acknowledged
    GET  /forecast/{item}         GET /inventory/reorder   (merchant: serve/inventory.py)
    PUT  /admin/stock             (API key) live stock levels
    POST /admin/catalog           (API key) add products at run time (recipes that can score
                                  new products from their attributes; 422 otherwise)
    POST /admin/reload            (API key) swap in a new artifact without dropping requests
    DELETE /users/{user}          (API key) forget a shopper (store, session, artifact)
    GET  /health    GET /metrics (Prometheus text)    GET /docs (OpenAPI)    GET /ui/ (web page)

Bounded and fail-safe (see :class:`ServeLimits`): bodies over ``max_body_bytes`` are refused
(413) before they are read; at most ``max_concurrency`` requests run at once and a short,
bounded queue waits, the rest get 503 with ``Retry-After``; explanations (Integrated
Gradients, the costly option) run one at a time, anonymous callers may ask for few of them
(429 beyond ``anonymous_explains_per_minute``, 401 for ``k`` over ``anonymous_explain_k``).
Reads that reveal a shopper (``/history``, ``/users``, ``/audience``, the audience of
``/items/new``, the "because" history item of explanations) need the read key or the write
key unless ``private_reads`` is off. Every error answer, 4xx or 5xx, has one body
(:class:`~shoprec.serve.schemas.ErrorOut`), and every status a route can answer is in the
OpenAPI document.

The artifact is loaded in the lifespan. Every request reads the current recommender once and
uses that object to the end, so a reload (which builds the new one off the event loop, then
swaps one reference) never drops or mixes a request. Stock set and products added through
the API are applied again after a reload. Write and admin endpoints need the ``X-API-Key``
header.

Several worker processes (``shoprec serve --workers N``, :func:`worker_app`) serve one
SQLite store alike, because the store holds the live state (see :mod:`shoprec.serve.store`):
live events are read from it per request (:class:`~shoprec.serve.store.StoredSessions`),
and every change of the served state (reload, stock, products added, a shopper forgotten) is
a numbered row that each worker applies, in order, before it answers its next request
(:meth:`Service.sync`). Every answer names its worker in ``X-Shoprec-Worker`` (the process
id); ``/metrics`` counts the requests of the worker that answers (see
:mod:`shoprec.serve.metrics`).

Example:
    >>> app = create_app(ServeConfig("runs/sim_mmoe", api_key="secret"))  # doctest: +SKIP
    >>> uvicorn.run(app)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import shoprec
from shoprec.artifact import Artifact
from shoprec.recommend import (
    CatalogError,
    DuplicateItemError,
    Recommender,
    RecommenderConfig,
    SessionLog,
    UnknownItemError,
)
from shoprec.recommend.explain import Explanation, sentence
from shoprec.serve import inventory
from shoprec.serve import schemas as s
from shoprec.serve.limits import BodyLimit, ConcurrencyLimit, RateLimit
from shoprec.serve.metrics import Metrics, MetricsMiddleware
from shoprec.serve.store import Change, EventStore, StoredSessions

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
WORKER_HEADER = "X-Shoprec-Worker"
#: The environment variable through which ``shoprec serve --workers N`` hands each worker
#: process its :class:`ServeConfig` (JSON; see :func:`worker_app`).
CONFIG_ENV = "SHOPREC_SERVE_CONFIG"
STATIC = resources.files("shoprec.serve") / "static"


@dataclass
class ServeLimits:
    """How much work one request may cause (the defaults suit a small shop on a few cores).

    Attributes:
        max_body_bytes: the largest request body (``Content-Length`` checked before the body
            is read, streamed bodies counted as they arrive); 413 beyond.
        max_concurrency: requests running at once (``/health`` and ``/metrics`` exempt).
        max_queue: requests waiting for a turn; more are answered 503 with ``Retry-After``.
        queue_timeout: seconds a request may wait for its turn before a 503.
        retry_after: the ``Retry-After`` of a 503 or 429, seconds.
        max_explaining: requests computing explanations (Integrated Gradients) at once; one
            more gets a 503 at once.
        anonymous_explain_k: ``k`` of ``/recommend?explain=true`` without a key (401 above).
        anonymous_explains_per_minute: explained requests per client address per minute
            without a key (429 above).
    """

    max_body_bytes: int = 1_000_000
    max_concurrency: int = 4
    max_queue: int = 32
    queue_timeout: float = 0.05
    retry_after: int = 1
    max_explaining: int = 1
    anonymous_explain_k: int = 10
    anonymous_explains_per_minute: int = 30


@dataclass
class ServeConfig:
    """How to serve an artifact.

    Attributes:
        artifact: the artifact folder (retrieval files are built on first load if missing).
        db: the SQLite event store; ``<artifact>/events.sqlite`` by default.
        api_key: the key for write and admin endpoints; a random one (logged) when None. It
            also opens the private reads.
        recommender: recommender knobs (fusion, candidate counts, diversity, ...); None: the
            artifact's ``serve:`` config section.
        session_events: live events kept per shopper.
        read_key: a key that opens the reads revealing a shopper (and nothing else); None:
            only ``api_key`` opens them.
        private_reads: False: ``/history``, ``/users``, ``/audience`` and explanations'
            history item are open to anyone (a demo, a closed network).
        limits: request size, concurrency and cost limits (:class:`ServeLimits`).
        artifact_root: ``POST /admin/reload`` loads only artifacts inside this folder (403
            otherwise); None: the folder holding ``artifact`` at start-up.
        epoch: the ``start`` change (:meth:`EventStore.begin_epoch`) whose later changes this
            worker replays at start-up; None: the app marks a start itself (one process).
        metrics_dir: where worker processes share their request counts, so that
            ``/metrics`` sums them (:class:`~shoprec.serve.metrics.Metrics`); None: this
            process's counts only.
    """

    artifact: str | Path
    db: str | Path | None = None
    api_key: str | None = None
    recommender: RecommenderConfig | None = None
    session_events: int = 50
    read_key: str | None = None
    private_reads: bool = True
    limits: ServeLimits = field(default_factory=ServeLimits)
    artifact_root: str | Path | None = None
    epoch: int | None = None
    metrics_dir: str | Path | None = None

    def to_json(self) -> str:
        """This config as JSON (what a worker process is handed)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("recommender", "limits")}
        data = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
        data["limits"] = dict(self.limits.__dict__)
        if self.recommender is not None:
            data["recommender"] = dict(self.recommender.__dict__)
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The config :meth:`to_json` wrote."""
        data = json.loads(text)
        data["limits"] = ServeLimits(**data.get("limits", {}))
        if data.get("recommender") is not None:  # JSON lists back to the tuples they were
            fields = data["recommender"].items()
            data["recommender"] = RecommenderConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in fields}
            )
        return cls(**data)


@dataclass
class Service:
    """What the running app holds; ``recommender`` is swapped on reload.

    ``applied`` is the number of the last change of the store (:mod:`shoprec.serve.store`)
    this worker has applied; :meth:`sync` applies newer ones, :meth:`changing` makes one."""

    config: ServeConfig
    recommender: Recommender
    store: EventStore
    sessions: SessionLog
    metrics: Metrics
    api_key: str
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    explaining: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    explain_rate: RateLimit = field(default_factory=lambda: RateLimit(30))
    applied: int = 0

    async def sync(self) -> None:
        """Apply the changes other workers made since the last one applied here (none: one
        indexed read). Requests wait for it: a forgotten shopper or a new model is never
        served stale by a worker that has not caught up."""
        if self.store.last_change() <= self.applied:
            return
        async with self.reload_lock:
            await asyncio.to_thread(self._catch_up)

    def _catch_up(self, lock: bool = True) -> None:
        """Apply pending changes in order (``lock``: with the store's change lock held
        shared, so that no artifact is rewritten while it loads)."""
        with self.store.change_lock(exclusive=False) if lock else contextlib.nullcontext():
            for change in self.store.changes_since(self.applied):
                self._apply(change)
                self.applied = change.id

    def _apply(self, change: Change) -> None:
        rec, p = self.recommender, change.payload
        if change.kind == "start" and Path(p["artifact"]) == Path(self.config.artifact):
            pass  # another process started on this store (an app without an epoch)
        elif change.kind in ("start", "reload", "forget"):
            path = Path(p["artifact"])
            new = _load(path, self.config, self.sessions)
            _carry_over(rec, new)
            self.recommender, self.config.artifact = new, path
        elif change.kind == "stock":
            rec.set_stock(p["stock"])
        elif change.kind == "catalog":
            _add_missing(rec, pl.DataFrame(p["items"]))
        log.info("worker %d applied change %d (%s) of %d", os.getpid(), change.id, change.kind,
                 change.pid)  # fmt: skip

    @asynccontextmanager
    async def changing(self) -> AsyncIterator[None]:
        """Make a change of the served state: this worker's reload lock and the store's
        exclusive change lock are held and every earlier change is applied first; record
        the change inside (:meth:`record`)."""
        async with self.reload_lock:
            lock = self.store.change_lock(exclusive=True)
            await asyncio.to_thread(lock.__enter__)
            try:
                await asyncio.to_thread(self._catch_up, False)
                yield
            finally:
                lock.__exit__(None, None, None)

    def record(self, kind: str, payload: dict[str, Any]) -> None:
        """Store a change made here (inside :meth:`changing`) for the other workers."""
        self.applied = self.store.record_change(kind, payload)


def _load(path: Path, config: ServeConfig, sessions: SessionLog) -> Recommender:
    """Any recipe's artifact, through :class:`~shoprec.artifact.Artifact`."""
    return Recommender.from_artifact(Artifact.load(path), config.recommender, sessions=sessions)


def _inside_root(svc: Service, asked: str | None) -> Path:
    """The artifact folder a reload may load: ``asked`` (relative to the artifact root, or
    absolute) or the current one; 403 when it resolves outside the configured root."""
    root = Path(svc.config.artifact_root or Path(svc.config.artifact).parent).resolve()
    if asked is None:
        return Path(svc.config.artifact)
    path = Path(asked)
    real = (path if path.is_absolute() else root / path).resolve()
    if real != root and root not in real.parents:
        raise HTTPException(
            403,
            f"{asked} is outside the artifact root {root}: reload loads only artifacts "
            "inside it (serve --artifact-root sets it)",
        )
    return real


def _add_missing(rec: Recommender, items: pl.DataFrame) -> None:
    """Products added at run time by another worker (or before a restart), less those the
    model already has."""
    items = items.filter(~pl.col("item").is_in(rec.items))
    if items.height:
        try:
            rec.add_items(items)
        except CatalogError as e:
            log.warning("%d products added at run time are dropped: %s", items.height, e)


def _replay(
    store: EventStore, epoch: int, config: ServeConfig, sessions: SessionLog
) -> tuple[Recommender, int]:
    """A worker's start: the model the changes since ``epoch`` end with (the last start,
    reload or forget names it), then the stock levels and products added since, in order;
    returns it and the number of the last change applied."""
    changes = store.changes_since(epoch - 1)
    models = [c for c in changes if c.kind in ("start", "reload", "forget")]
    path = Path(models[-1].payload["artifact"]) if models else Path(config.artifact)
    rec = _load(path, config, sessions)
    config.artifact = path
    for c in changes:
        if c.kind == "stock":
            rec.set_stock(c.payload["stock"])
        elif c.kind == "catalog":
            _add_missing(rec, pl.DataFrame(c.payload["items"]))
    return rec, max([epoch, *(c.id for c in changes)])


async def _flush_metrics(metrics: Metrics) -> None:
    """Write this worker's counts for the others' ``/metrics`` every ``flush_every`` s."""
    while True:
        await asyncio.sleep(metrics.flush_every)
        metrics.maybe_flush(force=True)


class WorkerMiddleware:
    """Before each request: apply the store's newer changes (:meth:`Service.sync`); after:
    name the worker process in ``X-Shoprec-Worker``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (WORKER_HEADER.lower().encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc: Service | None = getattr(scope["app"].state, "service", None)
        if svc is not None:
            await svc.sync()

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], self.header]
            await send(message)

        await self.app(scope, receive, send_named)


def _carry_over(old: Recommender, new: Recommender) -> None:
    """Stock set and products added through the API, applied to a freshly loaded model."""
    added = old.catalog.added.filter(~pl.col("item").is_in(new.items))
    if added.height:
        try:
            new.add_items(added)
        except CatalogError as e:
            log.warning("%d products added at run time are dropped: %s", added.height, e)
    new.set_stock(old.stock_overrides)


async def get_service(request: Request) -> Service:
    """The running app's :class:`Service` (a FastAPI dependency)."""
    return request.app.state.service


Svc = Annotated[Service, Depends(get_service)]
_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="write/admin key")


async def require_key(svc: Svc, key: Annotated[str | None, Security(_key_header)]) -> None:
    """401 without the API key header, 403 with a wrong key."""
    if key is None:
        raise HTTPException(401, f"this endpoint needs the {API_KEY_HEADER} header")
    if not secrets.compare_digest(key.encode(), svc.api_key.encode()):
        raise HTTPException(403, "wrong API key")


def key_role(svc: Service, key: str | None) -> str | None:
    """``"write"`` for the write key, ``"read"`` for the read key, None without a key; 403 for
    any other key. Both comparisons always run, in constant time."""
    if key is None:
        return None
    given = key.encode()
    write = secrets.compare_digest(given, svc.api_key.encode())
    read_key = svc.config.read_key
    read = secrets.compare_digest(given, (read_key or svc.api_key).encode())
    if write:
        return "write"
    if read and read_key:
        return "read"
    raise HTTPException(403, "wrong API key")


def can_read_shoppers(svc: Service, key: str | None) -> bool:
    """Whether this caller may see what reveals a shopper (403 for a wrong key)."""
    return not svc.config.private_reads or key_role(svc, key) is not None


async def require_read(svc: Svc, key: Annotated[str | None, Security(_key_header)]) -> None:
    """Reads that reveal a shopper: 401 without a key (unless reads are open), 403 wrong."""
    if not can_read_shoppers(svc, key):
        raise HTTPException(
            401,
            f"this endpoint reveals shoppers: it needs the {API_KEY_HEADER} header with the "
            "read key or the write key (the deployer can open it: serve --open-reads)",
        )


#: What each error status means, for the OpenAPI document.
_ERROR_TEXT = {
    400: "the request cannot be served as asked (a fusion formula it cannot compute, a body "
    "that is not UTF-8)",
    401: f"the {API_KEY_HEADER} header is needed",
    403: "wrong API key (for a reload: a folder outside the artifact root)",
    404: "unknown item or shopper",
    409: "a product is already in the catalog",
    413: "the request body is over the size limit",
    422: "a parameter or the body is invalid",
    429: "too many costly requests from this client: retry after Retry-After seconds",
    503: "the server is at capacity: retry after Retry-After seconds",
}


def errors(*codes: int, shed: bool = True, text: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all with the :class:`ErrorOut` body)
    plus 413, which any route can answer, and 503 where the route can be shed; ``text``: the
    route answers text, its errors JSON all the same."""
    extra = {413, 503} if shed else {413}
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    return {
        c: {"content": ref, "description": _ERROR_TEXT[c]}
        if text
        else {"model": s.ErrorOut, "description": _ERROR_TEXT[c]}
        for c in sorted({*codes, *extra})
    }


def _without_history(exp: Explanation, penalties: dict[str, float]) -> None:
    """Drop the explanation's "because" item (a piece of the shopper's history)."""
    if exp.because is not None:
        exp.because = None
        exp.sentence = sentence(exp, penalties)
        exp.notes.append("the history item behind this pick is shown only with a read key")


UserId = Annotated[str, PathParam(min_length=1, max_length=128, description="shopper id")]
ItemId = Annotated[str, PathParam(min_length=1, max_length=128, description="item id")]
K = Annotated[int, Query(ge=1, le=100, description="how many items")]
FusionQuery = Annotated[
    str | None, Query(max_length=200, description="final score formula, e.g. buy * price")
]


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``config.artifact``; see the module docstring."""
    metrics = Metrics(config.metrics_dir)
    limits = config.limits
    if config.artifact_root is None:  # fixed at start-up: a reload does not move it
        config.artifact_root = Path(config.artifact).resolve().parent
    api_key = config.api_key or secrets.token_urlsafe(18)
    if not config.api_key:
        log.warning(
            "no API key given: write and admin endpoints accept %s=%s", API_KEY_HEADER, api_key
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        artifact = Path(config.artifact)
        store = EventStore(config.db or artifact / "events.sqlite")
        sessions = StoredSessions(store, config.session_events)  # the store is the log
        epoch = config.epoch if config.epoch is not None else store.begin_epoch(artifact)
        rec, applied = await asyncio.to_thread(_replay, store, epoch, config, sessions)
        app.state.service = Service(
            config,
            rec,
            store,
            sessions,
            metrics,
            api_key,
            explaining=asyncio.Semaphore(limits.max_explaining),
            explain_rate=RateLimit(limits.anonymous_explains_per_minute),
            applied=applied,
        )
        log.info(
            "worker %d serving %s (%s recipe, %s, %d items); %d stored events",
            os.getpid(), config.artifact, rec.scorer.recipe, rec.model_name, rec.n_items,
            store.count(),
        )  # fmt: skip
        flusher = asyncio.create_task(_flush_metrics(metrics)) if config.metrics_dir else None
        try:
            yield
        finally:
            if flusher is not None:
                flusher.cancel()
                metrics.maybe_flush(force=True)  # a stopped worker's counts stay in the sums
            store.close()

    app = FastAPI(
        title="shoprec",
        version=shoprec.__version__,
        summary="Multi-task recommendations for an online shop, with explanations.",
        lifespan=lifespan,
    )

    def shed(path: str) -> None:
        metrics.inc("shoprec_shed_total", "Requests answered 503 at capacity.")

    # outermost first: metrics see every answer; oversized bodies never take a turn
    app.add_middleware(
        ConcurrencyLimit,
        max_active=limits.max_concurrency,
        max_queue=limits.max_queue,
        queue_timeout=limits.queue_timeout,
        retry_after=limits.retry_after,
        on_shed=shed,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # innermost: a request that got its turn applies other workers' changes first
    app.user_middleware.append(Middleware(WorkerMiddleware))

    def error_response(
        status: int,
        detail: str,
        items: list[s.ErrorItem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        body = s.ErrorOut(
            status=status,
            error=s.ERROR_CODES.get(status, "error"),
            detail=detail,
            errors=items or [],
        )
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        items = [
            s.ErrorItem(
                loc=[x if isinstance(x, int) else str(x)[:100] for x in e.get("loc", ())],
                msg=str(e.get("msg", ""))[:500],
                type=str(e.get("type", "")),
            )
            for e in problems[:20]
        ]
        said = "; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in items[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return error_response(422, f"invalid request: {said}{more}", items)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); it is logged")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    def recommend_json(
        svc: Service,
        user: str,
        k: int,
        exclude_category: list[str],
        fusion: str | None,
        explain: bool,
        reader: bool = True,
    ) -> Response:
        rec = svc.recommender
        uid = rec.user_key(user)  # the id the artifact knows (hashed if it was trained so)
        try:
            ranking = rec.rank(
                uid, k, exclude_categories=exclude_category, fusion=fusion, explain=explain
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        if explain and not reader:
            penalties = dict(rec.resolve_fusion(fusion).penalties)
            for r in ranking.items:
                if r.explanation is not None:
                    _without_history(r.explanation, penalties)
        body = s.RecommendResponse(
            user=user,
            known_user=rec.is_known_user(uid),
            live_events=len(svc.sessions.recent(uid)),
            fusion=rec.resolve_fusion(fusion).formula(),
            model=rec.model_name,
            recipe=rec.scorer.recipe,
            candidates=ranking.candidates,
            items=[s.RecommendationOut.model_validate(r) for r in ranking.items],
        )
        # Built and checked above: serialised once here, not validated again by FastAPI.
        return Response(body.model_dump_json(), media_type="application/json")

    async def explain_turn(svc: Service, request: Request, key: str | None) -> bool:
        """Costly explanations: anonymous callers are rate-limited per address (429); one
        more than ``max_explaining`` at once is shed (503). True: the caller may read
        shoppers (see :func:`can_read_shoppers`)."""
        reader = can_read_shoppers(svc, key)
        if key_role(svc, key) is None:
            client = request.client.host if request.client else "unknown"
            wait = svc.explain_rate.retry_after(client)
            if wait is not None:
                raise HTTPException(
                    429,
                    f"at most {limits.anonymous_explains_per_minute} explained requests a "
                    f"minute without a key; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
        if svc.explaining.locked():
            raise HTTPException(
                503,
                f"{limits.max_explaining} explanation(s) already being computed; retry after "
                f"{limits.retry_after} s",
                headers={"Retry-After": str(limits.retry_after)},
            )
        return reader

    @app.get(
        "/recommend/{user}",
        response_model=s.RecommendResponse,
        tags=["recommend"],
        responses=errors(400, 401, 403, 422, 429),
    )
    async def recommend(
        request: Request,
        user: UserId,
        k: K = 10,
        exclude_category: Annotated[list[str], Query(description="categories to leave out")] = [],  # noqa: B006
        fusion: FusionQuery = None,
        explain: bool = False,
    ) -> Response:
        """Top-k items for a shopper; an unknown shopper gets a cold-start list.

        ``explain=true`` (Integrated Gradients per item, the costly option) is limited: ``k``
        up to ``anonymous_explain_k`` without the ``X-API-Key`` header (401 above), a few
        such requests a minute per client without it (429), one computed at a time (503)."""
        svc: Service = request.app.state.service  # the hot path: no dependency to solve
        if explain:  # Integrated Gradients per item: seconds of work, in a worker thread
            key = request.headers.get(API_KEY_HEADER)
            if k > limits.anonymous_explain_k and key_role(svc, key) is None:
                raise HTTPException(
                    401,
                    f"explain=true with k above {limits.anonymous_explain_k} needs the "
                    f"{API_KEY_HEADER} header",
                )
            reader = await explain_turn(svc, request, key)
            async with svc.explaining:
                return await run_in_threadpool(
                    recommend_json, svc, user, k, exclude_category, fusion, explain, reader
                )
        # A few milliseconds of CPU, in a worker thread all the same: on the event loop it
        # would block the loop, which then could neither read nor shed the requests queued
        # behind it (they would wait, unseen, in the socket buffers).
        return await run_in_threadpool(
            recommend_json, svc, user, k, exclude_category, fusion, explain
        )

    @app.get(
        "/similar/{item}",
        response_model=s.SimilarResponse,
        tags=["recommend"],
        responses=errors(404, 422),
    )
    def similar(svc: Svc, item: ItemId, k: K = 10) -> s.SimilarResponse:
        """Items like this one (two-tower cosine plus co-occurrence)."""
        try:
            items = svc.recommender.similar(item, k)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from e
        return s.SimilarResponse(item=item, items=[s.SimilarOut.model_validate(x) for x in items])

    @app.get(
        "/explain/{user}/{item}",
        response_model=s.ExplanationOut,
        tags=["recommend"],
        responses=errors(400, 403, 404, 422, 429),
    )
    async def explain(
        request: Request,
        svc: Svc,
        user: UserId,
        item: ItemId,
        fusion: FusionQuery = None,
        key: Annotated[str | None, Security(_key_header)] = None,
    ) -> s.ExplanationOut:
        """Why this item for this shopper: task contributions, feature attributions,
        gate weights, the closest history item (with a read key, unless reads are open)
        and a sentence. Rate-limited without a key (429), one at a time (503)."""
        reader = await explain_turn(svc, request, key)
        rec = svc.recommender

        def run() -> Explanation:
            exp = rec.explain(rec.user_key(user), item, fusion=fusion)
            if not reader:
                _without_history(exp, dict(rec.resolve_fusion(fusion).penalties))
            return exp

        try:
            async with svc.explaining:
                exp = await run_in_threadpool(run)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from e
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        return s.ExplanationOut.model_validate(exp)

    @app.get(
        "/history/{user}",
        response_model=s.HistoryResponse,
        tags=["shoppers"],
        dependencies=[Depends(require_read)],
        responses=errors(401, 403, 422),
    )
    def history(
        svc: Svc, user: UserId, limit: Annotated[int, Query(ge=1, le=500)] = 30
    ) -> s.HistoryResponse:
        """Live events (newest first), then training events (deepest behavior first)."""
        rec = svc.recommender
        uid = rec.user_key(user)
        return s.HistoryResponse(
            user=user,
            known_user=rec.is_known_user(uid),
            events=[s.HistoryOut.model_validate(h) for h in rec.history(uid, limit)],
        )

    @app.get(
        "/users",
        response_model=s.UsersResponse,
        tags=["shoppers"],
        dependencies=[Depends(require_read)],
        responses=errors(401, 403, 422),
    )
    def users(svc: Svc, limit: Annotated[int, Query(ge=1, le=1000)] = 30) -> s.UsersResponse:
        """Known shoppers with the most training events."""
        top = svc.recommender.top_users(limit)
        return s.UsersResponse(users=[s.UserOut(user=u, events=n) for u, n in top])

    @app.get(
        "/items/new",
        response_model=s.NewItemsResponse,
        tags=["merchant"],
        responses=errors(401, 403, 422),
    )
    def new_items(
        svc: Svc,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        audience: Annotated[int, Query(ge=0, le=50)] = 3,
        key: Annotated[str | None, Security(_key_header)] = None,
    ) -> s.NewItemsResponse:
        """New items (no training events), by how many shoppers' candidate lists they enter,
        each with the shoppers it would reach most surely (``audience`` > 0 reveals
        shoppers: it needs a read key unless reads are open)."""
        if audience > 0 and not can_read_shoppers(svc, key):
            raise HTTPException(
                401, f"audience > 0 lists shoppers: it needs the {API_KEY_HEADER} header"
            )
        items = svc.recommender.new_item_reach(limit, audience)
        return s.NewItemsResponse(items=[s.NewItemOut.model_validate(x) for x in items])

    @app.get(
        "/audience/{item}",
        response_model=s.AudienceResponse,
        tags=["merchant"],
        dependencies=[Depends(require_read)],
        responses=errors(401, 403, 404, 422),
    )
    def audience(svc: Svc, item: ItemId, k: K = 10) -> s.AudienceResponse:
        """The known shoppers an item would reach most surely (two-tower score over their
        candidate cut-off), with the ranking model's predictions."""
        try:
            users = svc.recommender.audience(item, k)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from e
        return s.AudienceResponse(item=item, users=[s.AudienceOut.model_validate(u) for u in users])

    @app.post(
        "/events",
        response_model=s.EventAck,
        status_code=201,
        dependencies=[Depends(require_key)],
        tags=["events"],
        responses=errors(400, 401, 403, 422),
    )
    def post_event(svc: Svc, event: s.EventIn) -> s.EventAck:
        """Store an event (committed to SQLite before this returns); the shopper's next
        recommendation uses it. An unknown item is stored but cannot change the list."""
        ts = time.time() if event.timestamp is None else event.timestamp
        uid = svc.recommender.user_key(event.user)  # stored as the artifact knows it
        # committed (and synced) before the answer; every worker's next read sees it
        row = svc.store.append(uid, event.item, event.behavior.value, event.quantity, ts)
        svc.metrics.inc(
            "shoprec_events_total", "Events stored, by behavior.", behavior=event.behavior.value
        )
        known = svc.recommender.has_item(event.item)
        return s.EventAck(
            id=row, user=event.user, item=event.item, behavior=event.behavior.value,
            timestamp=ts, known_item=known,
        )  # fmt: skip

    @app.put(
        "/admin/stock",
        response_model=s.StockOut,
        dependencies=[Depends(require_key)],
        tags=["admin"],
        responses=errors(400, 401, 403, 422),
    )
    async def put_stock(svc: Svc, body: s.StockIn) -> s.StockOut:
        """Set live stock levels; items at 0 are no longer recommended. All or nothing: the
        whole body is checked (ids, 0 <= stock <= 1e9) before any level is written."""
        async with svc.changing():
            unknown = svc.recommender.set_stock(body.stock)
            svc.record("stock", {"stock": body.stock})
        return s.StockOut(updated=len(body.stock) - len(unknown), unknown=unknown)

    @app.post(
        "/admin/catalog",
        response_model=s.CatalogOut,
        status_code=201,
        dependencies=[Depends(require_key)],
        tags=["admin"],
        responses=errors(400, 401, 403, 409, 422),
    )
    async def add_catalog(svc: Svc, body: s.CatalogIn) -> s.CatalogOut:
        """Add products at run time: they are scored from their attributes, join the
        retrieval index and the new-item slots at once. Only recipes whose scorer can score
        unseen products (content) accept them; others answer 422 naming the recipe."""
        rows = [p.model_dump() for p in body.items]
        frame = pl.DataFrame(rows)
        frame = frame.select(
            [c for c in frame.columns if c == "item" or frame[c].null_count() < frame.height]
        )
        async with svc.changing():  # a reload carries over what the current model holds
            rec = svc.recommender
            try:
                added = await asyncio.to_thread(rec.add_items, frame)
            except DuplicateItemError as e:
                raise HTTPException(409, str(e)) from e
            except CatalogError as e:
                raise HTTPException(422, str(e)) from e
            svc.record("catalog", {"items": frame.to_dicts()})
        svc.metrics.inc("shoprec_products_added_total", "Products added at run time.", len(added))
        return s.CatalogOut(added=added, items=rec.n_items, new_items=len(rec.new_items()))

    @app.post(
        "/admin/reload",
        response_model=s.ReloadOut,
        dependencies=[Depends(require_key)],
        tags=["admin"],
        responses=errors(400, 401, 403, 422),
    )
    async def reload(svc: Svc, body: s.ReloadIn | None = None) -> s.ReloadOut:
        """Load an artifact of any recipe (the current one by default) and swap it in;
        requests keep being answered by the old model until the new one is ready. Stock set
        and products added through the API, and live events, carry over."""
        path = _inside_root(svc, body.artifact if body and body.artifact else None)
        start = time.perf_counter()
        async with svc.changing():
            try:  # every file is checked against the manifest first; nothing is written
                rec = await asyncio.to_thread(_load, path, svc.config, svc.sessions)
            except Exception as e:  # a broken artifact is the caller's 4xx, never a 500
                svc.metrics.inc("shoprec_reloads_total", "Model reloads.", outcome="error")
                raise HTTPException(400, f"cannot load {path}: {e}") from e
            await asyncio.to_thread(_carry_over, svc.recommender, rec)
            svc.recommender = rec  # the swap: one reference, atomic for every reader
            svc.config.artifact = path
            svc.record("reload", {"artifact": str(path)})  # the other workers load it too
        svc.metrics.inc("shoprec_reloads_total", "Model reloads.", outcome="ok")
        log.info("reloaded %s in %.1f s", path, time.perf_counter() - start)
        return s.ReloadOut(
            artifact=str(path),
            recipe=rec.scorer.recipe,
            model=rec.model_name,
            seconds=time.perf_counter() - start,
        )

    @app.delete(
        "/users/{user}",
        response_model=s.ForgetOut,
        dependencies=[Depends(require_key)],
        tags=["shoppers"],
        responses=errors(400, 401, 403, 422),
    )
    async def forget_user(svc: Svc, user: UserId) -> s.ForgetOut:
        """Forget a shopper: their events in the event store (securely deleted) and the
        live session log, their training events, user-table rows and ids in the served
        artifact (rewritten, manifest included) and their embedding rows (zeroed; retrieval
        no longer finds anything learned of them) until the next training. The model is
        reloaded from the rewritten artifact; they are an unknown shopper from now on."""
        from shoprec.forget import forget_users

        async with svc.changing():
            uid = svc.recommender.user_key(user)
            live = len(svc.sessions.recent(uid))
            events = await asyncio.to_thread(svc.store.forget, uid)  # gone for every worker
            path = Path(svc.config.artifact)
            try:
                report = await asyncio.to_thread(forget_users, path, [uid])
                rec = await asyncio.to_thread(_load, path, svc.config, svc.sessions)
            except Exception as e:  # never a 500: the store and session are forgotten
                log.warning("forgetting %s in %s failed: %s", user, path, e)
                raise HTTPException(
                    400,
                    f"the events of {user} are deleted, but the artifact {path} could not be "
                    f"rewritten: {e}",
                ) from e
            await asyncio.to_thread(_carry_over, svc.recommender, rec)
            svc.recommender = rec
            svc.record("forget", {"artifact": str(path), "user": uid})  # others reload it
        svc.metrics.inc("shoprec_forgotten_users_total", "Shoppers forgotten.")
        return s.ForgetOut(
            user=user,
            events_deleted=events,
            live_events_deleted=live,
            known=bool(report.known),
            seen_rows=report.seen_rows,
            scorer=report.scorer,
            retrieval=report.retrieval,
            artifact=str(path),
        )

    @app.get("/health", response_model=s.HealthOut, tags=["ops"], responses=errors(shed=False))
    def health(svc: Svc) -> s.HealthOut:
        """Liveness and what is being served."""
        d = svc.recommender.describe()
        return s.HealthOut(
            status="ok",
            version=shoprec.__version__,
            events_stored=svc.store.count(),
            journal_mode=svc.store.journal_mode,
            uptime_seconds=time.time() - svc.metrics.started,
            **d,
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["ops"],
        responses=errors(shed=False, text=True),
    )
    def prometheus(svc: Svc) -> PlainTextResponse:
        """Prometheus text format: requests, latency histograms, events, reloads, model."""
        rec = svc.recommender
        gauges = {
            "shoprec_model_info": (
                "The artifact being served (value 1).",
                1.0,
                {
                    "artifact": str(rec.artifact.directory),
                    "recipe": rec.scorer.recipe,
                    "model": rec.model_name,
                },
            ),
            "shoprec_items": ("Items the model can recommend.", float(rec.n_items), {}),
            "shoprec_live_events": (
                "Live events (the latest per shopper a request reads) in the event store.",
                float(len(svc.sessions)),
                {},
            ),
            "shoprec_model_loaded_timestamp_seconds": (
                "When the served model was loaded.",
                rec.loaded_at,
                {},
            ),
        }
        return PlainTextResponse(
            svc.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.include_router(inventory.router)  # GET /forecast/{item}, GET /inventory/reorder
    app.mount("/ui", StaticFiles(directory=str(STATIC), html=True), name="ui")
    return app


def worker_app() -> FastAPI:
    """The app of one worker process of ``shoprec serve --workers N`` (uvicorn's app
    factory): its :class:`ServeConfig` comes from the ``SHOPREC_SERVE_CONFIG`` environment
    variable (:meth:`ServeConfig.to_json`), written by the parent process, which also
    marked the start (:meth:`EventStore.begin_epoch`) every worker replays from."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"worker_app needs {CONFIG_ENV} (shoprec serve --workers sets it)")
    config = ServeConfig.from_json(text)
    threads = int(os.environ.get("SHOPREC_SERVE_THREADS", "1"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    return create_app(config)
