"""Request and response bodies of the public API (OpenAI's shapes, validated at the edge)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from forge.domain.money import Bucket, RouteType, decimal_to_micros
from forge.domain.records import KeyKind, KeyStatus
from forge.ledger.entry_view import LedgerEntryView


# Errors --------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    """OpenAI's error object; refusals add their details (e.g. envelope, limit, remaining)."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


ERROR_STATUSES = {
    400: "Invalid request: a body, field, header, query or cursor the API cannot accept",
    401: "Missing or invalid API key",
    402: "A budget envelope refused the call (it names the envelope, limit and remainder)",
    403: "The key may not use this route type or operation",
    404: "No such model, path or resource for this caller",
    405: "Method not allowed",
    409: "Idempotency-Key conflict, or a one-time action already done",
    410: "A redeem code expired or exhausted",
    413: "An upstream refused the request as too large",
    # Validation is 400, as OpenAI answers it; 422 is only an upstream's own refusal passed
    # on. Declaring it also keeps FastAPI from documenting its default 422 validation shape.
    422: "An upstream refused the request as unprocessable",
    429: "Rate limited",
    500: "Internal error; nothing was charged for it",
    502: "No upstream route served the call; nothing was charged",
    503: "A store, the archive, a queue or a secret is unavailable: retry later",
}


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """What any route may answer besides success, for the OpenAPI document."""
    return {
        status: {"model": model, "description": description}
        for status, description in ERROR_STATUSES.items()
    }


# A paid call answers JSON, or a server-sent event stream when it asked for one.
PAID_SUCCESS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer, or (stream=true) a text/event-stream of events",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


class MessageTokensCount(BaseModel):
    """Anthropic's token count answer (POST /v1/messages/count_tokens)."""

    input_tokens: int


class ModelPrices(BaseModel):
    """Prices per 1M tokens in the paying bucket's currency, after the operator multiplier."""

    input: str
    cached_input: str
    output: str
    currency: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tokens-forge"
    description: str
    mode: str = "chat"
    route_type: str
    bucket: str
    prices: ModelPrices
    routes: list[ModelRoute] = Field(default_factory=list)  # in fallback order


class ModelRoute(BaseModel):
    """One route the caller's key may use: who serves it and what it costs."""

    provider: str
    upstream_model: str
    route_type: str
    bucket: str
    prices: ModelPrices


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class BucketBalance(BaseModel):
    bucket: str
    currency: str
    balance: str
    held: str
    available: str
    balance_micros: int
    held_micros: int
    available_micros: int


class BalanceView(BaseModel):
    object: Literal["balance"] = "balance"
    account_id: str
    buckets: list[BucketBalance]


class StatementLink(BaseModel):
    """A short-lived download link to the caller's own statement."""

    object: Literal["statement"] = "statement"
    month: str
    format: Literal["csv", "html"] = "csv"
    status: Literal["final", "provisional"] = "final"
    url: str
    expires_in: int


# Account views: statements list, ledger, usage, runs ----------------------------------------
class StatementMonthView(BaseModel):
    object: Literal["statement_month"] = "statement_month"
    month: str
    status: Literal["final", "provisional"]
    formats: list[Literal["csv", "html"]]
    url: str  # the API path that returns the download link


class StatementList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StatementMonthView]


class LedgerPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[LedgerEntryView]
    has_more: bool
    next_cursor: str | None = None


class UsageLineView(BaseModel):
    """Totals of one group in one bucket (charges of different buckets never add up)."""

    group: str
    bucket: str | None
    currency: str | None
    requests: int
    succeeded: int
    partial: int
    failed: int
    attempts: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    charge: str
    charge_micros: int
    refunded: str  # refund entries written in the range (in a run view: of the run's calls)
    refunded_micros: int


class UsageView(BaseModel):
    object: Literal["usage"] = "usage"
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: str
    data: list[UsageLineView]
    totals: list[UsageLineView]


class RunCallView(BaseModel):
    """One call of a run: its receipt's essentials, every attempt included."""

    request_id: str
    created_at: datetime
    status: str
    requested_model: str
    final_route: str | None = None
    upstream_model: str | None = None
    key_id: str
    project_id: str
    attempts: list[dict[str, Any]]
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    charge: str
    charge_micros: int
    bucket: str | None = None
    settlement: str
    error_code: str | None = None
    note: str | None = None


