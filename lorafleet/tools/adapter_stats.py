"""Per-adapter figures from the ``lorafleet_*`` metrics the serving middleware exposes on ``/metrics``.

The middleware is ``files/serving/lorafleet_metrics.py``: counts per served name (the base and each
adapter), with ``unknown_model`` and ``unauthorized`` for requests of no served name. Pure functions
of parsed samples, so ``lorafleet status`` (one box or a fleet) and the tests share them.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from prometheus_client.samples import Sample

PREFIX = "lorafleet_"
FIXED_LABELS = ("unknown_model", "unauthorized")  # as the middleware names requests of no served name
ERROR_OUTCOMES = ("4xx", "5xx")
# Every figure of a row that adds up across boxes.
COUNTS = ("requests", "errors", "cancelled", "prompt_tokens", "completion_tokens", "tool_calls", "tool_call_failures")


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``{le: count}``: linear within the bucket; None when empty."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):  # in the +Inf bucket: the highest finite bound, as Prometheus answers
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _empty() -> dict[str, Any]:
    return {**{k: 0 for k in COUNTS}, "latency_buckets": {}, "ttft_buckets": {}, "last_used": None, "declared": None}


def collect(samples: Iterable[Sample]) -> dict[str, dict[str, Any]] | None:
    """Raw per-model figures (counts, cumulative buckets, last use, declared); None when the page has none of ours."""
    rows: dict[str, dict[str, Any]] = {}
    seen = False
    for s in samples:
        if not s.name.startswith(PREFIX) or math.isnan(s.value):
            continue
        seen = True
        model = s.labels.get("model")
        if model is None:
            continue
        row = rows.setdefault(model, _empty())
        name, value = s.name, s.value
        if name == "lorafleet_requests_total":
            outcome = s.labels.get("outcome", "")
            row["requests"] += value
            if outcome in ERROR_OUTCOMES:
                row["errors"] += value
            elif outcome == "cancelled":
                row["cancelled"] += value
        elif name == "lorafleet_request_duration_seconds_bucket":
            le = float(s.labels["le"])
            row["latency_buckets"][le] = row["latency_buckets"].get(le, 0) + value  # streamed and not, together
        elif name == "lorafleet_time_to_first_token_seconds_bucket":
            le = float(s.labels["le"])
            row["ttft_buckets"][le] = row["ttft_buckets"].get(le, 0) + value
        elif name == "lorafleet_prompt_tokens_total":
            row["prompt_tokens"] += value
        elif name == "lorafleet_completion_tokens_total":
            row["completion_tokens"] += value
        elif name == "lorafleet_tool_calls_total":
            row["tool_calls"] += value
        elif name == "lorafleet_tool_call_parse_failures_total":
            row["tool_call_failures"] += value
        elif name == "lorafleet_last_request_timestamp_seconds":
            row["last_used"] = max(row["last_used"] or 0, value) or None
        elif name == "lorafleet_adapter_declared":
            row["declared"] = bool(value) or bool(row["declared"])
    return rows if seen else None


def merge(collected: Sequence[Mapping[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several boxes' raw figures as one: counts and buckets add, the last use is the latest, declared anywhere."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in collected:
        for model, row in rows.items():
            into = merged.setdefault(model, _empty())
            for key in COUNTS:
                into[key] += row[key]
            for key in ("latency_buckets", "ttft_buckets"):
                for le, count in row[key].items():
                    into[key][le] = into[key].get(le, 0) + count
            if row["last_used"]:
                into["last_used"] = max(into["last_used"] or 0, row["last_used"])
            if row["declared"] is not None:
                into["declared"] = bool(into["declared"]) or row["declared"]
    return merged


def adapter_rows(raw: Mapping[str, dict[str, Any]] | None, base: str | None, served: Sequence[str],
                 now: float) -> list[dict[str, Any]]:
    """One row per served name (base first, then adapters by name), each adapter also served or declared,
    then the fixed labels that saw requests. Figures are None where the server has no metrics of ours."""
    names = [base] if base else []
    known = set(raw or ())
    adapters = sorted(set(served) | {m for m in known if m not in FIXED_LABELS and m != base})
    names += adapters
    names += [f for f in FIXED_LABELS if f in known and (raw[f]["requests"] or 0) > 0]
    rows = []
    for name in names:
        figures = (raw or {}).get(name)
        if raw is None:
            rows.append({"model": name, "kind": _kind(name, base), "in_manifest": None, "served": name in served,
                         **{k: None for k in (*COUNTS, "p50_s", "p99_s", "ttft_p50_s", "last_used", "idle_s")},
                         "never_used": None})
            continue
        figures = figures or _empty()
        last = figures["last_used"]
        requests = int(figures["requests"])
        declared = figures["declared"] if name != base and name not in FIXED_LABELS else None
        rows.append({
            "model": name,
            "kind": _kind(name, base),
            "in_manifest": declared,
            "served": name in served or name == base,
            **{k: int(figures[k]) for k in COUNTS},
            "p50_s": histogram_quantile(0.5, figures["latency_buckets"]),
            "p99_s": histogram_quantile(0.99, figures["latency_buckets"]),
            "ttft_p50_s": histogram_quantile(0.5, figures["ttft_buckets"]),
            "last_used": last,
            "idle_s": max(0.0, now - last) if last else None,
            "never_used": requests == 0 and _kind(name, base) == "adapter",
        })
    return rows


def _kind(name: str, base: str | None) -> str:
    if name == base:
        return "base"
    return "no served name" if name in FIXED_LABELS else "adapter"


def never_used(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Adapters declared (or served) that no request used since the server started."""
    return [r["model"] for r in rows if r.get("never_used")]
