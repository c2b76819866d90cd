"""The README's compatibility table is the suite's own account of itself: every client with
the versions installed, every feature tested, and what is not there yet (the expected
failures). Run `make compat-table` after changing the suite, a client's pin or a mark."""

from __future__ import annotations

import difflib
import os

import pytest

from tests.compat.clients import CLIENTS
from tests.compat.table import BEGIN, END, README, collected_cells, render, replace_table


def test_readme_table_matches_the_suite(request: pytest.FixtureRequest) -> None:
    cells = request.config.stash.get(collected_cells, [])
    untested = [c.key for c in CLIENTS if not any(cell.client == c for cell in cells)]
    if untested:
        pytest.skip(f"checked when the whole of tests/compat is collected (not here: {untested})")
    readme = README.read_text(encoding="utf-8")
    assert BEGIN in readme and END in readme, f"README.md lost its table markers {BEGIN} {END}"

    expected = replace_table(readme, render(cells))
    if os.environ.get("FORGE_WRITE_COMPAT_TABLE") == "1":
        README.write_text(expected, encoding="utf-8")
        readme = expected

    diff = "\n".join(difflib.unified_diff(readme.splitlines(), expected.splitlines(), lineterm=""))
    assert not diff, f"README's compatibility table is out of date: run `make compat-table`\n{diff}"
