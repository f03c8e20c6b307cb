"""The operator's tools (check, status, bench) against the real CPU serving stack of the e2e scenario.

``served_endpoint`` (tests/e2e/conftest.py) gives ``.url`` (the server URL, without
``/v1``), ``.api_key``, ``.base_model`` and ``.adapters`` of the running stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "lorafleet" / "tools" / "check.py"
# vLLM on CPU answers a request in seconds; allow for a queue of them.
TIMEOUT = 900


def _env(endpoint, with_key_in_env: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LORAFLEET_URL", "LORAFLEET_API_KEY", "VLLM_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if with_key_in_env:
        env["LORAFLEET_URL"] = endpoint.url
        if endpoint.api_key:
            env["LORAFLEET_API_KEY"] = endpoint.api_key
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=ROOT)
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    return proc


def _row(output: str, name: str) -> str:
    rows = [line for line in output.splitlines() if line.split(" ", 1)[0] == name]
    assert rows, f"{name} missing from:\n{output}"
    return rows[0]


def test_check_endpoint_every_model_answers(served_endpoint) -> None:
    args = [sys.executable, str(CHECK), "--url", served_endpoint.url]
    if served_endpoint.api_key:
        args += ["--api-key", served_endpoint.api_key]
    standalone = _run(args, _env(served_endpoint, with_key_in_env=False))
    # The same check run in process by the console command, which finds URL and key in the environment.
    command = _run([sys.executable, "-m", "lorafleet.tools.cli", "check"], _env(served_endpoint, with_key_in_env=True))
    for proc in (standalone, command):
        assert proc.returncode == 0
        for name in [served_endpoint.base_model, *served_endpoint.adapters]:
            assert " ok " in _row(proc.stdout, name)
        if served_endpoint.api_key:
            assert served_endpoint.api_key not in proc.stdout + proc.stderr


def test_status_lists_every_adapter(served_endpoint) -> None:
    env = _env(served_endpoint, with_key_in_env=True)
    proc = _run([sys.executable, "-m", "lorafleet.tools.cli", "status"], env)
    assert proc.returncode == 0
    assert "NOT REACHABLE" not in proc.stdout
    for name in served_endpoint.adapters:
        _row(proc.stdout, name)

    proc = _run([sys.executable, "-m", "lorafleet.tools.cli", "status", "--json"], env)
    assert proc.returncode == 0
    st = json.loads(proc.stdout)
    assert st["reachable"] is True
    assert st["base_model"] == served_endpoint.base_model
    assert sorted(st["adapters"]) == sorted(served_endpoint.adapters)
    assert st["version"]  # /version answers
    # vLLM 0.32's metric names: these are what the table shows.
    assert st["running"] is not None and st["kv_cache_usage"] is not None
    assert st["prefix_cache_queries"] is not None
    if served_endpoint.api_key:
        assert served_endpoint.api_key not in proc.stdout


def test_short_bench_writes_results_and_chart(served_endpoint, tmp_path: Path) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    # A short shared prefix: the CPU demo target serves a 1024-token context.
    proc = _run([sys.executable, "-m", "lorafleet.tools.cli", "bench", "--models", "all", "--requests", "20",
                 "--concurrency", "8", "--max-tokens", "16", "--prefix-tools", "2", "--no-progress",
                 "--out", str(out), "--chart", str(chart)], _env(served_endpoint, with_key_in_env=True))
    assert proc.returncode == 0
    for name in served_endpoint.adapters:
        _row(proc.stdout, name)
    result = json.loads(out.read_text())
    assert result["overall"]["requests"] == 20 and result["overall"]["ok"] == 20
    assert set(served_endpoint.adapters) <= set(result["per_model"])
    assert result["overall"]["ttft_ms"]["p50"] is not None
    assert chart.stat().st_size > 0 and chart.read_bytes()[:4] == b"\x89PNG"


def test_bench_with_its_defaults_fits_the_local_targets_context(served_endpoint, tmp_path: Path) -> None:
    # No --prefix-tools: twelve declarations are a little over the CPU demo target's 1024 tokens with room for
    # --max-tokens; the bench reads max_model_len from /v1/models, counts with /tokenize and keeps what fits.
    out = tmp_path / "defaults.json"
    proc = _run([sys.executable, "-m", "lorafleet.tools.cli", "bench", "--requests", "4", "--concurrency", "2",
                 "--no-progress", "--out", str(out)], _env(served_endpoint, with_key_in_env=True))
    assert proc.returncode == 0
    result = json.loads(out.read_text())
    fit = result["prompt_fit"]
    assert fit["max_model_len"] == 1024 and fit["prompt_tokens"] + fit["max_tokens"] <= 1024
    assert result["overall"]["ok"] == 4
    if fit["changed"]:
        assert f"lowered to {fit['prefix_tools']}" in proc.stdout
    assert max(s["prompt_tokens"] for s in result["samples"]) <= fit["prompt_tokens"], "the count is vLLM's own"
