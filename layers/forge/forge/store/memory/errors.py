"""Errors exactly as a botocore DynamoDB client raises them: the modeled ClientError subclasses
(so `client.exceptions.ConditionalCheckFailedException` works), the response shape botocore
parses (Error.Code, Error.Message, the shape's own members such as CancellationReasons), and
botocore's client-side parameter validation, all from botocore's own service model."""

from __future__ import annotations

from functools import cache
from typing import Any

from botocore.errorfactory import ClientExceptionsFactory
from botocore.exceptions import ClientError, ParamValidationError
from botocore.model import NoShapeFoundError
from botocore.session import get_session
from botocore.validate import ParamValidator

ENDPOINT = "memory://dynamodb"  # what BotoCoreErrors of the twin name as the endpoint


@cache
def service_model() -> Any:
    return get_session().get_service_model("dynamodb")


@cache
def modeled_exceptions() -> Any:
    """The client's `exceptions` attribute: one ClientError subclass per modeled error."""
    return ClientExceptionsFactory().create_client_exceptions(service_model())


def validate_parameters(operation: str, params: dict[str, Any]) -> None:
    """What the botocore client checks before sending: names, types, required members."""
    shape = service_model().operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


def client_error(
    code: str,
    message: str,
    operation: str,
    *,
    status: int = 400,
    members: dict[str, Any] | None = None,
) -> ClientError:
    """A ClientError of the class botocore would pick for `code`, shaped as botocore parses it."""
    response: dict[str, Any] = {
        "Error": {"Message": message, "Code": code},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    try:
        members_of_shape = service_model().shape_for(code).members
    except NoShapeFoundError:  # not a modeled error (ValidationException is not)
        members_of_shape = {}
    for name in ("message", "Message"):
        if name in members_of_shape:
            response[name] = message
    response.update(members or {})
    cls: type[ClientError] = modeled_exceptions().from_code(code)
    return cls(response, operation)


def validation(message: str, operation: str) -> ClientError:
    return client_error("ValidationException", message, operation)


def not_found(operation: str) -> ClientError:
    return client_error("ResourceNotFoundException", "Requested resource not found", operation)


def condition_failed(operation: str, old: dict[str, Any] | None) -> ClientError:
    members = {"Item": old} if old is not None else {}
    return client_error(
        "ConditionalCheckFailedException",
        "The conditional request failed",
        operation,
        members=members,
    )


def cancelled(reasons: list[dict[str, Any]]) -> ClientError:
    codes = ", ".join(r["Code"] for r in reasons)
    return client_error(
        "TransactionCanceledException",
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        "TransactWriteItems",
        members={"CancellationReasons": reasons},
    )
