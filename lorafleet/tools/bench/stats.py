"""Figures of a bench run: one :class:`Sample` per request, percentiles, summaries, ratios."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between ranks (numpy's default); None if empty.

    ``statistics.quantiles`` cuts the data into ``n`` equal parts; the q-th
    percentile is cut ``k`` of ``n`` where ``k/n = q/100`` (99.9 is cut 999 of 1000).
    """
    data = [v for v in values if v is not None and not math.isnan(v)]
    if not data:
        return None
    if len(data) == 1 or q <= 0:
        return min(data)
    if q >= 100:
        return max(data)
    part = Fraction(q / 100).limit_denominator(10_000)
    return statistics.quantiles(data, n=part.denominator, method="inclusive")[part.numerator - 1]


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean of ``values``."""
    clean = [v for v in values if v is not None]
    out: dict[str, float | None] = {f"p{q}": percentile(clean, q) for q in PERCENTILES}
    out["mean"] = statistics.fmean(clean) if clean else None
    return out


@dataclass
class Sample:
    """One request's outcome (times in ms from the start of the run / of the request)."""

    model: str
    start_ms: float
    ok: bool
    e2e_ms: float | None = None
    ttft_ms: float | None = None
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str | None = None
    detail: str | None = None


def summarize(samples: Sequence[Sample], wall_s: float) -> dict[str, Any]:
    """Counts, throughput over ``wall_s`` and latency percentiles of ``samples``."""
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for s in samples:
        if not s.ok:
            kind = s.error or "unknown"
            errors[kind] = errors.get(kind, 0) + 1
            if s.detail and kind not in examples:
                examples[kind] = s.detail
    tokens = sum(s.output_tokens for s in ok)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_count": len(samples) - len(ok),
        "error_examples": dict(sorted(examples.items())),
        "req_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens": tokens,
        "prompt_tokens_mean": (sum(p) / len(p)) if (p := [s.prompt_tokens for s in ok if s.prompt_tokens]) else None,
        "output_tok_per_s": tokens / wall_s if wall_s > 0 else None,
        "ttft_ms": distribution([s.ttft_ms for s in ok if s.ttft_ms is not None]),
        "e2e_ms": distribution([s.e2e_ms for s in ok if s.e2e_ms is not None]),
    }


def summarize_run(samples: Sequence[Sample], models: Sequence[str], wall_s: float) -> dict[str, Any]:
    """``overall`` and ``per_model`` summaries; each model's rate is over the whole run's wall time."""
    return {
        "overall": summarize(samples, wall_s),
        "per_model": {m: summarize([s for s in samples if s.model == m], wall_s) for m in models},
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """b / a, or None when either is missing or a is zero."""
    if a is None or b is None or a == 0:
        return None
    return b / a


def server_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """What the server counted during the run: prefix-cache hit rate and finished requests."""
    out: dict[str, Any] = {"version": (after or before or {}).get("version"), "prefix_cache_hit_rate": None,
                           "prefix_cache_queries": None, "prefix_cache_hits": None, "requests_finished": None}
    if not before or not after:
        return out
    for key in ("prefix_cache_queries", "prefix_cache_hits", "requests_finished"):
        if before.get(key) is not None and after.get(key) is not None:
            out[key] = after[key] - before[key]
    if out["prefix_cache_queries"]:
        out["prefix_cache_hit_rate"] = (out["prefix_cache_hits"] or 0) / out["prefix_cache_queries"]
    return out

