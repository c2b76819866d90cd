"""Fixtures of the SAM tests: python3.12 as Lambda's runtime, one `sam build` per session, and
the embedded emulator with template.yaml's tables and bucket."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_tools.emulator import Emulator, Resources, load_template
from forge_tools.native import runnable_copy
from tests.sam.built import BUILD_DIR, LAYER_ID, ROOT, SAM, TEMPLATE, assert_ok, run


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
def lambda_build(sam_build: Path, python312: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build as this machine can run it: a copy in which each native extension built for
    Lambda's arm64 is the same version's wheel for this machine (tests/sam/native.py)."""
    template = load_template(sam_build / "template.yaml")
    layer = template["Resources"][LAYER_ID]["Properties"]["ContentUri"]
    into = tmp_path_factory.mktemp("lambda") / "build"
    cache = ROOT / ".aws-sam" / "host-wheels"
    return runnable_copy(sam_build, f"{layer}/python", into, python312, cache)


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
