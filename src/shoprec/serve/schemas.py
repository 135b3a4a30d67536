"""Request and response models of the HTTP service (what ``/docs`` shows)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shoprec.data.schema import Behavior

#: A user or item id: 1 to 128 characters, no whitespace.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]
#: Seconds since the epoch, finite, up to 1e10 (the year 2286); a JSON number (not a string
#: or a boolean).
Timestamp = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False, strict=True)]
#: Units in stock: a JSON integer from 0 to a billion (a 30-digit number is refused, never
#: stored; 1.5, "5" and true too).
Stock = Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)]
#: Error codes by status (``ErrorOut.error``).
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ErrorItem(BaseModel):
    """One problem with one field of a request."""

    loc: list[str | int] = Field(
        description="where, e.g. ['query', 'k'] or ['body', 'stock', 'i1']"
    )
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="pydantic's error type, e.g. 'greater_than_equal'")


class ErrorOut(BaseModel):
    """The body of every error answer (4xx and 503), whatever raised it."""

    status: int = Field(description="the HTTP status, repeated")
    error: str = Field(description="a stable code: " + ", ".join(sorted(set(ERROR_CODES.values()))))
    detail: str = Field(description="one readable paragraph saying what is wrong")
    errors: list[ErrorItem] = Field(
        default_factory=list, description="per-field problems (422), the first 20"
    )


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TaskContributionOut(_Out):
    name: str = Field(description="a task, 'price' or 'session'")
    value: float = Field(description="the item's probability, price or session similarity")
    reference: float = Field(description="the same for a typical reference item")
    contribution: float = Field(description="log-score term minus the reference items' mean")


class FeatureAttributionOut(_Out):
    feature: str
    value: Any = None
    attribution: float


class BecauseOut(_Out):
    item: str
    title: str | None
    behavior: str
    similarity: float


class ExplanationOut(_Out):
    """Task contributions sum exactly to ``log_score - reference_log_score``; feature
    attributions sum to ``model_log_score - baseline_model_log_score`` up to the
    Integrated-Gradients quadrature error; both lists are sorted by absolute value."""

    user: str
    item: str
    fusion: str
    score: float
    log_score: float
    reference_log_score: float
    tasks: list[TaskContributionOut]
    model_log_score: float | None
    baseline_model_log_score: float | None
    features: list[FeatureAttributionOut]
    gates: dict[str, list[float]] | None
    because: BecauseOut | None
    sentence: str
    notes: list[str]


class RecommendationOut(_Out):
    item: str
    rank: int
    score: float = Field(description="fused * exp(session_boost)")
    fused: float = Field(description="the fusion of the task outputs (default: the target's)")
    session_boost: float
    predictions: dict[str, float]
    sources: list[str]
    is_new: bool
    slot: str
    attributes: dict[str, Any]
    explanation: ExplanationOut | None = None


class RecommendResponse(BaseModel):
    user: str
    known_user: bool = Field(description="false: a cold-start list for a shopper the model lacks")
    live_events: int = Field(description="the shopper's recent events the list used")
    fusion: str
    model: str = Field(description="the scorer's model, or its recipe's name")
    recipe: str = Field(description="the recipe that trained the artifact")
    candidates: int = Field(description="candidates the scorer scored for this list")
    items: list[RecommendationOut]


class SimilarOut(_Out):
    item: str
    score: float
    similarity: float
    cooccurrence: float
    attributes: dict[str, Any]


class SimilarResponse(BaseModel):
    item: str
    items: list[SimilarOut]


class HistoryOut(_Out):
    item: str
    behavior: str
    source: str
    timestamp: float | None
    attributes: dict[str, Any]


class HistoryResponse(BaseModel):
    user: str
    known_user: bool
    events: list[HistoryOut]


class EventIn(BaseModel):
    """One shopper event."""

    model_config = ConfigDict(extra="forbid")

    user: Id
    item: Id
    behavior: Behavior
    quantity: int = Field(1, ge=1, le=10_000, strict=True)
    timestamp: Timestamp | None = Field(None, description="seconds since the epoch; now if null")


class EventAck(BaseModel):
    id: int = Field(description="row id in the event store")
    user: str
    item: str
    behavior: str
    timestamp: float
    known_item: bool = Field(description="false: stored, but the model cannot use it yet")


class AudienceOut(_Out):
    user: str
    margin: float = Field(description="two-tower score minus the shopper's top-50 cut-off")
    score: float = Field(description="the fused score of the pair (the scorer's)")
    predictions: dict[str, float]


class AudienceResponse(BaseModel):
    item: str
    users: list[AudienceOut]


class NewItemOut(_Out):
    item: str
    attributes: dict[str, Any]
    reach: int = Field(description="known shoppers whose top-50 two-tower candidates it enters")
    audience: list[AudienceOut]


class NewItemsResponse(BaseModel):
    items: list[NewItemOut]


class UserOut(BaseModel):
    user: str
    events: int


class UsersResponse(BaseModel):
    users: list[UserOut]


class HealthOut(BaseModel):
    status: str
    version: str
    artifact: str
    recipe: str
    model: str
    tasks: list[str]
    target: str
    fusion: str
    items: int
    new_items: int
    users: int
    index: str
    forecast: str | None = None  # the demand forecast's folder (None: none loaded)
    events_stored: int
    journal_mode: str
    loaded_at: float
    uptime_seconds: float


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="a new artifact folder; the current one if null",
    )


class ReloadOut(BaseModel):
    artifact: str
    recipe: str
    model: str
    seconds: float


class StockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stock: dict[Id, Stock] = Field(
        max_length=100_000,
        description="item -> units in stock (0 = out of stock, at most 1e9); checked whole "
        "before anything is written",
    )

    @field_validator("stock", mode="before")
    @classmethod
    def _few_errors(cls, value: Any) -> Any:
        """Many bad levels make one error, not one each: tens of thousands of per-field
        errors cost the server a second to build and the client megabytes to read."""
        if not isinstance(value, dict):
            return value
        bad = [
            k
            for k, v in value.items()
            if type(v) is not int or not 0 <= v <= 1_000_000_000 or not isinstance(k, str)
        ]
        if len(bad) > 20:
            first = bad[0]
            raise ValueError(
                f"{len(bad):,} stock levels are not whole numbers from 0 to 1,000,000,000 "
                f"(first: {str(first)[:60]!r}: {str(value[first])[:40]}); nothing was written"
            )
        return value


class StockOut(BaseModel):
    updated: int
    unknown: list[str]


class ProductIn(BaseModel):
    """One product to add at run time (``POST /admin/catalog``)."""

    model_config = ConfigDict(extra="forbid")

    item: Id
    title: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=200)
    brand: str | None = Field(None, max_length=200)
    price: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)
    stock: Stock | None = None


class CatalogIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ProductIn] = Field(min_length=1, max_length=10_000)


class CatalogOut(BaseModel):
    added: list[str]
    items: int = Field(description="items in the catalog now")
    new_items: int = Field(description="items without training events now")


class ForgetOut(BaseModel):
    """What ``DELETE /users/{user}`` removed (the artifact's counts: ``shoprec.forget``)."""

    user: str
    events_deleted: int = Field(description="events deleted from the event store")
    live_events_deleted: int = Field(description="live events dropped from the session log")
    known: bool = Field(description="whether the served artifact knew the shopper")
    seen_rows: int = Field(description="training events removed from seen.parquet")
    scorer: dict[str, int] = Field(description="what the recipe's scorer removed")
    retrieval: dict[str, int] = Field(description="two-tower ids and embedding rows removed")
    artifact: str
