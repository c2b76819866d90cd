"""Schemathesis over the app's own OpenAPI document, in process: valid and invalid requests for
every operation. No server error; every status, content type, header and body is the one the
document declares (error shapes included); and nothing refused is charged."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.case import Case

from forge.api import create_app
from forge_tools.emulator import Resources
from tests.fuzz.fuzzing import fuzz_target, key_for, send

SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_app())
EXAMPLES = 25


def _has_inputs(method: str, path: str) -> bool:
    """Whether an operation takes something that can be sent wrong: a body, a query or path
    parameter, or a constrained header (any string is a valid unconstrained header)."""
    spec = SCHEMA.raw_schema["paths"][path][method.lower()]

    def breakable(parameter: dict[str, object]) -> bool:
        if parameter["in"] != "header":
            return True
        return any(word in str(parameter["schema"]) for word in ("pattern", "Length"))

    return "requestBody" in spec or any(breakable(p) for p in spec.get("parameters", []))


OPERATIONS = [
    (method, path, mode)
    for method, path in (
        (op.method.upper(), op.path) for op in (r.ok() for r in SCHEMA.get_all_operations())
    )
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_inputs(method, path)
]


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    OPERATIONS,
    ids=[f"{m} {p} {mode.value}" for m, p, mode in OPERATIONS],
)
def test_every_operation_answers_as_documented(
    aws_stack: Resources,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET", "whsec_fuzz")  # so signatures are checked
    target = fuzz_target()
    operation = SCHEMA[path][method]
    auth = {"authorization": f"Bearer {key_for(target, path)}"}
    strategy = operation.as_strategy(generation_mode=mode, headers=auth)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def exercise(case: Case) -> None:
        kwargs = case.as_transport_kwargs()
        kwargs.pop("cookies", None)  # the API reads no cookies
        if isinstance(kwargs.get("data"), bytes | str):
            kwargs["content"] = kwargs.pop("data")
        response = send(
            target,
            kwargs.pop("method"),
            kwargs.pop("url").removeprefix("http://localhost"),
            **kwargs,
        )
        target.record(path, response.status_code)
        # A request valid by the schema may still be refused for what it asks (an unknown
        # model is 404, an empty wallet 402): that is not a defect, so that check is off.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    exercise()
    target.assert_nothing_refused_was_charged()
