"""Per-adapter metrics on the real CPU stack: /metrics, `lorafleet status --json` and a real Prometheus.

Known numbers of requests go to three adapters and the base (some streamed, some refused with 400),
to a model the server does not serve and with a wrong key; the middleware (files/serving/lorafleet_metrics.py)
must count exactly those, per served name, TTFT only for streams, and no label value a client chose.
The shared stack served other modules before: counts are compared as differences. Then an adapter
reload keeps the counts and a restart of the server resets them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from lorafleet.tools import adapter_stats
from lorafleet.tools.status import parse_prometheus
from tests.support.scenario import API_KEY, sh

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
FIXED = {"unknown_model", "unauthorized"}
CALLED = ("weather", "sql", "email")


def headers(key: str = API_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def counts(stack) -> dict:
    """{(model, outcome): n} and {model: ttft count} and every model label of ours, from /metrics."""
    text = requests.get(stack.endpoint.removesuffix("/v1") + "/metrics", timeout=30).text
    samples = [s for s in parse_prometheus(text) if s.name.startswith("lorafleet_")]
    requests_ = {(s.labels["model"], s.labels["outcome"]): s.value for s in samples if s.name == "lorafleet_requests_total"}
    ttft = {s.labels["model"]: s.value for s in samples if s.name == "lorafleet_time_to_first_token_seconds_count"}
    calls = {s.labels["model"]: s.value for s in samples if s.name == "lorafleet_tool_calls_total"}
    tokens = {s.labels["model"]: s.value for s in samples if s.name == "lorafleet_completion_tokens_total"}
    labels = {s.labels["model"] for s in samples if "model" in s.labels}
    return {"requests": requests_, "ttft": ttft, "calls": calls, "tokens": tokens, "labels": labels,
            "raw": adapter_stats.collect(parse_prometheus(text))}


def chat(stack, model, stream=False, key=API_KEY, tools=None, **extra) -> tuple[int, int]:
    """One chat request: (status, tool calls the client received)."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
            "max_tokens": 8, "temperature": 0, "stream": stream, **extra}
    if tools:
        body.update(tools=tools, max_tokens=96)
    answer = requests.post(f"{stack.endpoint}/chat/completions", json=body, headers=headers(key), timeout=300,
                           stream=stream)
    if not stream or answer.status_code != 200:
        calls = len(((answer.json().get("choices") or [{}])[0].get("message") or {}).get("tool_calls") or []) \
            if answer.status_code == 200 else 0
        return answer.status_code, calls
    calls, usage = 0, False
    for line in answer.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            chunk = json.loads(line[6:])
            usage |= bool(chunk.get("usage"))
            for choice in chunk.get("choices") or ():
                calls += sum(1 for c in (choice.get("delta") or {}).get("tool_calls") or () if c.get("id"))
    asked = bool((extra.get("stream_options") or {}).get("include_usage"))
    assert usage == asked, "the client sees usage exactly when it asked for it"
    return 200, calls


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.fixture(scope="module")
def prometheus(ssh_stack, tmp_path_factory):
    """A real Prometheus (Debian's package) scraping the stack every second, started before the requests."""
    binary = shutil.which("prometheus")
    if binary is None:
        assert not os.environ.get("CI"), "prometheus is not installed: .ci/setup.sh installs Debian's package"
        yield None  # its test skips; the others need no Prometheus
        return
    folder = tmp_path_factory.mktemp("prometheus")
    target = ssh_stack.endpoint.removeprefix("http://").removesuffix("/v1")
    (folder / "prometheus.yml").write_text(json.dumps({
        # vLLM's API server runs at nice 10 on the CPU profile: on a busy 2-core machine /metrics can take seconds.
        "global": {"scrape_interval": "3s", "scrape_timeout": "3s", "evaluation_interval": "3s"},
        "scrape_configs": [{"job_name": "lorafleet", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target], "labels": {"box": "e2e"}}]}]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        answering(url + "/-/ready", seconds=60)
        # Its scrape manager starts a few seconds after it is ready: the counts before the requests must be scraped,
        # or every counter first seen after them has no increase for rate() to find.
        scraped = until(lambda: bool(promql(url, 'count_over_time(up{job="lorafleet"}[5m]) >= 2')), True, seconds=120)
        assert scraped, "Prometheus did not scrape the stack twice in 2 min"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sent(ssh_stack, prometheus):
    """Known requests, and what /metrics said before and after them."""
    demo = json.loads((ssh_stack.models_root / "lorafleet-demo" / "demo.json").read_text())
    tool = next(a["tool"] for a in demo["adapters"] if a["name"] == "weather")
    base = ssh_stack.data["served_model_name"]
    before = counts(ssh_stack)
    calls = {"weather": 0}
    for _ in range(3):
        status, n = chat(ssh_stack, "weather", tools=[tool])
        assert status == 200
        calls["weather"] += n
    assert chat(ssh_stack, "weather", stream=True)[0] == 200
    assert chat(ssh_stack, "sql", stream=True)[0] == 200
    assert chat(ssh_stack, "sql", stream=True, stream_options={"include_usage": True})[0] == 200
    assert chat(ssh_stack, "sql", max_tokens=-1)[0] == 400
    assert chat(ssh_stack, "email")[0] == 200
    assert chat(ssh_stack, "email", max_tokens=-1)[0] == 400
    assert chat(ssh_stack, "email", max_tokens=-1)[0] == 400
    assert chat(ssh_stack, base)[0] == 200
    assert chat(ssh_stack, base, stream=True)[0] == 200
    assert chat(ssh_stack, "no-such-adapter-e2e")[0] == 404
    assert chat(ssh_stack, "another-made-up-name", stream=True)[0] == 404
    assert chat(ssh_stack, "weather", key="sk-wrong-key")[0] == 401
    return {"before": before, "after": counts(ssh_stack), "calls": calls, "base": base}


