"""Benchmark: what the per-adapter metrics middleware costs, the same load with and without it.

    python -m benchmarks.metrics_overhead [--requests 600] [--concurrency 16]
    python -m benchmarks.metrics_overhead --in-process   # the middleware alone, no Docker

One run, one machine: it deploys the CPU stack of the e2e scenario (target @local), runs `lorafleet
bench` over the base and the demo adapters (its requests stream, for TTFT) with the middleware as
deployed, then recreates vLLM from the same compose file without `--middleware
lorafleet_metrics.AdapterMetrics` and runs the same bench again. Prints `lorafleet bench compare` of
the two (requests/s, latency, TTFT), each after a warm-up of its own, writes both JSON files to benchmarks/results/ and removes
everything it made.

`--in-process` times the middleware alone around a stand-in app that answers at once (a 2 KB chat
request, a non-streamed answer and a stream of 16 chunks whose client did not ask for usage, so the
request is re-encoded): microseconds per request with and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import subprocess
import sys
from pathlib import Path

from benchmarks.serving import bench, recreate_vllm
from lorafleet.deploy.layout import SERVE_FILES
from tests.support.scenario import converged, docker_engine_problem
from tests.support.modules import load_file

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = "lorafleet_metrics.AdapterMetrics"


def without_metrics(command: list[str]) -> None:
    """vLLM's command less the metrics middleware (its flag and value)."""
    i = command.index(METRICS)
    del command[i - 1:i + 1]


def in_process(rounds: int = 5000) -> None:
    """Microseconds per request of a stand-in app, alone and inside the middleware."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    module = load_file("lorafleet_metrics", SERVE_FILES["lorafleet_metrics.py"])
    registry = SimpleNamespace(base_model_paths=[SimpleNamespace(name="base")],
                               lora_requests={f"adapter{i}": None for i in range(50)})
    owner = SimpleNamespace(state=SimpleNamespace(openai_serving_models=registry))
    answer = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 16}}],
                         "usage": {"prompt_tokens": 500, "completion_tokens": 16}}).encode()
    chunk = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "hello "}}]}).encode() + b"\n\n"
    usage = b"data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 500, "completion_tokens": 16}}).encode()

    async def app(scope, receive, send):
        stream = json.loads((await receive())["body"]).get("stream")
        kind = b"text/event-stream" if stream else b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        if not stream:
            await send({"type": "http.response.body", "body": answer})
            return
        for _ in range(16):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": usage + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    middleware = module.AdapterMetrics(app, metrics=module.Metrics(CollectorRegistry()),
                                       served=module.ServedNames("/nonexistent"))

    async def timed(target, body: bytes) -> float:
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "app": owner}

        async def receive():
            return {"type": "http.request", "body": body}

        async def send(message):
            return None

        start = time.perf_counter()
        for _ in range(rounds):
            await target(scope, receive, send)
        return (time.perf_counter() - start) / rounds * 1e6

    request = {"model": "adapter7", "messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 16}
    for what, body in (("non-streamed", request), ("streamed, 16 chunks", {**request, "stream": True})):
        encoded = json.dumps(body).encode()
        alone, wrapped = asyncio.run(timed(app, encoded)), asyncio.run(timed(middleware, encoded))
        print(f"{what}: {alone:.1f} us alone, {wrapped:.1f} us with the middleware: {wrapped - alone:.1f} us added")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--in-process", action="store_true", help="the middleware alone, around a stand-in app")
    args = parser.parse_args()
    if args.in_process:
        in_process()
        return 0
    problem = docker_engine_problem()
    if problem:
        print(problem)
        return 2
    RESULTS.mkdir(exist_ok=True)
    with_it, without_it = RESULTS / "metrics-on.json", RESULTS / "metrics-off.json"
    with converged("local") as scenario:
        bench(scenario, with_it, "with the metrics middleware", args)
        recreate_vllm(scenario, without_metrics, "no-metrics")
        bench(scenario, without_it, "without it", args)
    return subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", "bench", "compare", str(without_it),
                           str(with_it)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
