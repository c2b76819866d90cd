"""`make dev` beside a stack that is already running: the second one stops at once and the
first keeps its dev.env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from forge_tools.devstack import EnvFile
from tests.e2e.conftest import LocalStack


def test_a_second_stack_on_a_busy_port_fails_in_one_line_and_leaves_dev_env(
    local_stack: LocalStack,
) -> None:
    # Given a running stack and the dev.env it wrote
    written = local_stack.env_file.read_text()

    # When another `make dev` is started on its port, with the same state directory
    second = subprocess.run(
        [sys.executable, "-m", "forge_tools.devstack"],
        env={
            **os.environ,
            "PORT": str(urlsplit(local_stack.base_url).port),
            "FORGE_LOCAL_DIR": str(local_stack.env_file.parent),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it fails, leaving the running stack's dev.env as it was, and says why in one line
    assert second.returncode != 0
    assert local_stack.env_file.exists() and local_stack.env_file.read_text() == written
    assert second.stderr.strip().count("\n") == 0, second.stderr
    assert "is in use" in second.stderr and "PORT=" in second.stderr
    models = httpx.get(
        f"{local_stack.base_url}/models",
        headers={"Authorization": f"Bearer {local_stack.api_key}"},
        timeout=10,
    )
    assert models.status_code == 200


def test_a_stack_removes_only_the_dev_env_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "dev.env"
    first, second = EnvFile(path), EnvFile(path)

    # A stack that never wrote the file leaves it alone
    first.write({"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"})
    second.remove()
    assert path.exists()

    # One that wrote it leaves it alone once another stack (another port) has replaced it
    second.write({"OPENAI_BASE_URL": "http://127.0.0.1:8081/v1"})
    first.remove()
    assert "8081" in path.read_text()

    # And removes it when it is still its own
    second.remove()
    assert not path.exists()