def test_metrics_count_exactly_the_requests_sent_per_model(sent, ssh_stack):
    base = sent["base"]
    assert diff(sent["after"]["requests"], sent["before"]["requests"]) == {
        ("weather", "2xx"): 4, ("sql", "2xx"): 2, ("sql", "4xx"): 1, ("email", "2xx"): 1, ("email", "4xx"): 2,
        (base, "2xx"): 2, ("unknown_model", "4xx"): 2, ("unauthorized", "4xx"): 1}
    assert diff(sent["after"]["ttft"], sent["before"]["ttft"]) == {"weather": 1, "sql": 2, base: 1}, "streams only"
    assert diff(sent["after"]["calls"], sent["before"]["calls"]) == ({"weather": sent["calls"]["weather"]}
                                                                      if sent["calls"]["weather"] else {})
    tokens = diff(sent["after"]["tokens"], sent["before"]["tokens"])
    assert set(tokens) == {"weather", "sql", "email", base}, "a stream's tokens count though its client never asked"
    served = {base, *(a["name"] for a in ssh_stack.data["adapters"])}
    assert sent["after"]["labels"] <= served | FIXED, "no label value a client chose"
    ssh_stack.report(f"[e2e ssh] per-adapter requests: {diff(sent['after']['requests'], sent['before']['requests'])}")


def test_status_json_shows_the_same_counts_and_the_adapter_never_called(sent, ssh_stack):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORAFLEET_URL": ssh_stack.endpoint.removesuffix("/v1"),
           "LORAFLEET_API_KEY": API_KEY}
    proc = subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", "status", "--json"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    rows = {r["model"]: r for r in st["models"]}
    now = counts(ssh_stack)["requests"]
    for model in (*CALLED, sent["base"], "unknown_model", "unauthorized"):
        assert rows[model]["requests"] == sum(v for (m, _), v in now.items() if m == model), model
    assert rows["email"]["errors"] >= 2 and rows["weather"]["in_manifest"] is True
    assert rows["sql"]["ttft_p50_s"] is not None and rows["weather"]["p99_s"] is not None
    declared = {a["name"] for a in ssh_stack.data["adapters"]}
    assert set(st["never_used"]) <= declared - set(CALLED)
    assert API_KEY not in proc.stdout


def promql(prometheus: str, expr: str) -> list:
    answer = requests.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def until(read, expected, seconds: float = 90):
    """read() until it returns `expected` (Prometheus scrapes every 3 s) or time is up; its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        got = read()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(1)


def answering(url: str, seconds: float) -> None:
    """Wait until `url` answers 200 (a server starting); the test after it says what went wrong if it never does."""
    def ok() -> bool:
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    until(ok, True, seconds=seconds)


def never_used_query() -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    return next(t["expr"] for p in dashboard["panels"] for t in p["targets"] if "never used" in p["title"])


def test_prometheus_sees_one_series_per_adapter_called_and_every_dashboard_query_has_data(sent, prometheus, ssh_stack):
    if prometheus is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    expected = sorted([*CALLED, sent["base"]])
    rate_query = 'sum by (model) (rate(lorafleet_requests_total{model!~"unknown_model|unauthorized"}[2m])) > 0'
    models = until(lambda: sorted(r["metric"]["model"] for r in promql(prometheus, rate_query)), expected)
    targets = requests.get(prometheus + "/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    assert models == expected, [(t["health"], t["lastError"]) for t in targets]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if t["expr"] != never_used_query()]
    empty = [e for e in exprs if not promql(prometheus, e.replace("$__rate_interval", "2m"))]
    assert empty == [], "dashboard queries without data"
    # Declared adapters no request used: data exactly when some are (other modules may have used them all).
    unused = {r["metric"]["model"] for r in promql(prometheus, never_used_query())}
    raw = counts(ssh_stack)["raw"]
    assert unused == {m for m, row in raw.items() if row["declared"] and not row["requests"]}


def test_metrics_survive_an_adapter_reload(sent, ssh_stack):
    manifest = json.loads((ssh_stack.dir / "stack" / "serve" / "adapters.json").read_text())
    path = next(a["path"] for a in manifest["adapters"] if a["name"] == "weather")
    before = counts(ssh_stack)["requests"]
    api = ssh_stack.endpoint
    assert requests.post(f"{api}/unload_lora_adapter", json={"lora_name": "weather"}, headers=headers(), timeout=120).ok
    try:
        assert chat(ssh_stack, "weather")[0] == 404
    finally:
        answer = requests.post(f"{api}/load_lora_adapter", json={"lora_name": "weather", "lora_path": path},
                               headers=headers(), timeout=300)
        assert answer.ok, answer.text
    assert chat(ssh_stack, "weather")[0] == 200
    assert diff(counts(ssh_stack)["requests"], before) == {("unknown_model", "4xx"): 1, ("weather", "2xx"): 1}


def test_a_restart_resets_the_counts_and_every_declared_adapter_reads_never_used(sent, ssh_stack, prometheus):
    sh("docker", "restart", ssh_stack.vllm_container())
    answering(ssh_stack.endpoint.removesuffix("/v1") + "/health", seconds=600)
    after = counts(ssh_stack)
    assert sum(after["requests"].values()) == 0 and not any(after["ttft"].values())
    declared = {a["name"] for a in ssh_stack.data["adapters"]}
    assert {m for (m, _) in after["requests"]} == declared | {sent["base"]} | FIXED, "each served name shows, at zero"
    if prometheus is not None:
        unused = until(lambda: {r["metric"]["model"] for r in promql(prometheus, never_used_query())}, declared)
        assert unused == declared, "after the restart every declared adapter reads never used"
