"""The running local stack, started exactly as `make dev` starts it, in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from forge.store.dynamo.store import DynamoStore
from tests.e2e.helpers import open_clients, provider_environment
from tests.integration.providers_kit import Fakes, start_fakes

E2E_WEBHOOK_SECRET = "whsec_e2e_test_secret"  # the stack under test verifies webhooks with it


@dataclass
class LocalStack:
    env: dict[str, str]
    base_url: str
    api_key: str
    account_id: str
    process: subprocess.Popen[bytes]
    env_file: Path
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """One client per service for the whole session (each holds a connection pool)."""
        if service not in self.clients:
            self.clients[service] = self._new_client(service)
        return self.clients[service]

    def _new_client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def store(self) -> DynamoStore:
        return DynamoStore(
            self.client("dynamodb"), self.env["BUDGET_TABLE"], self.env["LEDGER_TABLE"]
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_env(path: Path) -> dict[str, str]:
    import shlex

    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


@pytest.fixture(scope="session")
def fake_providers() -> Iterator[Fakes]:
    """OpenAI, Anthropic and Gemini fakes on 127.0.0.1 (this process) for the stack to call."""
    yield from start_fakes()


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_providers: Fakes
) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("local")
    yield from run_local_stack(state_dir, provider_environment(fake_providers, state_dir))


def run_local_stack(state_dir: Path, environment: dict[str, str]) -> Iterator[LocalStack]:
    """`make dev` in a subprocess with `environment` added, keeping its state in `state_dir`;
    yields once it answers, and checks on the way out that it stopped cleanly."""
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "FORGE_LOCAL_DIR": str(state_dir),
        "FORGE_WEBHOOK_SECRET": E2E_WEBHOOK_SECRET,
        **environment,
    }
    log = (state_dir / "stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "forge_tools.devstack"], env=env, stdout=log, stderr=log
    )
    env_file = state_dir / "dev.env"
    deadline = time.monotonic() + 60
    while not env_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"local stack did not start:\n{(state_dir / 'stack.log').read_text()}")
        time.sleep(0.1)
    values = _read_env(env_file)
    stack = LocalStack(
        env=values,
        base_url=values["OPENAI_BASE_URL"],
        api_key=values["OPENAI_API_KEY"],
        account_id=values["FORGE_ACCOUNT_ID"],
        process=process,
        env_file=env_file,
    )
    httpx.get(
        stack.base_url + "/models", headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=10
    ).raise_for_status()
    yield stack
    for client in stack.clients.values():
        client.close()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("local stack did not stop on SIGINT")
    log.close()
    assert process.returncode == 0, (state_dir / "stack.log").read_text()[-3000:]
    assert not env_file.exists(), "dev.env must be removed when the stack stops"


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while open_clients:
        open_clients.pop().close()
