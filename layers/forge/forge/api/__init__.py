"""The public HTTP API (FastAPI): thin routes over the gateway and the stores."""

from forge.api.app import create_account_app, create_app, create_paid_app

__all__ = ["create_account_app", "create_app", "create_paid_app"]
