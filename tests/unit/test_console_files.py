"""The web console's files as the account surface serves them: a strict CSP on every answer,
nothing from another origin, no inline script or style, every module import shipped."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from forge.api import create_account_app
from forge.api.routes.console import CONTENT_SECURITY_POLICY, ROOT

FILES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_account_app())


def test_the_policy_allows_nothing_inline_and_nothing_foreign() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == directives["base-uri"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("name", FILES)
def test_every_file_is_served_with_the_policy_and_revalidated(
    client: TestClient, name: str
) -> None:
    answer = client.get(f"/console/{name}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-cache"
    again = client.get(f"/console/{name}", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("name", FILES)
def test_no_file_loads_anything_from_elsewhere_or_inline(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name
    assert "@import" not in text and "eval(" not in text and "new Function" not in text
    assert ".innerHTML" not in text and "style=" not in text, name
    if name.endswith(".html"):
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
        assert "<style" not in text


def test_every_module_import_is_a_shipped_file() -> None:
    for path in ROOT.rglob("*.js"):
        for target in re.findall(r"""from\s+["'](\.[^"']+)["']""", path.read_text()):
            assert (path.parent / target).resolve().is_file(), (path.name, target)


def test_the_page_and_its_redirect(client: TestClient) -> None:
    page = client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="js/app.js"' in page.text
    # relative, so API Gateway's stage prefix stays (/dev/console -> /dev/console/)
    moved = client.get("/console", follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (308, "console/")


@pytest.mark.parametrize(
    "path", ["/console/../app.py", "/console/%2e%2e/routes/console.py", "/console/missing.js"]
)
def test_nothing_outside_the_console_folder_is_served(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
