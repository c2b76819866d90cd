"""Proxy Lambda: API Gateway (REST) -> Mangum -> the FastAPI app."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from forge.api import create_app

logger = Logger()  # never logs the event: it carries prompts and API keys
asgi = Mangum(create_app(), lifespan="off")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(asgi(event, context))
