"""Domain errors. Each carries its HTTP status and stable OpenAI-style `code`; the API maps
them once (forge.api.errors), adapters translate AWS and HTTP failures into them."""

from __future__ import annotations

from typing import Any, ClassVar


class ForgeError(Exception):
    """Base of every error a client may see. `message` must never contain secrets."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details


class InvalidRequest(ForgeError):
    status = 422
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJson(InvalidRequest):
    status = 400
    code = "invalid_json"


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


class BudgetStoreUnavailable(ForgeError):
    """The budget store failed: we fail closed and call nothing upstream."""

    status = 503
    type = "api_error"
    code = "budget_store_unavailable"


class ArchiveUnavailable(ForgeError):
    """The ledger archive (S3) could not be read or written; retry later."""

    status = 503
    type = "api_error"
    code = "archive_unavailable"


class ConcurrentUpdate(Exception):
    """Internal: an optimistic write lost a race and should be retried."""
