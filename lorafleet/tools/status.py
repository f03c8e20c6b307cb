"""``lorafleet status``: what the serving stack is doing right now, from its own endpoints.

Sources, all read-only: ``/version`` and ``/metrics`` (open even with ``--api-key``)
and ``/v1/models`` (needs the key). Metric names are those of vLLM 0.32's V1
engine (``vllm/v1/metrics/loggers.py``); every one is optional, and a metric the
server does not expose is shown as ``n/a``, never as 0.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lorafleet.tools import adapter_stats
from lorafleet.tools.endpoint import Endpoint

NA = "n/a"

# vLLM 0.32 names, checked in its source and on a running server. Counters are
# exposed with a ``_total`` suffix; lookups accept both spellings. Older names
# (``gpu_*``) are kept as fallbacks for servers from before the V1 renames.
RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_QUERIES = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
PREFIX_HITS = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")
REQUEST_SUCCESS = ("vllm:request_success",)
LORA_INFO = ("vllm:lora_requests_info",)
PROCESS_START = ("process_start_time_seconds",)
RAW = "_adapter_metrics"  # the key of the raw per-model figures in a status record (not printed)


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus text page (format 0.0.4), read by prometheus_client's parser.

    Line by line, so that one line the parser refuses costs only that line, not the page.
    """
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            for family in text_string_to_metric_families(line):
                samples.extend(family.samples)
        except ValueError:
            continue
    return samples


def find_samples(samples: Iterable[Sample], names: Sequence[str]) -> list[Sample]:
    """Samples of the first of ``names`` present (each also tried with ``_total``)."""
    samples = list(samples)
    for name in names:
        for candidate in (name, name + "_total"):
            found = [s for s in samples if s.name == candidate]
            if found:
                return found
    return []


def metric_sum(samples: Iterable[Sample], names: Sequence[str]) -> float | None:
    """Sum of all series of the first metric found among ``names``; None if none is exposed."""
    found = find_samples(samples, names)
    if not found:
        return None
    return sum(s.value for s in found if not math.isnan(s.value))


def _split_names(text: str) -> list[str]:
    return [n for n in (part.strip() for part in text.split(",")) if n]


def lora_activity(samples: Iterable[Sample]) -> dict[str, Any] | None:
    """Adapters with requests in flight, from ``vllm:lora_requests_info``.

    The gauge is set to the current time under labels that list the adapters,
    and old label sets are not removed, so the newest value is the current state.
    vLLM 0.32 puts every adapter with a request in flight into both lists (the
    per-adapter counts, 0 included, are dropped when the names are joined), so
    only their union, ``active``, means something.
    """
    found = find_samples(samples, LORA_INFO)
    if not found:
        return None
    latest = max(found, key=lambda s: s.value)
    max_lora = latest.labels.get("max_lora")
    running = _split_names(latest.labels.get("running_lora_adapters", ""))
    waiting = _split_names(latest.labels.get("waiting_lora_adapters", ""))
    return {
        "max_loras": int(max_lora) if max_lora and max_lora.isdigit() else None,
        "running": running,
        "waiting": waiting,
        "active": list(dict.fromkeys(running + waiting)),
    }


def summarize_metrics(
    samples: Sequence[Sample], models: Sequence[str] = (), now: float | None = None
) -> dict[str, Any]:
    """Reduce parsed ``/metrics`` samples to the figures ``status`` shows (None = not exposed)."""
    now = time.time() if now is None else now
    start = metric_sum(samples, PROCESS_START)
    queries = metric_sum(samples, PREFIX_QUERIES)
    hits = metric_sum(samples, PREFIX_HITS)
    hit_rate = hits / queries if queries and hits is not None else None

    success = find_samples(samples, REQUEST_SUCCESS)
    by_model: dict[str, float] = {}
    by_reason: dict[str, float] = {}
    for s in success:
        model = s.labels.get("model_name", "")
        by_model[model] = by_model.get(model, 0.0) + s.value
        reason = s.labels.get("finished_reason", "")
        by_reason[reason] = by_reason.get(reason, 0.0) + s.value

    return {
        "started_at": start,
        # The server's clock and ours can differ by a hair (a just-started fake server reads as negative).
        "uptime_s": max(0.0, now - start) if start else None,
        "running": metric_sum(samples, RUNNING),
        "waiting": metric_sum(samples, WAITING),
        "kv_cache_usage": metric_sum(samples, KV_USAGE),
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hit_rate,
        "requests_finished": sum(by_model.values()) if success else None,
        "requests_finished_by_reason": {k: int(v) for k, v in sorted(by_reason.items())},
        # vLLM 0.32 labels request counters with the served base name only, so
        # adapters have no count of their own; keep whatever names appear.
        "requests_by_model_label": {k: int(v) for k, v in sorted(by_model.items())},
        "lora": lora_activity(samples),
    }


