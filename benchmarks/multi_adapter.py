"""Benchmark: the same load on the base model alone versus spread over eight adapters.

    python -m benchmarks.multi_adapter [--requests 400] [--concurrency 32]

One run, one machine: it deploys the CPU stack of the e2e scenario (target
@local) with eight demo adapters, runs `lorafleet bench --models base
--versus adapters:8` against it, writes the JSON and the chart to
benchmarks/results/, and removes everything it made.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tests.support.scenario import API_KEY, converged, docker_engine_problem

RESULTS = Path(__file__).resolve().parent / "results"
EIGHT = ["weather", "sql", "email", "calendar", "billing", "search", "notes", "tickets"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    problem = docker_engine_problem()
    if problem:
        print(problem)
        return 2
    adapters = [{"name": n, "demo": True} for n in EIGHT]
    with converged("local", adapters=adapters, max_loras=8, max_num_seqs=64) as scenario:
        RESULTS.mkdir(exist_ok=True)
        command = [
            sys.executable, "-m", "lorafleet.tools.cli", "bench", "--url", scenario.endpoint,
            "--models", "base", "--versus", "adapters:8", "--requests", str(args.requests),
            "--concurrency", str(args.concurrency), "--prefix-tools", "2", "--no-progress",
            "--out", str(RESULTS / "base-vs-8-adapters.json"), "--chart", str(RESULTS / "base-vs-8-adapters.png"),
        ]
        return subprocess.run(command, env={**os.environ, "LORAFLEET_API_KEY": API_KEY}).returncode


if __name__ == "__main__":
    raise SystemExit(main())
