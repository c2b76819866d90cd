"""Account function: API Gateway (REST) -> Mangum -> the account surface of the FastAPI app
(balance, receipts, ledger, usage, runs, statements, redeem, payment webhooks). Short answers,
buffered; this function holds no provider key and never imports the gateway."""

from typing import Any

from aws_lambda_powertools import Logger
from mangum import Mangum

from forge.api import create_account_app

logger = Logger()  # never logs the event: it carries API keys
asgi = Mangum(create_account_app(), lifespan="off")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Typed Any: Mangum and Powertools each declare their own LambdaContext protocol.
    return dict(asgi(event, context))
