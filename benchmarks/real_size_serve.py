"""Real size, served: Gemma 3 270M and its trained adapter through the deploy's own path, on this CPU.

    python -m benchmarks.real_size_serve [--work /var/tmp/lorafleet-real] [--port 8011] [--steps 30]
                                         [--requests 16] [--max-model-len 4096]

Slow (minutes; tens of minutes when it must train first); not part of CI. Needs a Docker engine
and the CPU serving image (a local deploy or the e2e scenario builds it).
1. Reuses ``benchmarks.real_size_train``'s outputs in ``--work`` (``base/``, ``adapter/``), running
   it first (with ``--steps``) when they are missing.
2. Deploys them with the real deploy (pyinfra, deploy.py) on the local target, in a compose project
   and on a port of its own (``lorafleet-real``, 8011; never the ``lorafleet-local`` stack):
   ``base_model_source = "upload"`` (the base folder, hard-linked under the name of the base the
   adapter records, so the deploy's base check runs and passes), the adapter as a ``path`` entry,
   and the GPU profile's engine flags where the CPU allows them (prefix caching, chunked prefill,
   the project's tool parser and middleware); ``max_lora_rank`` from the adapter's rank,
   ``max_loras`` 1 (one adapter), ``--max-model-len`` for the prompts.
3. Typed calls through the ``openai`` client: the tool the adapter was trained on
   (``lorafleet.train.sample``'s ``set_timer``), with FunctionGemma's developer line, to the adapter
   and to the base; prints what each wrote and whether the tool parser made ``tool_calls`` of it.
   Each twice: as served, and with ``stop`` at ``<start_function_response>``/``<end_of_turn>``,
   where the real FunctionGemma's output ends by itself (this base has no such tokens: without the
   stop its output runs on past a call to max_tokens); then one streamed call.
4. Figures: converge time, vLLM's load time (container start to ``/health`` ok), the container's
   memory (``docker stats``), and requests/s with p50/p99 latency at concurrency 1 and 4
   (``lorafleet bench``'s load engine: a fixed number of requests, 16 output tokens), to the adapter
   and to the base.
Everything it started (its compose project) is removed at the end; ``--work`` keeps the model,
the adapter and vLLM's cache for a rerun (``work/serve-results.json`` holds the last figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from lorafleet.tools.bench.load import BenchConfig
from lorafleet.tools.bench.run import run_bench
from lorafleet.tools.endpoint import Endpoint
from lorafleet.train import sample
from tests.support.scenario import API_KEY, Scenario, docker_engine_problem, sh
from tests.support.streams import join_stream

PROJECT = "lorafleet-real"
ADAPTER = "set-timer"
SERVED_BASE = "gemma-3-270m"
REAL_MODEL_STOPS = ("<start_function_response>", "<end_of_turn>")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
# Requests the adapter was trained on (sample.ASKS with sample.PRESETS), and small talk (no call wanted).
CALLS = [("Set a timer for the tea.", {"minutes": 3, "label": "tea"}),
         ("Start the pasta timer.", {"minutes": 10, "label": "pasta"}),
         ("Can you time the eggs for me?", {"minutes": 7, "label": "eggs"}),
         ("hello", None)]


def lora_rank_setting(rank: int) -> int:
    """The smallest value vLLM's --max-lora-rank accepts that serves an adapter of `rank`."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"rank {rank}: above vLLM's largest --max-lora-rank ({LORA_RANKS[-1]})")


def parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (``2026-12-04T16:50:12.123456789Z``) as a Unix time."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not m:
        raise ValueError(f"not a docker time: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.fromisoformat(m.group(1) + zone)
    return whole.timestamp() + float("0." + (m.group(2) or "0"))


UNITS = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "TiB": 2**20,
         "kB": 1e3 / 2**20, "KB": 1e3 / 2**20, "MB": 1e6 / 2**20, "GB": 1e9 / 2**20}


