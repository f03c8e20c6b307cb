"""The shipped Prometheus scrape configuration and Grafana dashboard (monitoring/) name only metrics that exist.

Ours come from the middleware's own collectors (files/serving/lorafleet_metrics.py, through the real
prometheus_client); vLLM's from its 0.32 source (vllm/v1/metrics/loggers.py, as status.py reads them).
The e2e suite runs every query against a real Prometheus scraping the local stack.
"""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import CollectorRegistry

from lorafleet.deploy.layout import PROJECT_ROOT, SERVE_FILES
from tests.support.modules import load_file

MONITORING = PROJECT_ROOT / "monitoring"
# vLLM 0.32's names the dashboard may use (counters exposed with _total), read in vllm/v1/metrics/loggers.py.
VLLM_NAMES = {"vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
              "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:lora_requests_info",
              "vllm:request_success_total"}
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "time", "by",
                "without", "on", "ignoring", "unless", "and", "or", "group_left", "group_right", "offset", "bool",
                "topk", "bottomk", "clamp_min", "label_replace", "vector", "abs"}


def our_names() -> set[str]:
    module = load_file("lorafleet_metrics_names", SERVE_FILES["lorafleet_metrics.py"])
    registry = CollectorRegistry()
    module.Metrics(registry)
    names = set()
    for collector in registry._collector_to_names:
        for family in collector.describe() or collector.collect():
            kind = family.type
            base = family.name
            names |= {base + s for s in {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                                         "gauge": ("",)}[kind]}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left without strings, label sets, ranges and groupings."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
    return {t for t in tokens if t not in PROMQL_WORDS}


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_every_dashboard_query_reads_only_metrics_that_exist():
    known = our_names() | VLLM_NAMES
    assert "lorafleet_requests_total" in known and "lorafleet_request_duration_seconds_bucket" in known
    for expr in queries():
        names = metric_names(expr)
        assert names and names <= known, f"{expr}: unknown {sorted(names - known)}"


def test_the_dashboard_shows_what_the_operator_asks_per_adapter():
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for what in ("requests/s per adapter", "errors", "latency", "time to first token", "kv-cache", "prefix-cache",
                 "adapters loaded", "never used"):
        assert what in titles, what
    per_model = [e for e in queries() if "lorafleet_" in e and "by (model" in e]
    assert len(per_model) >= 5, "grouped by the one `model` label"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard()["panels"])


def test_the_scrape_configuration_reads_and_holds_no_key():
    text = (MONITORING / "prometheus.yml").read_text()
    config = yaml.safe_load(text)
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]
    assert "credentials:" not in text and "Bearer sk-" not in text, "a key goes in credentials_file, never here"
