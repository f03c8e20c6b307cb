"""``lorafleet status`` per adapter: rows from the middleware's /metrics text, one box and a fleet's sum.

The text is what the real middleware's collectors expose (prometheus_client's generate_latest), so
the names and labels status reads are the ones the server writes.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lorafleet.deploy.layout import SERVE_FILES
from lorafleet.tools import adapter_stats
from lorafleet.tools.fleet import fleet_models, render_fleet_status
from lorafleet.tools.status import RAW, add_adapter_rows, parse_prometheus, public, render_status, repeat
from tests.support.modules import load_file

NOW = 1.8e9
BASE = "functiongemma-demo"


@pytest.fixture(scope="module")
def mod():
    return load_file("lorafleet_metrics_for_status", SERVE_FILES["lorafleet_metrics.py"])


def page(mod, requests: dict, latencies: dict = {}, ttfts: dict = {}, declared=(), last: dict = {}) -> str:
    """A /metrics page from the middleware's own collectors."""
    registry = CollectorRegistry()
    m = mod.Metrics(registry)
    for (model, outcome), n in requests.items():
        m.requests.labels(model, outcome).inc(n)
    for (model, stream), values in latencies.items():
        for v in values:
            m.latency.labels(model, stream).observe(v)
    for model, values in ttfts.items():
        for v in values:
            m.ttft.labels(model).observe(v)
    for model in declared:
        m.declared.labels(model).set(1)
        m.requests.labels(model, "2xx")
    for model, stamp in last.items():
        m.last_request.labels(model).set(stamp)
        m.prompt_tokens.labels(model).inc(10)
        m.completion_tokens.labels(model).inc(4)
    return generate_latest(registry).decode()


def rows_of(text: str, adapters=("weather", "sql", "email")) -> dict:
    record = {"base_model": BASE, "adapters": list(adapters)}
    add_adapter_rows(record, adapter_stats.collect(parse_prometheus(text)), now=NOW)
    return record


