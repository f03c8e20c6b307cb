"""Benchmark: what the per-adapter metrics middleware costs, the same load with and without it.

    python -m benchmarks.metrics_overhead [--requests 600] [--concurrency 16]

One run, one machine: it deploys the CPU stack of the e2e scenario (target @local), runs `lorafleet
bench` over the base and the demo adapters (its requests stream, for TTFT) with the middleware as
deployed, then recreates vLLM from the same compose file without `--middleware
lorafleet_metrics.AdapterMetrics` and runs the same bench again. Prints `lorafleet bench compare` of
the two (requests/s, latency, TTFT), each after a warm-up of its own, writes both JSON files to benchmarks/results/ and removes
everything it made.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.scenario import API_KEY, converged, docker_engine_problem, sh

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = "lorafleet_metrics.AdapterMetrics"


def bench(scenario, out: Path, label: str, args) -> None:
    """A warm-up (the recreated server's first requests would otherwise count against it), then the measured run."""
    for requests, target in ((args.concurrency * 4, out.with_suffix(".warmup.json")), (args.requests, out)):
        command = [sys.executable, "-m", "lorafleet.tools.cli", "bench", "--url", scenario.endpoint, "--models", "all",
                   "--requests", str(requests), "--concurrency", str(args.concurrency), "--max-tokens", "16",
                   "--prefix-tools", "2", "--no-progress", "--label", label, "--out", str(target)]
        subprocess.run(command, env={**os.environ, "LORAFLEET_API_KEY": API_KEY}, check=True,
                       stdout=subprocess.DEVNULL if target != out else None)


def without_metrics(scenario) -> None:
    """Recreate vLLM from the deployed compose file, less the metrics middleware."""
    compose = scenario.dir / "stack" / "compose.yaml"
    project = yaml.safe_load(compose.read_text())
    command = project["services"]["vllm"]["command"]
    i = command.index(METRICS)
    del command[i - 1:i + 1]
    bare = compose.with_name("compose.no-metrics.yaml")
    bare.write_text(yaml.safe_dump(project, sort_keys=False))
    sh("docker", "compose", "-p", scenario.project, "-f", str(bare), "up", "-d", "--wait", "--wait-timeout", "900",
       "--force-recreate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    problem = docker_engine_problem()
    if problem:
        print(problem)
        return 2
    RESULTS.mkdir(exist_ok=True)
    with_it, without_it = RESULTS / "metrics-on.json", RESULTS / "metrics-off.json"
    with converged("local") as scenario:
        bench(scenario, with_it, "with the metrics middleware", args)
        without_metrics(scenario)
        bench(scenario, without_it, "without it", args)
    return subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", "bench", "compare", str(without_it),
                           str(with_it)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
