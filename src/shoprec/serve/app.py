"""The HTTP service: a thin FastAPI layer over :class:`~shoprec.recommend.Recommender`.

It serves any recipe's artifact (``shoprec.artifact.Artifact``): the scorer ranks, live
events reach it through ``scorer.score(..., events=...)``.

::

    GET  /recommend/{user}?k=10&exclude_category=..&fusion=..&explain=false
    GET  /similar/{item}?k=10
    GET  /explain/{user}/{item}
    GET  /history/{user}          GET /users          GET /items/new      GET /audience/{item}
    POST /events                  (API key) stored in SQLite (WAL) before it is acknowledged
    PUT  /admin/stock             (API key) live stock levels
    POST /admin/catalog           (API key) add products at run time (recipes that can score
                                  new products from their attributes; 422 otherwise)
    POST /admin/reload            (API key) swap in a new artifact without dropping requests
    GET  /health    GET /metrics (Prometheus text)    GET /docs (OpenAPI)    GET /ui/ (web page)

The artifact is loaded in the lifespan. Every request reads the current recommender once and
uses that object to the end, so a reload (which builds the new one off the event loop, then
swaps one reference) never drops or mixes a request. Live events go to the shared
:class:`~shoprec.recommend.SessionLog`, which survives reloads and is refilled from the store
at start-up; stock set and products added through the API are applied again after a reload.
Write and admin endpoints need the ``X-API-Key`` header.

Example:
    >>> app = create_app(ServeConfig("runs/sim_mmoe", api_key="secret"))  # doctest: +SKIP
    >>> uvicorn.run(app)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated

import polars as pl
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import shoprec
from shoprec.artifact import Artifact
from shoprec.errors import ShoprecError
from shoprec.recommend import (
    CatalogError,
    DuplicateItemError,
    Recommender,
    RecommenderConfig,
    SessionLog,
    UnknownItemError,
)
from shoprec.serve import schemas as s
from shoprec.serve.metrics import Metrics, MetricsMiddleware
from shoprec.serve.store import EventStore

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
STATIC = resources.files("shoprec.serve") / "static"


@dataclass
class ServeConfig:
    """How to serve an artifact.

    Attributes:
        artifact: the artifact folder (retrieval files are built on first load if missing).
        db: the SQLite event store; ``<artifact>/events.sqlite`` by default.
        api_key: the key for write and admin endpoints; a random one (logged) when None.
        recommender: recommender knobs (fusion, candidate counts, diversity, ...); None: the
            artifact's ``serve:`` config section.
        session_events: live events kept per shopper.
    """

    artifact: str | Path
    db: str | Path | None = None
    api_key: str | None = None
    recommender: RecommenderConfig | None = None
    session_events: int = 50


@dataclass
class Service:
    """What the running app holds; ``recommender`` is swapped on reload."""

    config: ServeConfig
    recommender: Recommender
    store: EventStore
    sessions: SessionLog
    metrics: Metrics
    api_key: str
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _load(path: Path, config: ServeConfig, sessions: SessionLog) -> Recommender:
    """Any recipe's artifact, through :class:`~shoprec.artifact.Artifact`."""
    return Recommender.from_artifact(Artifact.load(path), config.recommender, sessions=sessions)


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


