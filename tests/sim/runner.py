"""Run the simulation for a seed, and shrink a failure to its shortest failing prefix.

    python -m tests.sim --seed 7 --steps 20000      (what `make sim SEED=7 STEPS=20000` runs)

A run of STEPS steps is a prefix of any longer run of the same seed, final phase aside, so a
failure found after step N is looked for again in shorter runs (bisection over STEPS, then a
short walk down, since a failure of the final phase need not be monotonic): the shortest
failing run is the one to replay and read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tests.sim.simulation import Result, Simulation


def run(seed: int, steps: int, *, late_requests: bool = False) -> Result:
    """One run: STEPS steps of the seed, then the final phase."""
    return asyncio.run(Simulation(seed, late_requests=late_requests).run(steps))


def shortest_failing(
    seed: int, failed: Result, *, walk: int = 20, late_requests: bool = False
) -> Result:
    """The shortest prefix of `failed`'s seed that still fails (bisection, then a short walk
    down from it)."""
    assert failed.failure is not None
    best = failed
    low, high = 0, failed.failure.step  # a run of `low` steps passes; of `high` fails
    while high - low > 1:
        middle = (low + high) // 2
        result = run(seed, middle, late_requests=late_requests)
        if result.failure is not None:
            best, high = result, middle
        else:
            low = middle
    if best.steps != high:
        best = run(seed, high, late_requests=late_requests)
    for steps in range(high - 1, max(high - 1 - walk, 0), -1):
        result = run(seed, steps, late_requests=late_requests)
        if result.failure is not None:
            best = result
    return best


def report(result: Result) -> str:
    failure = result.failure
    if failure is None:
        return f"seed {result.seed}: {result.steps} steps, every rule held ({result.digest[:16]})"
    tail = "\n".join(f"    {line}" for line in result.trace[-25:])
    where = "in the final phase, after" if failure.in_final_phase else "at"
    return (
        f"seed {result.seed} FAILED {where} step {failure.step} of {result.steps}:"
        f" {failure.message}\n  the last lines of its trace:\n{tail}\n"
        f"  replay: make sim SEED={result.seed} STEPS={result.steps}"
        + (" SIM_FLAGS=--late-requests" if result.late_requests else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed")
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print every step")
    parser.add_argument(
        "--late-requests",
        action="store_true",
        help="no function timeout: requests may outlive their holds and race the sweeper",
    )
    args = parser.parse_args(argv)
    failed = False
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.perf_counter()
        result = run(seed, args.steps, late_requests=args.late_requests)
        elapsed = time.perf_counter() - started
        if args.trace:
            print("\n".join(result.trace))
        if result.failure is not None and not args.no_shrink:
            failure = result.failure
            print(f"seed {seed}: failed after step {failure.step}: {failure.message}; shrinking...")
            result = shortest_failing(seed, result, late_requests=args.late_requests)
        print(f"{report(result)} [{elapsed:.1f}s]", flush=True)
        print(f"  {dict(sorted(result.stats.items()))}")
        failed = failed or result.failure is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
