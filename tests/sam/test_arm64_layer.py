"""The layer as built for Lambda's arm64: what this machine can check of it without an arm64
interpreter. Every other test runs the build itself (tests/sam/native.py swaps only its native
extensions for this machine's); these check the extensions it ships."""

from __future__ import annotations

import filecmp
import importlib.metadata
from pathlib import Path

import pytest

from forge_tools.emulator import load_template
from forge_tools.native import ELF_MACHINES, distributions, elf_machine
from tests.sam.built import LAYER_ID

pytestmark = pytest.mark.sam


def layer_site(build: Path) -> Path:
    template = load_template(build / "template.yaml")
    return build / template["Resources"][LAYER_ID]["Properties"]["ContentUri"] / "python"


def test_every_function_and_the_layer_are_arm64(sam_build: Path) -> None:
    template = load_template(sam_build / "template.yaml")
    functions = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert functions
    shared = template.get("Globals", {}).get("Function", {}).get("Architectures")
    for name, props in functions.items():
        assert props.get("Architectures", shared) == ["arm64"], name
    layer = template["Resources"][LAYER_ID]["Properties"]
    assert layer["CompatibleArchitectures"] == ["arm64"]


def test_the_native_extensions_are_arm64_builds_of_the_versions_the_tests_run(
    sam_build: Path,
) -> None:
    site = layer_site(sam_build)
    native = [d for d in distributions(site) if d.native]
    assert [d.name for d in native] == ["pydantic_core"]  # the one to watch for on arm64
    for dist in native:
        for name in dist.native:
            assert elf_machine(site / name) == ELF_MACHINES["aarch64"], name
            assert "aarch64" in name, name
        wheel = (dist.dist_info / "WHEEL").read_text("utf-8")
        assert "Tag: cp312-cp312-manylinux" in wheel and "aarch64" in wheel
        assert dist.version == importlib.metadata.version(dist.name)


def test_the_runnable_copy_differs_from_the_build_only_in_native_packages(
    sam_build: Path, lambda_build: Path
) -> None:
    built, ran = layer_site(sam_build), layer_site(lambda_build)
    swapped = {d.name for d in distributions(built) if d.native}
    owned = {f for d in distributions(built) if d.name in swapped for f in d.files}
    others = [
        str(p.relative_to(built))
        for p in built.rglob("*")
        if p.is_file() and str(p.relative_to(built)) not in owned and "__pycache__" not in p.parts
    ]
    assert len(others) > 1000
    _, mismatch, missing = filecmp.cmpfiles(built, ran, others, shallow=False)
    assert (mismatch, missing) == ([], [])
    assert {d.name for d in distributions(ran) if d.native} == swapped
