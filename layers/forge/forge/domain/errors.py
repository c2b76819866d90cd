"""Domain errors. Each carries its HTTP status and stable OpenAI-style `code`; the API maps
them once (forge.api.errors), adapters translate AWS and HTTP failures into them."""

from __future__ import annotations

from typing import Any, ClassVar


class ForgeError(Exception):
    """Base of every error a client may see. `message` must never contain secrets."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"
    retry_after: ClassVar[int | None] = None  # seconds, sent as Retry-After when set
    # The error's type in Anthropic's shape (/v1/messages); None: the one its status implies.
    anthropic_type: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details


class InvalidRequest(ForgeError):
    """A request the API cannot accept as sent (a field's type or range, a query parameter, a
    cursor): 400, as OpenAI answers it, so every SDK raises its BadRequestError."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJson(InvalidRequest):
    status = 400
    code = "invalid_json"


class UnsupportedParameter(InvalidRequest):
    """A parameter the gateway cannot carry faithfully to every route (stored conversations,
    built-in tools, several prompts...): refused before anything is held, never dropped."""

    status = 400
    code = "unsupported_parameter"


class InvalidParameterCombination(InvalidRequest):
    """Two parameters that contradict each other (max_tokens and max_completion_tokens with
    different values): OpenAI's own status and code for it."""

    status = 400
    code = "invalid_parameter_combination"


class InvalidApiKey(ForgeError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class BudgetExceeded(ForgeError):
    """An envelope stopped the request; details name the envelope, its limit and what was left."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class ScopeDenied(ForgeError):
    status = 403
    type = "permission_error"
    code = "route_type_not_allowed"


class InsufficientScope(ScopeDenied):
    """The key's kind may not do this: an inference key on a management route, or a
    management key without `can_call_models` on a paid route."""

    code = "insufficient_scope"


class ModelNotAllowed(ScopeDenied):
    """The model exists, but the key's model scope leaves it out (403, not 404: the caller
    may see the catalog; its key is what stops it)."""

    code = "model_not_allowed"


class KeyLookupsThrottled(ForgeError):
    """Too many keys this container has never seen, too fast (a flood of wrong keys): the key
    is not looked up now. A real key gets in on the client's retry."""

    status = 429
    type = "rate_limit_error"
    code = "key_lookups_throttled"
    retry_after = 1


class KeyNotFound(ForgeError):
    status = 404
    type = "invalid_request_error"
    code = "key_not_found"


class ProjectNotFound(ForgeError):
    status = 404
    type = "invalid_request_error"
    code = "project_not_found"


class ProjectExists(ForgeError):
    status = 409
    type = "invalid_request_error"
    code = "project_exists"


class KeyRevoked(ForgeError):
    """Revoking is final: a revoked key cannot be changed, resumed or rotated."""

    status = 409
    type = "invalid_request_error"
    code = "key_revoked"


class KeyChangeConflict(ForgeError):
    """Another change to the same key or project landed between read and write, every try."""

    status = 409
    type = "invalid_request_error"
    code = "concurrent_change"