@pytest.mark.parametrize("buckets,q,expected", [
    ({0.1: 0, 0.5: 10, float("inf"): 10}, 0.5, 0.3),
    ({0.1: 5, 0.5: 10, float("inf"): 10}, 0.5, 0.1),
    ({0.1: 0, 0.5: 0, float("inf"): 4}, 0.99, 0.5),
    ({0.1: 0, float("inf"): 0}, 0.5, None),
    ({}, 0.5, None),
])
def test_quantiles_as_prometheus_computes_them(buckets, q, expected):
    got = adapter_stats.histogram_quantile(q, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def test_one_row_per_served_name_with_its_figures(mod):
    text = page(mod, {("weather", "2xx"): 8, ("weather", "4xx"): 1, ("weather", "cancelled"): 1, (BASE, "2xx"): 2,
                      ("unknown_model", "4xx"): 3, ("unauthorized", "4xx"): 0},
                latencies={("weather", "false"): [0.3] * 4, ("weather", "true"): [0.3] * 4},
                ttfts={"weather": [0.04] * 4}, declared=("weather", "sql"), last={"weather": NOW - 65})
    record = rows_of(text)
    rows = {r["model"]: r for r in record["models"]}
    assert [r["model"] for r in record["models"]] == [BASE, "email", "sql", "weather", "unknown_model"]
    w = rows["weather"]
    assert (w["requests"], w["errors"], w["cancelled"], w["in_manifest"]) == (10, 1, 1, True)
    assert 0.25 <= w["p50_s"] <= 0.5 and 0.25 <= w["p99_s"] <= 0.5 and 0.025 <= w["ttft_p50_s"] <= 0.05
    assert (w["prompt_tokens"], w["completion_tokens"], w["idle_s"]) == (10, 4, 65)
    assert rows["sql"]["never_used"] and rows["sql"]["in_manifest"] is True
    assert rows["email"]["in_manifest"] is None, "served, but the server says nothing of a manifest (no gauge)"
    assert record["never_used"] == ["email", "sql"]
    assert record["requests_by_adapter"] == {"weather": 10, "sql": 0, "email": 0}
    assert "unauthorized" not in rows, "a fixed label shows only once it counted a request"
    table = render_status({**record, "url": "http://box:8000", "reachable": True, "errors": {}, "version": "0.32.0",
                           "uptime_s": 60, "started_at": NOW - 60, "running": 0, "waiting": 0, "kv_cache_usage": 0,
                           "prefix_cache_hit_rate": None, "prefix_cache_queries": None, "requests_finished": 12,
                           "lora": None})
    weather = next(line for line in table.splitlines() if line.startswith("weather"))
    assert "yes" in weather and "1m 05s ago" in weather and "10/4" in weather
    assert next(line for line in table.splitlines() if line.startswith("sql")).split()[-1] == "NEVER"
    assert "never used since the server started: email, sql" in table
    json.dumps(public(record))
    assert RAW not in public(record)


def test_a_server_without_the_middleware_reads_n_a_not_zero():
    record = rows_of("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n")
    assert record[RAW] is None and record["never_used"] == []
    assert all(r["requests"] is None for r in record["models"])
    table = render_status({**record, "url": "u", "reachable": True, "errors": {}, "version": None, "uptime_s": None,
                           "started_at": None, "running": None, "waiting": None, "kv_cache_usage": None,
                           "prefix_cache_hit_rate": None, "prefix_cache_queries": None, "requests_finished": None,
                           "lora": None})
    assert "per-adapter figures: n/a" in table


def test_the_fleet_sums_the_boxes_and_keeps_each_box_s_rows(mod):
    one = rows_of(page(mod, {("weather", "2xx"): 3}, latencies={("weather", "false"): [0.2] * 3},
                       declared=("weather", "sql"), last={"weather": NOW - 100}), adapters=("weather", "sql"))
    two = rows_of(page(mod, {("weather", "5xx"): 2, ("email", "2xx"): 1}, latencies={("weather", "false"): [2.0] * 2},
                       declared=("weather", "email"), last={"weather": NOW - 5}), adapters=("weather", "email"))
    boxes = [{**one, "box": "a"}, {**two, "box": "b"}]
    models, never = fleet_models(boxes, now=NOW)
    rows = {r["model"]: r for r in models}
    assert (rows["weather"]["requests"], rows["weather"]["errors"], rows["weather"]["idle_s"]) == (5, 2, 5)
    assert rows["weather"]["p99_s"] > 1, "the buckets add: the slow box shows in the fleet's p99"
    assert rows["email"]["requests"] == 1 and never == ["sql"]
    fs = {"router": {"host": "r", "url": "http://r:4000", "health": "up", "models": [], "declared_models": [],
                     "missing": [], "errors": {}},
          "boxes": [{**b, "health": "up", "version": "0.32.0", "missing": [], "adapters_served_of_declared": 2,
                     "declared_adapters": b["adapters"], "running": 0, "waiting": 0, "kv_cache_usage": 0,
                     "reachable": True, "errors": {}} for b in boxes],
          "models": models, "never_used": never}
    text = render_fleet_status(fs)
    assert "per model, all boxes:" in text and "per model on a:" in text and "per model on b:" in text
    assert "never used on any box since it started: sql" in text


def test_watch_refreshes_until_ctrl_c(capsys):
    shown, naps = [], []

    def show():
        shown.append(1)
        if len(shown) == 3:
            raise KeyboardInterrupt
        print("table")
        return 0

    assert repeat(show, 2.0, clear=True, sleep=naps.append) == 0
    assert len(shown) == 3 and naps == [2.0, 2.0]
    assert capsys.readouterr().out.count("every 2 s") == 2
    assert repeat(lambda: 7, None, clear=True) == 7, "no --watch: once"
