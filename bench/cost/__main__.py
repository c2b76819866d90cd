"""`make cost`: dollars per million paid requests, by part, at 1, 2, 10 and 60 s of upstream
time; every figure a measurement of this run or a line of the dated price file.

Runs N non-streamed and N streamed paid calls through the proxy's app on the embedded stack
(bench.cost.run), prices what they did (bench.cost.parts) and writes bench/cost.json, the
"What a million requests cost" section of docs/performance.md and README's short table
(between their markers). `--reprice` prices the measurement already in the JSON file again,
with another price file, without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cost.levers import floor, weigh
from bench.cost.parts import DURATIONS, Prices, price
from bench.cost.report import (
    DOCS_END,
    DOCS_START,
    README_END,
    README_START,
    cost_table,
    docs_section,
    readme_table,
    replace_between,
)

ROOT = Path(__file__).resolve().parents[2]


def _shown(path: Path) -> str:
    """A path inside the project relative to it, so the JSON does not name a checkout."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=50, help="paid calls of each kind")
    parser.add_argument("--prices", type=Path, default=ROOT / "bench" / "prices.json")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "cost.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--reprice", action="store_true", help="price the measurement in --json again; no run"
    )
    args = parser.parse_args(argv)

    from forge_tools.template import load_template

    template = load_template(ROOT / "template.yaml")
    prices = Prices(json.loads(args.prices.read_text(encoding="utf-8")))
    if args.reprice:
        measurement = json.loads(args.json.read_text(encoding="utf-8"))["measurement"]
    else:
        from bench.cost.run import measure

        measurement = measure(args.requests)
    costs = price(measurement, prices, template)
    document = {
        "prices_file": _shown(args.prices),
        "prices": prices.document,
        "costs": costs.as_json(),
        "measurement": measurement,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    section = docs_section(
        measurement, prices, costs, weigh(measurement, prices, template), floor(prices)
    )
    replace_between(args.docs, DOCS_START, DOCS_END, section)
    replace_between(args.readme, README_START, README_END, readme_table(measurement, prices, costs))
    print("\n".join(cost_table(costs)))
    print(f"(dollars per 1M paid requests at {', '.join(f'{s:g} s' for s in DURATIONS)})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