def split_models(models: Sequence[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(base model, adapters) from ``/v1/models`` data: adapters have a ``parent``."""
    base = next((m["id"] for m in models if not m.get("parent")), None)
    adapters = [m["id"] for m in models if m.get("parent")]
    return base, adapters


@dataclass
class Fetched:
    """Result of one GET: parsed body or an error text."""

    ok: bool
    body: Any = None
    error: str | None = None
    status: int | None = None


def fetch(session: Any, url: str, headers: dict[str, str], timeout: float, as_json: bool) -> Fetched:
    """One GET: the body (JSON or text) or a short error; never raises for network or HTTP errors."""
    import requests

    try:
        resp = session.get(url, headers=headers, timeout=timeout)
    except requests.ConnectionError as exc:
        return Fetched(False, error=f"cannot connect: {type(exc).__name__}")
    except requests.Timeout:
        return Fetched(False, error=f"no answer within {timeout:g} s")
    except requests.RequestException as exc:
        return Fetched(False, error=str(exc))
    if resp.status_code == 401:
        return Fetched(
            False,
            status=401,
            error="401 unauthorized: the API key is missing or wrong "
            "(pass --api-key, set LORAFLEET_API_KEY, or check .state/api-key)",
        )
    if resp.status_code != 200:
        return Fetched(False, status=resp.status_code, error=f"HTTP {resp.status_code}")
    if not as_json:
        return Fetched(True, resp.text, status=200)
    try:
        return Fetched(True, resp.json(), status=200)
    except ValueError:
        return Fetched(False, status=200, error="answer is not JSON")


def collect_status(endpoint: Endpoint, timeout: float = 10.0, session: Any = None) -> dict[str, Any]:
    """Query ``/version``, ``/v1/models`` and ``/metrics`` and return one status record."""
    import requests

    session = session or requests.Session()
    server = endpoint.server_url
    # "url" is the server URL: the key of the --json record since its first version.
    status: dict[str, Any] = {"url": server, "reachable": False, "errors": {}}

    version = fetch(session, server + "/version", {}, timeout, as_json=True)
    models = fetch(session, endpoint.endpoint_url + "/models", endpoint.headers(), timeout, as_json=True)
    metrics = fetch(session, server + "/metrics", {}, timeout, as_json=False)

    status["reachable"] = any(f.status is not None for f in (version, models, metrics))
    if not status["reachable"]:
        status["errors"]["connect"] = version.error
    status["version"] = version.body.get("version") if version.ok and isinstance(version.body, dict) else None
    if not version.ok and status["reachable"]:
        status["errors"]["version"] = version.error

    base, adapters = None, []
    if models.ok:
        base, adapters = split_models(models.body.get("data", []))
    elif status["reachable"]:
        status["errors"]["models"] = models.error
    status["base_model"] = base
    status["adapters"] = adapters

    samples = parse_prometheus(metrics.body) if metrics.ok else []
    summary = summarize_metrics(samples)
    if not metrics.ok and status["reachable"]:
        status["errors"]["metrics"] = metrics.error
    status.update(summary)
    raw = adapter_stats.collect(samples)
    add_adapter_rows(status, raw)
    return status


def add_adapter_rows(status: dict[str, Any], raw: dict[str, Any] | None, now: float | None = None) -> None:
    """The per-model rows of ``status`` from the middleware's raw figures (None: the server exposes none)."""
    now = time.time() if now is None else now
    status[RAW] = raw
    rows = adapter_stats.adapter_rows(raw, status.get("base_model"), status.get("adapters") or [], now)
    status["models"] = rows
    status["never_used"] = adapter_stats.never_used(rows)
    by_name = {r["model"]: r["requests"] for r in rows}
    status["requests_by_adapter"] = {a: by_name.get(a) for a in status.get("adapters") or []}


def public(status: dict[str, Any]) -> dict[str, Any]:
    """The record as ``--json`` prints it: without the raw histogram buckets kept for the fleet's sum."""
    return {k: v for k, v in status.items() if k != RAW}


# ---------------------------------------------------------------- rendering


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain-text table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def format_duration(seconds: float | None) -> str:
    """``3d 04h 05m`` / ``2h 03m 10s`` / ``42s``; n/a for None."""
    if seconds is None:
        return NA
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def _num(value: float | None) -> str:
    return NA if value is None else f"{value:g}"


def _pct(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.1f}%"


def render_status(st: dict[str, Any]) -> str:
    """The human table for ``lorafleet status``."""
    if not st["reachable"]:
        return f"{st['url']}: NOT REACHABLE ({st['errors'].get('connect')})"
    started = (
        datetime.fromtimestamp(st["started_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if st.get("started_at")
        else NA
    )
    prefix = _pct(st["prefix_cache_hit_rate"])
    if st["prefix_cache_queries"] is not None:
        prefix += f" ({st['prefix_cache_hits'] or 0:,.0f} of {st['prefix_cache_queries']:,.0f} prompt tokens)"
    lora = st.get("lora")
    rows = [
        ("server", st["url"]),
        ("reachable", "yes"),
        ("vLLM version", st["version"] or NA),
        ("uptime", f"{format_duration(st['uptime_s'])} (since {started})" if st.get("started_at") else NA),
        ("base model", st["base_model"] or NA),
        ("adapters served", len(st["adapters"]) if st["base_model"] else NA),
        ("requests running", _num(st["running"])),
        ("requests waiting", _num(st["waiting"])),
        ("KV-cache usage", _pct(st["kv_cache_usage"])),
        ("prefix-cache hit rate", prefix),
        ("requests finished", _num(st["requests_finished"])),
        ("max adapters per batch", NA if not lora or lora["max_loras"] is None else lora["max_loras"]),
    ]
    out = [format_table(("what", "value"), rows)]
    if st.get("models"):
        out += ["", render_models(st["models"], lora)]
        if st.get(RAW) is None:
            out.append("per-adapter figures: n/a - the server exposes no lorafleet_* metrics (deploy again: "
                       "the lorafleet_metrics middleware counts each adapter)")
        elif st.get("never_used"):
            out.append(f"never used since the server started: {', '.join(st['never_used'])} "
                       "(declared or served, no request: candidates to remove)")
    for what, err in st["errors"].items():
        out.append(f"warning: {what}: {err}")
    return "\n".join(out)


def _seconds(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _ago(row: dict[str, Any]) -> str:
    if row["never_used"]:
        return "NEVER"
    if row["idle_s"] is None:
        return NA
    return format_duration(row["idle_s"]) + " ago"


def _yes(value: bool | None) -> str:
    return NA if value is None else ("yes" if value else "no")


def render_models(models: Sequence[dict[str, Any]], lora: dict[str, Any] | None = None) -> str:
    """One row per served name (and per fixed label that saw requests), from the lorafleet_* metrics."""
    active = set(lora["active"]) if lora else set()
    rows = []
    for r in models:
        manifest = "base" if r["kind"] == "base" else ("-" if r["kind"] != "adapter" else _yes(r["in_manifest"]))
        tokens = NA if r["prompt_tokens"] is None else f"{r['prompt_tokens']:,}/{r['completion_tokens']:,}"
        now = ("busy" if r["model"] in active else "idle") if lora and r["kind"] == "adapter" else ""
        rows.append((r["model"], manifest, _num(r["requests"]), _num(r["errors"]), _seconds(r["p50_s"]),
                     _seconds(r["p99_s"]), _seconds(r["ttft_p50_s"]), tokens, _num(r["tool_calls"]), _ago(r), now))
    headers = ("model", "manifest", "requests", "errors", "p50", "p99", "TTFT p50", "tokens in/out", "tool calls",
               "last used", "now")
    return format_table(headers, rows, right=(2, 3, 4, 5, 6, 7, 8))


def status_exit_code(st: dict[str, Any]) -> int:
    """0 when the server answers and lists its models, 1 otherwise."""
    return 0 if st["reachable"] and st["base_model"] else 1


def run_status(endpoint: Endpoint, as_json: bool = False, timeout: float = 10.0, watch: float | None = None) -> int:
    """Print the status of ``endpoint`` (table or JSON) and return the exit code; every ``watch`` s until Ctrl-C."""

    def show() -> int:
        st = collect_status(endpoint, timeout=timeout)
        # watched JSON: one document per line, for a script that reads them as they come
        print(json.dumps(public(st), sort_keys=True, indent=None if watch else 2) if as_json else render_status(st))
        return status_exit_code(st)

    return repeat(show, watch, clear=not as_json)


def repeat(show: Callable[[], int], every: float | None, clear: bool, sleep: Callable[[float], None] = time.sleep,
           rounds: int | None = None) -> int:
    """``show()`` once, or every ``every`` seconds (the screen cleared first) until Ctrl-C; its last exit code."""
    if not every:
        return show()
    code, done = 0, 0
    try:
        while rounds is None or done < rounds:
            if clear:
                print("\033[H\033[2J", end="")
            code = show()
            if clear:
                print(f"\nevery {every:g} s, {datetime.now().strftime('%H:%M:%S')}; Ctrl-C to stop")
            sys.stdout.flush()
            done += 1
            if rounds is None or done < rounds:
                sleep(every)
    except KeyboardInterrupt:
        pass
    return code
