"""The web console's files under /console: plain ES modules and CSS shipped in the package
(forge/api/console), served with a strict Content-Security-Policy. The console has no backend
of its own: the browser calls the public JSON API with the key the user signed in with."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from forge.domain.errors import NotFound

router = APIRouter(include_in_schema=False)

ROOT = Path(__file__).resolve().parent.parent / "console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# No inline script or style, no eval, nothing from another origin; the page talks only to
# this API and cannot be framed, and no form posts anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # File names carry no hash: the browser may keep a copy but asks (ETag) before using it.
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> tuple[bytes, str, str] | None:
    """(body, media type, ETag) of one shipped file; None for anything else (no traversal:
    only names found inside the console folder, with a known suffix)."""
    path = (ROOT / name).resolve()
    if not path.is_relative_to(ROOT) or not path.is_file() or path.suffix not in MEDIA_TYPES:
        return None
    body = path.read_bytes()
    return body, MEDIA_TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(name: str, if_none_match: str | None) -> Response:
    asset = _asset(name)
    if asset is None:
        raise NotFound(f"No console file '{name}'", param="path")
    body, media_type, etag = asset
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/console")
async def console_root() -> RedirectResponse:
    # Relative module paths resolve against /console/, so the page lives there. A relative
    # Location keeps API Gateway's stage prefix (/dev/console -> /dev/console/).
    return RedirectResponse("console/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/console/")
async def console_page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _serve("index.html", if_none_match)


@router.get("/console/{name:path}")
async def console_file(
    name: Annotated[str, PathParam(max_length=200)],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    return _serve(name, if_none_match)