class ModelNotFound(ForgeError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ForgeError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class UpstreamUnavailable(ForgeError):
    """No route served the request; nothing was charged."""

    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class ClientDisconnected(ForgeError):
    """The client hung up before its answer. Never answered (nobody is listening): it names
    the call's receipt, whose hold was voided, or settled at the documented estimate."""

    status = 499  # nginx's "client closed request"
    type = "api_error"
    code = "client_disconnected"


class BudgetStoreUnavailable(ForgeError):
    """The budget store failed: we fail closed and call nothing upstream."""

    status = 503
    type = "api_error"
    code = "budget_store_unavailable"
    retry_after = 1  # a throttle or a blip: the SDKs wait this long, then retry once or twice


class ArchiveUnavailable(ForgeError):
    """The ledger archive (S3) could not be read or written; retry later."""

    status = 503
    type = "api_error"
    code = "archive_unavailable"


class FailureQueueUnavailable(ForgeError):
    """The archiver's on-failure queue (SQS) could not be read or cleared; retry later."""

    status = 503
    type = "api_error"
    code = "failure_queue_unavailable"


class LedgerEntryUnreadable(ForgeError):
    """A ledger table item that claims to be an entry but cannot be read as one (or was written
    by a newer schema): nothing is archived from a misreading."""

    status = 500
    type = "api_error"
    code = "ledger_entry_unreadable"


class ProviderSecretUnavailable(ForgeError):
    """The provider key secret cannot be read or written, or does not hold a JSON object of
    provider name to key. The message names the secret and the AWS error code, never a value."""

    status = 503
    type = "api_error"
    code = "provider_secret_unavailable"


class InternalError(ForgeError):
    """A defect of ours, contained: the request's hold was resolved and its receipt written
    before this answer left (see Gateway.serve)."""

    status = 500
    type = "api_error"
    code = "internal_error"


class ConcurrentUpdate(Exception):
    """Internal: an optimistic write lost a race and should be retried."""


# Money in: payment webhooks, redeem codes, operator adjustments ------------------------------
class WebhookSignatureInvalid(ForgeError):
    """The Forge-Signature header is missing, malformed, wrong, or outside the time window;
    `reason` in the details says which, never the expected value."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_signature"


class WebhooksNotConfigured(ForgeError):
    """No webhook secret is configured: payment events cannot be verified, so none is applied."""

    status = 503
    type = "api_error"
    code = "webhooks_not_configured"


class PaymentEventConflict(ForgeError):
    """An event id already applied comes back with different money: nothing is credited."""

    status = 409
    type = "invalid_request_error"
    code = "event_id_conflict"


class RedeemCodeInvalid(ForgeError):
    """Base of the reasons a redeem code grants nothing; each subclass has its own code."""

    status = 404
    type = "invalid_request_error"
    code = "code_not_found"


class RedeemCodeNotFound(RedeemCodeInvalid):
    status = 404
    code = "code_not_found"


class RedeemCodeDisabled(RedeemCodeInvalid):
    status = 409
    code = "code_disabled"


class RedeemCodeAlreadyClaimed(RedeemCodeInvalid):
    status = 409
    code = "code_already_claimed"


class RedeemCodeExpired(RedeemCodeInvalid):
    status = 410
    code = "code_expired"


class RedeemCodeExhausted(RedeemCodeInvalid):
    status = 410
    code = "code_exhausted"


# Moved from api/errors.py ----------
class MethodNotAllowed(ForgeError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class HttpError(ForgeError):
    """Any other HTTP-level refusal from the framework; the status is per instance."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]
        self.code = f"http_{status}"  # type: ignore[misc]


# Moved from money_in/payments.py ----------
class RefundAlreadyIssued(ForgeError):
    """A request's charge was refunded before: a request is refunded at most once."""

    status = 409
    type = "invalid_request_error"
    code = "refund_already_issued"


# Moved from ledger/statements.py ----------
class LedgerChainBroken(ForgeError):
    """The archived ledger does not reconcile; no statement is published from it."""

    status = 500
    type = "api_error"
    code = "ledger_chain_broken"


class StatementNotReady(ForgeError):
    """The ledger holds entries of the month the archive has not received yet (the stream is
    behind): nothing is published; asking again shortly succeeds."""

    status = 503
    type = "api_error"
    code = "statement_not_ready"
    retry_after = 30  # the stream poller / Lambda mapping catches up within seconds


class StatementMismatch(ForgeError):
    """A final statement is stored and a rebuild would differ: final statements are immutable,
    so the stored one stays and the difference is reported for an operator to explain."""

    status = 500
    type = "api_error"
    code = "statement_mismatch"


# Moved from ledger/views.py ----------
class InvalidCursor(InvalidRequest):
    """A page cursor that was not issued for this query (tampered, truncated, or reused with
    other filters). Never answered with another query's data."""

    code = "invalid_cursor"


# Moved from store/dynamo/store.py ----------
class HoldAlreadyResolved(Exception):
    """The hold was settled or voided before: resolving it again must change nothing."""


class GuardFailed(Exception):
    """A guard item of a money transaction failed its condition (a replayed payment event,
    an already claimed code...): nothing was written. `index` says which guard."""

    def __init__(self, index: int) -> None:
        super().__init__(f"guard {index} failed")
        self.index = index


# Moved from domain/routing.py ----------
class UpstreamRejected(ForgeError):
    """The provider refused the request itself (a 4xx other than auth, model or rate limit):
    returned as it is, nothing charged, no retry and no fallback. Its type, code, param and
    Anthropic type are the provider's, in the client's dialect (forge.domain.provider_errors);
    the class's code, upstream_rejected_request, rides along as `forge_code`."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected_request"

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        error_code: str,
        anthropic_type: str,
        param: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, param=param, forge_code=type(self).code, **details)
        self.type = error_type  # type: ignore[misc]
        self.code = error_code  # type: ignore[misc]
        self.anthropic_type = anthropic_type  # type: ignore[misc]


class UpstreamRejectedTooLarge(UpstreamRejected):
    status = 413


class UpstreamRejectedUnprocessable(UpstreamRejected):
    status = 422


class FallbackNotAllowed(ScopeDenied):
    """Every route the key may use failed, and the next route is of a type (so a bucket) the
    key may not pay from: refused rather than silently crossing buckets."""

    code = "fallback_route_type_not_allowed"


# Moved from domain/idempotency.py ----------
class IdempotencyConflict(ForgeError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyInProgress(ForgeError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_in_progress"
