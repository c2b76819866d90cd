"""Every JSON body is parsed strictly (forge.domain.strict_json) before FastAPI validates it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from forge.domain import strict_json


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose body parser refuses NaN, Infinity, lone surrogates, invalid UTF-8 and
    runaway nesting as invalid JSON (400), never a 500 later."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
