"""The built layer ships bytecode: /opt is read-only on Lambda, so a module without a .pyc for
the runtime's Python is compiled again at every cold start (layers/forge/Makefile)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from forge_tools.emulator import load_template
from tests.sam.built import LAYER_ID

pytestmark = pytest.mark.sam

UNCHECKED_HASH = 0b01  # PEP 552: hash-based, not checked against the source at import


def test_every_module_of_the_layer_has_python312_bytecode(sam_build: Path, python312: str) -> None:
    template = load_template(sam_build / "template.yaml")
    layer = sam_build / template["Resources"][LAYER_ID]["Properties"]["ContentUri"] / "python"
    sources = sorted(layer.rglob("*.py"))
    assert len(sources) > 500, f"{layer} holds only {len(sources)} modules"
    compiled = {s: s.parent / "__pycache__" / f"{s.stem}.cpython-312.pyc" for s in sources}
    missing = [str(s.relative_to(layer)) for s, pyc in compiled.items() if not pyc.is_file()]
    assert not missing, f"{len(missing)} modules without python3.12 bytecode: {missing[:5]}"

    magic = subprocess.run(
        [
            python312,
            "-c",
            "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for source in (layer / "forge" / "api" / "app.py", layer / "fastapi" / "routing.py"):
        header = compiled[source].read_bytes()[:8]
        assert header[:4].hex() == magic, f"{source}: not python3.12 bytecode"
        assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, source
    stray = [p for p in layer.rglob("*.pyc") if ".cpython-312." not in p.name]
    assert not stray, f"bytecode of another Python in the layer: {stray[:5]}"
