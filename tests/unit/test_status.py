"""Prometheus parsing (prometheus_client's parser) and the status summary.

On vLLM 0.32-shaped text, and against the fake server.
"""

from __future__ import annotations

import json
import math

import pytest

from lorafleet.tools.endpoint import resolve_endpoint
from lorafleet.tools.status import (
    collect_status,
    format_duration,
    lora_activity,
    parse_prometheus,
    render_status,
    status_exit_code,
    summarize_metrics,
)
from tests.support.fake_server import FakeConfig, running_fake_server

# Shaped like a vLLM 0.32 /metrics page (names and labels from its source).
VLLM_TEXT = r"""
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="fg"} 3.0
vllm:num_requests_waiting{engine="0",model_name="fg"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="fg"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="fg"} 1000.0
vllm:prefix_cache_queries_created{engine="0",model_name="fg"} 1.7e+09
vllm:prefix_cache_hits_total{engine="0",model_name="fg"} 750.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="fg"} 40.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="fg"} 2.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="fg"} 0.0
vllm:lora_requests_info{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""} 1.7000001e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql,weather",waiting_lora_adapters="cal"} 1.7000005e+09
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="fg"} 42.0
weird{a="quote \" and \\ back",b="x,y"} NaN
not a metric line
"""


def test_parse_labels_values_and_escapes() -> None:
    samples = parse_prometheus(VLLM_TEXT)
    by_name = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    assert by_name["process_start_time_seconds"][0].value == 1.7e9
    bucket = by_name["vllm:e2e_request_latency_seconds_bucket"][0]
    assert bucket.labels == {"engine": "0", "le": "+Inf", "model_name": "fg"}
    weird = by_name["weird"][0]
    assert weird.labels == {"a": 'quote " and \\ back', "b": "x,y"}
    assert math.isnan(weird.value)
    assert "not" not in by_name


def test_summary_of_vllm_metrics() -> None:
    summary = summarize_metrics(parse_prometheus(VLLM_TEXT), now=1.7e9 + 3600)
    assert summary["uptime_s"] == pytest.approx(3600)
    assert summary["running"] == 3 and summary["waiting"] == 2
    assert summary["kv_cache_usage"] == 0.25
    assert summary["prefix_cache_hit_rate"] == pytest.approx(0.75)
    assert summary["requests_finished"] == 42
    assert summary["requests_finished_by_reason"] == {"abort": 0, "length": 2, "stop": 40}
    assert summary["requests_by_model_label"] == {"fg": 42}


def test_lora_activity_takes_newest_label_set() -> None:
    activity = lora_activity(parse_prometheus(VLLM_TEXT))
    assert activity == {"max_loras": 4, "running": ["sql", "weather"], "waiting": ["cal"],
                        "active": ["sql", "weather", "cal"]}


def test_missing_metrics_are_none_not_zero() -> None:
    summary = summarize_metrics([])
    for key in ("uptime_s", "running", "waiting", "kv_cache_usage", "prefix_cache_hit_rate", "requests_finished"):
        assert summary[key] is None, key
    assert summary["lora"] is None


def test_a_page_without_vllm_metrics_reads_none_not_zero() -> None:
    summary = summarize_metrics(parse_prometheus("# TYPE other counter\nother_total 5\nprocess_cpu_seconds_total 1\n"))
    for key in ("uptime_s", "running", "waiting", "kv_cache_usage", "prefix_cache_hit_rate", "requests_finished"):
        assert summary[key] is None, key
    assert summary["lora"] is None


def test_counters_read_with_or_without_total() -> None:
    text = ('vllm:prefix_cache_queries{model_name="m"} 8\nvllm:prefix_cache_hits{model_name="m"} 2\n'
            'vllm:request_success{finished_reason="stop",model_name="m"} 3\n')
    summary = summarize_metrics(parse_prometheus(text))
    assert summary["prefix_cache_hit_rate"] == 0.25
    assert summary["requests_finished"] == 3 and summary["requests_by_model_label"] == {"m": 3}


def test_old_metric_names_are_fallbacks() -> None:
    text = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:gpu_prefix_cache_queries_total 10\n' \
           "vllm:gpu_prefix_cache_hits_total 5\n"
    summary = summarize_metrics(parse_prometheus(text))
    assert summary["kv_cache_usage"] == 0.5
    assert summary["prefix_cache_hit_rate"] == 0.5


@pytest.mark.parametrize(("secs", "text"), [(None, "n/a"), (5, "5s"), (65, "1m 05s"), (3725, "1h 02m 05s"),
                                            (90000, "1d 01h 00m")])
def test_format_duration(secs: float | None, text: str) -> None:
    assert format_duration(secs) == text


def test_status_against_fake_server_with_key() -> None:
    config = FakeConfig(adapters=["weather", "sql"], api_key="key-ZQX-1")
    with running_fake_server(config) as url:
        good = collect_status(resolve_endpoint(url=url, api_key="key-ZQX-1", env={}))
        bad = collect_status(resolve_endpoint(url=url, api_key="bad-ZQX-2", env={}))
    assert good["reachable"] and good["version"] == "0.32.0+fake"
    assert good["base_model"] == "fake-functiongemma"
    assert good["adapters"] == ["weather", "sql"]
    assert good["uptime_s"] is not None and good["uptime_s"] >= 0
    assert status_exit_code(good) == 0
    table = render_status(good)
    assert "weather" in table and "sql" in table and "n/a" in table
    json.dumps(good)  # --json must be serialisable
    # A wrong key: still reachable (metrics and version are open) but no model list.
    assert bad["reachable"] and bad["base_model"] is None
    assert "401" in bad["errors"]["models"]
    assert status_exit_code(bad) == 1
    assert "ZQX" not in render_status(bad) and "ZQX" not in json.dumps(bad)


def test_status_unreachable() -> None:
    st = collect_status(resolve_endpoint(url="http://127.0.0.1:9", env={}), timeout=2)
    assert not st["reachable"]
    assert status_exit_code(st) == 1
    assert "NOT REACHABLE" in render_status(st)