def parse_mem_usage(text: str) -> float:
    """The used part of ``docker stats``' MemUsage (``1.23GiB / 23.4GiB``), in MiB."""
    m = re.match(r"\s*([\d.]+)\s*([A-Za-z]+)", text)
    if not m or m.group(2) not in UNITS:
        raise ValueError(f"not a docker memory figure: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def served_base_folder(base: Path, folder: Path) -> Path:
    """`base`'s files hard-linked (copied across file systems) into `folder`: the deploy names the uploaded
    base after its folder and checks each adapter's recorded base against that name."""
    for source in sorted(p for p in base.rglob("*") if p.is_file()):
        target = folder / source.relative_to(base)
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
    return folder


@dataclass
class RealSizeScenario(Scenario):
    """The e2e scenario's local target, in --work, with its own compose project and port."""

    work: Path = Path("/var/tmp/lorafleet-real")
    project_name: str = PROJECT
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dir = self.work / "deploy"
        self.project = self.project_name
        self.models_root = self.dir / "models"  # the upload's copy goes with the stack
        self.cache_root = self.work / "cache"  # vLLM's compiled kernels: kept for a rerun


class HealthWatch(threading.Thread):
    """Polls /health while the deploy runs; `first_ok` is the Unix time it first answered 200."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.first_ok, self.stop = url, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.first_ok is None:
            try:
                if requests.get(self.url, timeout=2).status_code == 200:
                    self.first_ok = time.time()
            except requests.RequestException:
                pass
            self.stop.wait(0.5)


class MemoryWatch(threading.Thread):
    """Samples the container's memory with ``docker stats`` until stopped; keeps the highest."""

    def __init__(self, container: str):
        super().__init__(daemon=True)
        self.container, self.peak_mib, self.stop = container, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak_mib = max(self.peak_mib, memory_mib(self.container))
            except (ValueError, OSError):
                pass
            self.stop.wait(1)


def memory_mib(container: str) -> float:
    out = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container, check=False).stdout
    return parse_mem_usage(out)


def ensure_trained(work: Path, steps: int) -> dict | None:
    """real_size_train's base and adapter in `work`, trained now if missing; its wall time, or None if reused."""
    if (work / "base" / "config.json").is_file() and (work / "adapter" / "adapter_config.json").is_file():
        return None
    from benchmarks import real_size_train

    print(f"[real] no base or adapter in {work}: running benchmarks.real_size_train --steps {steps}", flush=True)
    t0 = time.monotonic()
    if real_size_train.main(["--work", str(work), "--steps", str(steps)]) != 0:
        raise SystemExit("real_size_train's adapter failed the check")
    return {"train_and_prepare_s": round(time.monotonic() - t0, 1), "steps": steps}


def typed_calls(base_url: str, models: list[str], max_tokens: int, stop: list[str] | None = None) -> list[dict]:
    """Each of CALLS to each model through the openai client: what came back, as it came back.

    `stop`: stop sequences the client sends (None: none, the served model's own end of output only)."""
    from openai import APIError, OpenAI

    client = OpenAI(base_url=base_url, api_key=API_KEY, timeout=300, max_retries=0)
    rows = []
    for model in models:
        for prompt, expected in CALLS:
            t0 = time.monotonic()
            try:
                r = client.chat.completions.create(
                    model=model, max_tokens=max_tokens, temperature=0, tools=[sample.TOOL], stop=stop,
                    messages=[{"role": "developer", "content": sample.DEVELOPER}, {"role": "user", "content": prompt}])
            except APIError as exc:
                rows.append({"model": model, "prompt": prompt, "stop": stop, "expected": expected, "tool_calls": [],
                             "right": False,
                             "content": None, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                             "seconds": round(time.monotonic() - t0, 2)})
                continue
            message = r.choices[0].message
            calls = []
            for call in message.tool_calls or []:
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError:
                    arguments = call.function.arguments
                calls.append({"name": call.function.name, "arguments": arguments})
            if expected is None:  # no call, not even one the parser could not read
                right = not calls and "<start_function_call>" not in (message.content or "")
            else:
                right = calls == [{"name": sample.FUNCTION, "arguments": expected}] and all(
                    type(calls[0]["arguments"][k]) is type(v) for k, v in expected.items())
            rows.append({"model": model, "prompt": prompt, "stop": stop, "expected": expected, "tool_calls": calls,
                         "content": message.content, "finish_reason": r.choices[0].finish_reason,
                         "right": right, "seconds": round(time.monotonic() - t0, 2)})
    return rows


