"""Proxy Lambda: API Gateway (REST) -> Mangum -> the FastAPI app."""

from mangum import Mangum

from forge.api import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