UserId = Annotated[str, PathParam(min_length=1, max_length=128, description="shopper id")]
ItemId = Annotated[str, PathParam(min_length=1, max_length=128, description="item id")]
K = Annotated[int, Query(ge=1, le=100, description="how many items")]
FusionQuery = Annotated[
    str | None, Query(max_length=200, description="final score formula, e.g. buy * price")
]


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``config.artifact``; see the module docstring."""
    metrics = Metrics()
    api_key = config.api_key or secrets.token_urlsafe(18)
    if not config.api_key:
        log.warning(
            "no API key given: write and admin endpoints accept %s=%s", API_KEY_HEADER, api_key
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        artifact = Path(config.artifact)
        store = EventStore(config.db or artifact / "events.sqlite")
        sessions = SessionLog(config.session_events)
        sessions.extend(store.recent(config.session_events))
        rec = await asyncio.to_thread(_load, artifact, config, sessions)
        app.state.service = Service(config, rec, store, sessions, metrics, api_key)
        log.info(
            "serving %s (%s recipe, %s, %d items); %d stored events",
            artifact, rec.scorer.recipe, rec.model_name, rec.n_items, store.count(),
        )  # fmt: skip
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="shoprec",
        version=shoprec.__version__,
        summary="Multi-task recommendations for an online shop, with explanations.",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

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
    ) -> Response:
        rec = svc.recommender
        try:
            ranking = rec.rank(
                user, k, exclude_categories=exclude_category, fusion=fusion, explain=explain
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        body = s.RecommendResponse(
            user=user,
            known_user=rec.is_known_user(user),
            live_events=len(svc.sessions.recent(user)),
            fusion=rec.resolve_fusion(fusion).formula(),
            model=rec.model_name,
            recipe=rec.scorer.recipe,
            candidates=ranking.candidates,
            items=[s.RecommendationOut.model_validate(r) for r in ranking.items],
        )
        # Built and checked above: serialised once here, not validated again by FastAPI.
        return Response(body.model_dump_json(), media_type="application/json")

    @app.get("/recommend/{user}", response_model=s.RecommendResponse, tags=["recommend"])
    async def recommend(
        request: Request,
        user: UserId,
        k: K = 10,
        exclude_category: Annotated[list[str], Query(description="categories to leave out")] = [],  # noqa: B006
        fusion: FusionQuery = None,
        explain: bool = False,
    ) -> Response:
        """Top-k items for a shopper; an unknown shopper gets a cold-start list."""
        svc: Service = request.app.state.service  # the hot path: no dependency to solve
        if explain:  # Integrated Gradients per item: seconds of work, in a worker thread
            return await run_in_threadpool(
                recommend_json, svc, user, k, exclude_category, fusion, explain
            )
        # A few milliseconds of CPU that holds the GIL anyway: on the event loop, without
        # the hand-over to a worker thread and back.
        return recommend_json(svc, user, k, exclude_category, fusion, explain)

    @app.get("/similar/{item}", response_model=s.SimilarResponse, tags=["recommend"])
    def similar(svc: Svc, item: ItemId, k: K = 10) -> s.SimilarResponse:
        """Items like this one (two-tower cosine plus co-occurrence)."""
        try:
            items = svc.recommender.similar(item, k)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from e
        return s.SimilarResponse(item=item, items=[s.SimilarOut.model_validate(x) for x in items])

    @app.get("/explain/{user}/{item}", response_model=s.ExplanationOut, tags=["recommend"])
    def explain(
        svc: Svc,
        user: UserId,
        item: ItemId,
        fusion: FusionQuery = None,
    ) -> s.ExplanationOut:
        """Why this item for this shopper: task contributions, feature attributions,
        gate weights, the closest history item and a sentence."""
        try:
            exp = svc.recommender.explain(user, item, fusion=fusion)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from e
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        return s.ExplanationOut.model_validate(exp)

    @app.get("/history/{user}", response_model=s.HistoryResponse, tags=["shoppers"])
    def history(
        svc: Svc, user: UserId, limit: Annotated[int, Query(ge=1, le=500)] = 30
    ) -> s.HistoryResponse:
        """Live events (newest first), then training events (deepest behavior first)."""
        rec = svc.recommender
        return s.HistoryResponse(
            user=user,
            known_user=rec.is_known_user(user),
            events=[s.HistoryOut.model_validate(h) for h in rec.history(user, limit)],
        )

    @app.get("/users", response_model=s.UsersResponse, tags=["shoppers"])
    def users(svc: Svc, limit: Annotated[int, Query(ge=1, le=1000)] = 30) -> s.UsersResponse:
        """Known shoppers with the most training events."""
        top = svc.recommender.top_users(limit)
        return s.UsersResponse(users=[s.UserOut(user=u, events=n) for u, n in top])

    @app.get("/items/new", response_model=s.NewItemsResponse, tags=["merchant"])
    def new_items(
        svc: Svc,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        audience: Annotated[int, Query(ge=0, le=50)] = 3,
    ) -> s.NewItemsResponse:
        """New items (no training events), by how many shoppers' candidate lists they enter,
        each with the shoppers it would reach most surely."""
        items = svc.recommender.new_item_reach(limit, audience)
        return s.NewItemsResponse(items=[s.NewItemOut.model_validate(x) for x in items])

    @app.get("/audience/{item}", response_model=s.AudienceResponse, tags=["merchant"])
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
    )
    def post_event(svc: Svc, event: s.EventIn) -> s.EventAck:
        """Store an event (committed to SQLite before this returns); the shopper's next
        recommendation uses it. An unknown item is stored but cannot change the list."""
        ts = time.time() if event.timestamp is None else event.timestamp
        row = svc.store.append(event.user, event.item, event.behavior.value, event.quantity, ts)
        svc.sessions.add(event.user, event.item, event.behavior.value, ts)
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
    )
    def put_stock(svc: Svc, body: s.StockIn) -> s.StockOut:
        """Set live stock levels; items at 0 are no longer recommended."""
        if any(v < 0 for v in body.stock.values()):
            raise HTTPException(422, "stock levels must be >= 0")
        unknown = svc.recommender.set_stock(body.stock)
        return s.StockOut(updated=len(body.stock) - len(unknown), unknown=unknown)

    @app.post(
        "/admin/catalog",
        response_model=s.CatalogOut,
        status_code=201,
        dependencies=[Depends(require_key)],
        tags=["admin"],
        responses={
            409: {"description": "a product is already in the catalog"},
            422: {"description": "the recipe cannot score new products, or bad rows"},
        },
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
        async with svc.reload_lock:  # a reload carries over what the current model holds
            rec = svc.recommender
            try:
                added = await asyncio.to_thread(rec.add_items, frame)
            except DuplicateItemError as e:
                raise HTTPException(409, str(e)) from e
            except CatalogError as e:
                raise HTTPException(422, str(e)) from e
        svc.metrics.inc("shoprec_products_added_total", "Products added at run time.", len(added))
        return s.CatalogOut(added=added, items=rec.n_items, new_items=len(rec.new_items()))

    @app.post(
        "/admin/reload",
        response_model=s.ReloadOut,
        dependencies=[Depends(require_key)],
        tags=["admin"],
    )
    async def reload(svc: Svc, body: s.ReloadIn | None = None) -> s.ReloadOut:
        """Load an artifact of any recipe (the current one by default) and swap it in;
        requests keep being answered by the old model until the new one is ready. Stock set
        and products added through the API, and live events, carry over."""
        path = Path(body.artifact) if body and body.artifact else Path(svc.config.artifact)
        start = time.perf_counter()
        async with svc.reload_lock:
            try:
                rec = await asyncio.to_thread(_load, path, svc.config, svc.sessions)
            except (ShoprecError, OSError, ValueError) as e:
                svc.metrics.inc("shoprec_reloads_total", "Model reloads.", outcome="error")
                raise HTTPException(400, f"cannot load {path}: {e}") from e
            await asyncio.to_thread(_carry_over, svc.recommender, rec)
            svc.recommender = rec  # the swap: one reference, atomic for every reader
            svc.config.artifact = path
        svc.metrics.inc("shoprec_reloads_total", "Model reloads.", outcome="ok")
        log.info("reloaded %s in %.1f s", path, time.perf_counter() - start)
        return s.ReloadOut(
            artifact=str(path),
            recipe=rec.scorer.recipe,
            model=rec.model_name,
            seconds=time.perf_counter() - start,
        )

    @app.get("/health", response_model=s.HealthOut, tags=["ops"])
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

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
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
            "shoprec_live_events": ("Live events held in memory.", float(len(svc.sessions)), {}),
            "shoprec_model_loaded_timestamp_seconds": (
                "When the served model was loaded.",
                rec.loaded_at,
                {},
            ),
        }
        return PlainTextResponse(
            svc.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.mount("/ui", StaticFiles(directory=str(STATIC), html=True), name="ui")
    return app