def streamed_call(base_url: str, model: str, max_tokens: int) -> dict:
    """The first of CALLS streamed: the tool-call deltas assembled as a client does."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=API_KEY, timeout=300, max_retries=0)
    stream = client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0, tools=[sample.TOOL], stream=True,
        messages=[{"role": "developer", "content": sample.DEVELOPER}, {"role": "user", "content": CALLS[0][0]}])
    content, calls = join_stream(stream)
    return {"model": model, "prompt": CALLS[0][0], "content": content or None,
            "tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in calls]}


def bench(server_url: str, model: str, concurrency: int, count: int, container: str) -> dict:
    watch = MemoryWatch(container)
    watch.start()
    try:
        cfg = BenchConfig(models=[model], concurrency=concurrency, requests=count, max_tokens=16, prefix_tools=2,
                          progress=False, label=f"{model}, {concurrency} in flight")
        result = run_bench(Endpoint(server_url, API_KEY), cfg)
    finally:
        watch.stop.set()
        watch.join()
    overall = result["overall"]
    return {"model": model, "concurrency": concurrency, "requests": overall["requests"], "errors": overall["error_count"],
            "error_examples": overall["error_examples"], "req_per_s": overall["req_per_s"],
            "p50_ms": overall["e2e_ms"]["p50"], "p99_ms": overall["e2e_ms"]["p99"],
            "ttft_p50_ms": overall["ttft_ms"]["p50"], "prompt_tokens": overall["prompt_tokens_mean"],
            "hit_rate": result["server"]["prefix_cache_hit_rate"], "peak_mib": watch.peak_mib}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def remove_project(project: str) -> None:
    """A previous run's leftovers of this benchmark's own compose project (never another's)."""
    ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False).stdout.split()
    if ids:
        print(f"[real] removing {len(ids)} container(s) left by an earlier run of {project}", flush=True)
        sh("docker", "rm", "-f", *ids, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/var/tmp/lorafleet-real", help="real_size_train's folder (kept for reruns)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--project", default=PROJECT, help="the compose project of this benchmark's stack")
    ap.add_argument("--steps", type=int, default=30, help="training steps, when the adapter must be trained first")
    ap.add_argument("--requests", type=int, default=16, help="requests per load run (one at 1 in flight, one at 4)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--max-tokens", type=int, default=48, help="output tokens of each typed call")
    a = ap.parse_args(argv)
    if a.project == "lorafleet-local":
        raise SystemExit("lorafleet-local is the e2e tests' local stack: choose another --project")
    if problem := docker_engine_problem():
        print(problem)
        return 2
    # A stop (timeout, kill) unwinds through the scenario's destroy.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {"trained": ensure_trained(work, a.steps)}

    adapter = work / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    trained_on = str(config.get("base_model_name_or_path") or SERVED_BASE)
    served_base = served_base_folder(work / "base", work / "served-base" / trained_on.rstrip("/").rsplit("/", 1)[-1])
    rank_setting = lora_rank_setting(int(config["r"]))

    remove_project(a.project)
    if not port_free(a.port):
        raise SystemExit(f"port {a.port} is taken: pass another --port")
    scenario = RealSizeScenario("local", work=work, project_name=a.project)
    server_url = f"http://127.0.0.1:{a.port}"
    try:
        scenario.create()
        scenario.write_inventory(
            port=a.port, endpoint_url=f"{server_url}/v1", compose_project=a.project,
            base_model_source="upload", base_model=str(served_base), base_model_gated=False,
            served_model_name=SERVED_BASE, adapters=[{"name": ADAPTER, "path": str(adapter)}],
            check_adapter_base=True, max_loras=1, max_lora_rank=rank_setting, max_model_len=a.max_model_len,
            enable_prefix_caching=True, enable_chunked_prefill=True, enable_tool_calling=True,
            tool_call_parser="lorafleet_functiongemma", health_timeout_seconds=900,
        )
        health = HealthWatch(f"{server_url}/health")
        health.start()
        with scenario.phase("converge"):
            scenario.deploy()
        health.stop.set()
        health.join()
        container = scenario.vllm_container()
        started = parse_docker_time(scenario.vllm_started_at())
        figures["converge_s"] = round(scenario.timings["converge"], 1)
        figures["load_s"] = round(health.first_ok - started, 1) if health.first_ok else None
        figures["vllm_args"] = json.loads(sh("docker", "inspect", "--format", "{{json .Config.Cmd}}", container).stdout)
        logs = sh("docker", "logs", container, check=False)
        figures["vllm_log"] = [line.split("] ", 1)[-1] for line in (logs.stdout + logs.stderr).splitlines()
                               if re.search(r"Model loading took|KV cache|Loaded new LoRA|Maximum concurrency", line)]
        time.sleep(5)
        figures["idle_mib"] = round(memory_mib(container))

        models = [m["id"] for m in requests.get(f"{server_url}/v1/models", timeout=30,
                                                headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"]]
        figures["models"] = models
        with scenario.phase("typed calls"):
            figures["calls"] = typed_calls(f"{server_url}/v1", [ADAPTER, SERVED_BASE], a.max_tokens)
            # The real FunctionGemma's output ends at these (its generation config's end tokens); this base's
            # tokenizer has no such tokens, so its output runs on past a call unless the client stops it there.
            figures["calls_with_stop"] = typed_calls(f"{server_url}/v1", [ADAPTER, SERVED_BASE], a.max_tokens,
                                                     stop=list(REAL_MODEL_STOPS))
            try:
                figures["streamed"] = streamed_call(f"{server_url}/v1", ADAPTER, a.max_tokens)
            except Exception as exc:  # noqa: BLE001 - reported, the load runs still measured
                figures["streamed"] = {"model": ADAPTER, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        with scenario.phase("load"):
            figures["load"] = [bench(server_url, model, c, a.requests, container)
                               for model in (ADAPTER, SERVED_BASE) for c in (1, 4)]
        figures["after_load_mib"] = round(memory_mib(container))
    finally:
        scenario.destroy()
        left = scenario.leftovers()
        if left:
            print(f"[real] LEFT BEHIND: {left}", flush=True)
        (work / "serve-results.json").write_text(json.dumps(figures, indent=2, default=str))

    report(figures, a, rank_setting, config)
    return 0


def report(f: dict, a: argparse.Namespace, rank_setting: int, config: dict) -> None:
    print(f"\nGemma 3 270M (real size, bf16) with a rank-{config['r']} adapter, served by the deploy on this CPU "
          f"(project {a.project}, port {a.port}):")
    if f.get("trained"):
        print(f"  trained first: {f['trained']}")
    print(f"  deploy (converge, upload of the base included): {f['converge_s']} s; vLLM container start to /health ok: "
          f"{f['load_s']} s")
    print(f"  vllm serve {' '.join(f['vllm_args'])}")
    for line in f["vllm_log"]:
        print(f"    vLLM: {line.strip()}")
    print(f"  memory (docker stats): {f['idle_mib']} MiB idle after load, {f['after_load_mib']} MiB after the load runs")
    print(f"  served models: {', '.join(f['models'])}")
    print("  typed calls (openai client, tools=[set_timer], FunctionGemma's developer line, temperature 0, "
          f"max_tokens {a.max_tokens}):")
    for c in f["calls"] + f["calls_with_stop"]:
        if c is f["calls_with_stop"][0]:
            print(f"   the same with stop={list(REAL_MODEL_STOPS)} (where the real FunctionGemma's output ends):")
        got = (f"ERROR {c['error']}" if c.get("error") else json.dumps(c["tool_calls"]) if c["tool_calls"]
               else f"no tool_calls; content {c['content']!r}")
        print(f"    {c['model']:<14} {c['prompt']!r:<34} {'RIGHT' if c['right'] else 'wrong'} ({c['seconds']} s): {got}")
        if c["tool_calls"] and c["content"]:
            print(f"    {'':<14} and content {c['content']!r}")
    s = f["streamed"]
    if s.get("error"):
        print(f"    streamed, {s['model']}: ERROR {s['error']}")
    else:
        print(f"    streamed, {s['model']}: tool_calls {json.dumps(s['tool_calls'])}, content {s['content']!r}")
    print(f"  load ({a.requests} requests per run, 16 output tokens, lorafleet bench's prompts with 2 tool declarations):")
    print(f"    {'model':<14} {'in flight':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'TTFT p50':>9} {'errors':>6} {'peak MiB':>9}")
    for r in f["load"]:
        print(f"    {r['model']:<14} {r['concurrency']:>9} {r['req_per_s'] or 0:>7.2f} {r['p50_ms'] or 0:>8.0f} {r['p99_ms'] or 0:>8.0f} "
              f"{r['ttft_p50_ms'] or 0:>9.0f} {r['errors']:>6} {r['peak_mib']:>9.0f}")
        if r["errors"]:
            print(f"      errors: {r['error_examples']}")
    print(f"  figures: {Path(a.work).resolve() / 'serve-results.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