class RunView(BaseModel):
    object: Literal["run"] = "run"
    run_id: str
    totals: list[UsageLineView]  # the whole run, per bucket
    calls: list[RunCallView]  # this page of calls, oldest first
    has_more: bool
    next_cursor: str | None = None


# Keys, projects and audit (the account owner's management API) ------------------------------
def _amount(value: Any) -> Any:
    """A cap as the API takes it: a decimal string in the bucket's currency (never a JSON
    number: money does not travel as a float), as micro-units."""
    if value is None:
        return None  # no cap
    if not isinstance(value, str) or not re.fullmatch(AMOUNT_PATTERN, value):
        raise ValueError('an amount is a decimal string of at most 6 decimals, such as "5.00"')
    return decimal_to_micros(value)


AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
# Decimal strings on the wire (as documented), micro-units once validated.
Amount = Annotated[
    int | None,
    BeforeValidator(_amount),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "null"}]}),
]
Name = Annotated[str, Field(min_length=1, max_length=100)]
ModelId = Annotated[str, Field(min_length=1, max_length=128)]
ProjectId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCapsBody(StrictBody):
    """A key's caps in one bucket, as decimal strings; null clears a cap."""

    daily: Amount = None
    monthly: Amount = None
    total: Amount = None
    run_budget: Amount = None
    max_request_charge: Amount = None


class ProjectCapsBody(StrictBody):
    daily: Amount = None
    monthly: Amount = None


class KeyCreateBody(StrictBody):
    name: Name
    kind: KeyKind = KeyKind.INFERENCE
    project_id: ProjectId = "default"
    models: list[ModelId] | None = Field(default=None, min_length=1, max_length=200)
    route_types: list[RouteType] = Field(default_factory=lambda: list(RouteType), min_length=1)
    can_call_models: bool = False
    caps: dict[Bucket, KeyCapsBody] | None = None
    expires_at: AwareDatetime | None = None


class KeyUpdateBody(StrictBody):
    """Only the fields sent change; `caps` merges per bucket and field."""

    name: Name | None = None
    project_id: ProjectId | None = None
    models: list[ModelId] | None = Field(default=None, min_length=1, max_length=200)
    route_types: list[RouteType] | None = Field(default=None, min_length=1)
    can_call_models: bool | None = None
    caps: dict[Bucket, KeyCapsBody] | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _not_null(self) -> KeyUpdateBody:
        _refuse_nulls(self, ("name", "project_id", "route_types", "can_call_models", "caps"))
        return self


def _refuse_nulls(body: BaseModel, names: tuple[str, ...]) -> None:
    for name in names:
        if name in body.model_fields_set and getattr(body, name) is None:
            raise ValueError(f"{name} cannot be null")


class RotateBody(StrictBody):
    grace_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)


class ProjectCreateBody(StrictBody):
    id: ProjectId
    name: Annotated[str, Field(max_length=100)] = ""
    caps: dict[Bucket, ProjectCapsBody] | None = None


class ProjectUpdateBody(StrictBody):
    name: Annotated[str, Field(max_length=100)] | None = None
    caps: dict[Bucket, ProjectCapsBody] | None = None

    @model_validator(mode="after")
    def _not_null(self) -> ProjectUpdateBody:
        _refuse_nulls(self, ("name", "caps"))
        return self


class KeyView(BaseModel):
    """A key as its owner sees it: never the secret, only its prefix."""

    object: Literal["key"] = "key"
    id: str
    name: str
    kind: KeyKind
    prefix: str
    project_id: str
    status: KeyStatus
    models: list[str] | None
    route_types: list[RouteType]
    can_call_models: bool
    caps: dict[str, dict[str, str | None]]
    caps_micros: dict[str, dict[str, int | None]]
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    previous_secret_expires_at: datetime | None


class KeyWithSecret(KeyView):
    key: str  # the plaintext: shown in this answer only


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class ProjectView(BaseModel):
    object: Literal["project"] = "project"
    id: str
    name: str
    caps: dict[str, dict[str, str | None]]
    caps_micros: dict[str, dict[str, int | None]]
    created_at: datetime | None


class ProjectList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ProjectView]


class AuditEntryView(BaseModel):
    object: Literal["audit_entry"] = "audit_entry"
    id: str
    at: datetime
    actor_key_id: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEntryView]
    has_more: bool
    next_cursor: str | None = None
