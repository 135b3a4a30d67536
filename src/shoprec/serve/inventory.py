"""Merchant tools of the service: demand forecasts and reorder advice at the live stock.

::

    GET /forecast/{item}?horizon=&lead_time_weeks=&service_level=
        the item's weekly history (up to 52 weeks), its forecast band (mean, P50, P90 per
        week ahead), its stock now and the reorder advice at that stock
    GET /inventory/reorder?limit=&lead_time_weeks=&service_level=
        the reorder list (items to order, at-risk first) and the items at risk of running out

Both read the forecast the :class:`~shoprec.recommend.Recommender` loaded (``serve.forecast``
or ``<artifact>/forecast``, written by ``shoprec forecast``) and the stock levels of the
moment (``PUT /admin/stock`` changes the answer at once). Without a forecast they answer 409
saying how to make one; an unknown item is 404; a lead time beyond the forecast's horizon, or
a horizon beyond it, is 422. The arithmetic is :mod:`shoprec.inventory.stock`'s.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, field_validator

from shoprec.inventory.stock import InventoryError, NoForecastError, NoItemForecastError
from shoprec.recommend import Recommender, UnknownItemError
from shoprec.serve import schemas as s

router = APIRouter(tags=["inventory"])

_ERROR_TEXT = {
    404: "unknown item, or no forecast for it",
    409: "no demand forecast is loaded (run shoprec forecast, then reload)",
    413: "the request body is over the size limit",
    422: "a parameter is invalid (e.g. a lead time or horizon beyond the forecast's)",
    503: "the server is at capacity: retry after Retry-After seconds",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` with the service's :class:`~shoprec.serve.schemas.ErrorOut`."""
    return {
        c: {"model": s.ErrorOut, "description": _ERROR_TEXT[c]}
        for c in sorted({*codes, 413, 422, 503})
    }


def _as_date(value: Any) -> Any:
    return value.date() if isinstance(value, dt.datetime) else value


def _finite(value: Any) -> float | None:
    """A float, or None for null / NaN / infinity (JSON has no infinity)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


class HistoryPoint(BaseModel):
    """Units sold in one past week."""

    week: dt.date = Field(description="the week's first day")
    units: float = Field(description="units sold (purchases, returns kept apart)")
    returns: float | None = Field(None, description="units returned")

    _week = field_validator("week", mode="before")(_as_date)


class ForecastPoint(BaseModel):
    """The forecast for one week ahead."""

    week: dt.date | None = Field(None, description="the forecast week's first day")
    horizon: int = Field(description="weeks after the origin (1 = the next week)")
    mean: float = Field(description="expected units")
    p50: float = Field(description="median units")
    p90: float = Field(description="90th percentile of units (the top of the band)")
    p_no_sale: float | None = Field(None, description="P(no sale that week)")
    returns: float | None = Field(None, description="expected units returned")

    _week = field_validator("week", mode="before")(_as_date)


class ReorderRow(BaseModel):
    """Reorder advice for one item at its stock now."""

    item: str
    title: str | None = None
    category: str | None = None
    stock: float = Field(description="units in stock now")
    lead_time_weeks: float = Field(description="weeks from ordering to the goods arriving")
    demand_p50_lead: float = Field(description="median forecast demand over the lead time")
    demand_p90_lead: float = Field(description="P90 of forecast demand over the lead time")
    weeks_of_cover: float | None = Field(
        description="stock / mean weekly forecast demand (null: no demand forecast)"
    )
    p_stockout: float = Field(description="P(demand over the lead time > stock)")
    reorder_qty: float = Field(description="units to order now to meet the service level")
    at_risk: bool = Field(description="p_stockout at or above the serve config's stockout_risk")

    _cover = field_validator("weeks_of_cover", mode="before")(_finite)


class ForecastOut(BaseModel):
    """One item's history, forecast band, stock and reorder advice."""

    item: str
    title: str | None = None
    category: str | None = None
    stock: int | None = Field(None, description="units in stock now (null: unknown)")
    origin: dt.date | None = Field(None, description="the last week of data the forecast saw")
    horizon: int = Field(description="weeks ahead shown")
    trend: str | None = Field(None, description="down, flat or up (the forecaster's trend head)")
    model: str | None = Field(None, description="the forecaster (forecast.json)")
    history: list[HistoryPoint]
    forecast: list[ForecastPoint]
    reorder: ReorderRow | None = Field(None, description="null when the stock is unknown")

    _origin = field_validator("origin", mode="before")(_as_date)


