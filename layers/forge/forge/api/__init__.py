"""The public HTTP API (FastAPI): thin routes over the gateway and the stores."""

from forge.api.app import create_app

__all__ = ["create_app"]
