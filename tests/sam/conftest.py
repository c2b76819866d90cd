"""Fixtures of the SAM tests: python3.12 as Lambda's runtime, one `sam build` per session, and
the embedded emulator with template.yaml's tables and bucket."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_tools.emulator import Emulator, Resources
from tests.sam.built import BUILD_DIR, SAM, TEMPLATE, assert_ok, run


@pytest.fixture(scope="session")
def python312() -> str:
    """The interpreter Lambda's python3.12 runtime stands for (the one `sam build` uses)."""
    if not SAM.is_file():
        pytest.fail(f"{SAM} is missing")
    proc = run(["bash", str(SAM), "--python312"], timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"python3.12 is required for the SAM tests: {proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def sam_build(python312: str) -> Path:
    """`sam build` once per session (installs the pinned SAM CLI on first use)."""
    proc = run(["bash", str(SAM), "build"], timeout=1800)
    assert_ok(proc, "tools/sam.sh build")
    return BUILD_DIR


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The embedded DynamoDB/S3 emulator, on a free port of 127.0.0.1."""
    running = Emulator().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def backend(emulator: Emulator) -> Resources:
    """template.yaml's tables and bucket, fresh for each test (what one function writes must
    not become another's input)."""
    return emulator.create_resources(TEMPLATE, prefix=f"sam-{secrets.token_hex(4)}")
