"""Proxy Lambda: API Gateway (REST) -> Mangum -> the FastAPI app."""

from typing import Any

from aws_lambda_powertools import Logger
from mangum import Mangum

from forge.api import create_app

logger = Logger()  # never logs the event: it carries prompts and API keys
asgi = Mangum(create_app(), lifespan="off")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Typed Any: Mangum and Powertools each declare their own LambdaContext protocol.
    return dict(asgi(event, context))