class ReorderResponse(BaseModel):
    """The reorder list and the items at risk of running out, at the stock of the moment."""

    origin: dt.date | None = Field(None, description="the last week of data the forecast saw")
    model: str | None = None
    service_level: float = Field(description="P(no stock-out) the quantities aim for")
    lead_time_weeks: float | None = Field(
        None, description="the lead time asked for (null: each item's own or the default)"
    )
    items: int = Field(description="items with a forecast and a known stock")
    stock_unknown: int = Field(
        0,
        description="items with a forecast whose stock the service does not know (not in "
        "the lists: set it with PUT /admin/stock or a stock column in the catalog)",
    )
    to_order: int = Field(description="items with a quantity to order")
    at_risk_count: int = Field(description="items at risk of running out")
    reorder: list[ReorderRow] = Field(description="items to order: at-risk first, by risk")
    at_risk: list[ReorderRow] = Field(description="items at risk of running out, by risk")

    _origin = field_validator("origin", mode="before")(_as_date)


ItemPath = Annotated[str, PathParam(min_length=1, max_length=128, description="item id")]
LeadTime = Annotated[
    float | None,
    Query(ge=0, le=520, description="lead time in weeks (default: each item's own, or serve's)"),
]
ServiceLevel = Annotated[
    float | None, Query(gt=0, lt=1, description="P(no stock-out) to order for (default: serve's)")
]


def _recommender(request: Request) -> Recommender:
    return request.app.state.service.recommender


def _titled(rec: Recommender, rows: list[dict[str, Any]]) -> list[ReorderRow]:
    out = []
    for r in rows:
        p = rec.catalog.pos.get(r["item"])
        attrs = rec.catalog.attributes([p])[0] if p is not None else {}
        out.append(ReorderRow(**r, title=attrs.get("title"), category=attrs.get("category")))
    return out


def _meta(rec: Recommender) -> tuple[Any, str | None]:
    fc = rec.forecast
    if fc is None:
        return None, None
    origin = fc.meta.get("origin")
    if origin is None and "origin" in fc.forecast.columns and fc.forecast.height:
        origin = fc.forecast["origin"].max()
    model = fc.meta.get("model")
    return origin, (str(model) if model is not None else None)


@router.get(
    "/forecast/{item}",
    response_model=ForecastOut,
    responses=_errors(404, 409, 422),
)
def get_forecast(
    request: Request,
    item: ItemPath,
    horizon: Annotated[int | None, Query(ge=1, le=520, description="weeks ahead")] = None,
    lead_time_weeks: LeadTime = None,
    service_level: ServiceLevel = None,
) -> ForecastOut:
    """An item's weekly history, forecast band (P50 to P90 per week ahead), stock now and
    the reorder advice at that stock."""
    rec = _recommender(request)
    try:
        f = rec.item_forecast(
            item, horizon=horizon, lead_time_weeks=lead_time_weeks, service_level=service_level
        )
    except UnknownItemError as e:
        raise HTTPException(404, str(e)) from e
    except NoForecastError as e:
        raise HTTPException(409, str(e)) from e
    except NoItemForecastError as e:
        raise HTTPException(404, str(e)) from e
    except InventoryError as e:
        raise HTTPException(422, str(e)) from e
    p = rec.catalog.pos.get(item)
    attrs = rec.catalog.attributes([p])[0] if p is not None else {}
    _, model = _meta(rec)
    return ForecastOut(
        item=item,
        title=attrs.get("title"),
        category=attrs.get("category"),
        stock=attrs.get("stock"),
        origin=f.origin,
        horizon=f.horizon,
        trend=f.trend,
        model=model,
        history=[HistoryPoint(**h) for h in f.history],
        forecast=[ForecastPoint(**x) for x in f.forecast],
        reorder=_titled(rec, [f.reorder])[0] if f.reorder is not None else None,
    )


@router.get(
    "/inventory/reorder",
    response_model=ReorderResponse,
    responses=_errors(409, 422),
)
def get_reorder(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows per list")] = 50,
    lead_time_weeks: LeadTime = None,
    service_level: ServiceLevel = None,
) -> ReorderResponse:
    """What to order now (a quantity per item for the service level, from the forecast's
    P90 over the lead time) and the items at risk of running out before a restock."""
    rec = _recommender(request)
    try:
        table = rec.reorder(lead_time_weeks=lead_time_weeks, service_level=service_level)
    except NoForecastError as e:
        raise HTTPException(409, str(e)) from e
    except InventoryError as e:
        raise HTTPException(422, str(e)) from e
    order = table.filter(table["reorder_qty"] > 0)
    risky = table.filter(table["at_risk"])
    origin, model = _meta(rec)
    forecast_items = rec.forecast.latest["item"].n_unique() if rec.forecast is not None else 0
    return ReorderResponse(
        origin=origin,
        model=model,
        service_level=rec.config.service_level if service_level is None else service_level,
        lead_time_weeks=lead_time_weeks,
        items=table.height,
        stock_unknown=max(forecast_items - table.height, 0),
        to_order=order.height,
        at_risk_count=risky.height,
        reorder=_titled(rec, order.head(limit).to_dicts()),
        at_risk=_titled(rec, risky.head(limit).to_dicts()),
    )
