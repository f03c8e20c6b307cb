"""How a bench run is shown and kept: the text table, the PNG chart, the JSON record, two runs compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorafleet.tools.bench.stats import PERCENTILES, ratio
from lorafleet.tools.status import format_table

SCHEMA = "lorafleet-bench/1"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_result(result: dict[str, Any]) -> str:
    """The per-model and overall table of one run."""
    rows = []
    for name, s in [*result["per_model"].items(), ("ALL", result["overall"])]:
        errors = ", ".join(f"{k}:{v}" for k, v in s["errors"].items()) or "-"
        rows.append((
            name, s["requests"], s["ok"], _rate(s["req_per_s"]), _rate(s["output_tok_per_s"]),
            *(_ms(s["ttft_ms"][f"p{q}"]) for q in PERCENTILES),
            *(_ms(s["e2e_ms"][f"p{q}"]) for q in PERCENTILES),
            errors,
        ))
    headers = ("model", "sent", "ok", "req/s", "out tok/s", "TTFT p50", "p90", "p99", "E2E p50", "p90", "p99",
               "errors")
    cfg = result["config"]
    mode = f"rate {cfg['rate']:g}/s (cap {cfg['concurrency']} in flight)" if cfg["rate"] else \
        f"concurrency {cfg['concurrency']}"
    head = (f"{result['label'] + ': ' if result['label'] else ''}{cfg['url']}, {len(cfg['models'])} models, "
            f"{mode}, {result['overall']['requests']} requests in {result['wall_s']:.1f} s "
            f"(latencies in ms)")
    lines = [head, format_table(headers, rows, right=range(1, 11))]
    server = result.get("server") or {}
    if server.get("prefix_cache_hit_rate") is not None:
        lines.append(f"server prefix-cache hit rate during the run: {100 * server['prefix_cache_hit_rate']:.1f}% "
                     f"({server['prefix_cache_hits']:,.0f} of {server['prefix_cache_queries']:,.0f} prompt tokens)")
    else:
        lines.append("server prefix-cache hit rate during the run: n/a")
    lines.extend(f"error {kind}, e.g.: {text}" for kind, text in result["overall"].get("error_examples", {}).items())
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return "\n".join(lines)


def write_chart(result: dict[str, Any], path: Path) -> None:
    """PNG: latency percentiles per model (left) and throughput per model (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*result["per_model"], "ALL"]
    stats = [*result["per_model"].values(), result["overall"]]
    width = max(10.0, 4.0 + 0.9 * len(names))
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(width, 5.5), constrained_layout=True)

    series = [("ttft_ms", q) for q in PERCENTILES] + [("e2e_ms", q) for q in PERCENTILES]
    colors = ["#9ecae1", "#4292c6", "#08519c", "#fdae6b", "#f16913", "#a63603"]
    bar = 0.8 / len(series)
    for k, ((metric, q), color) in enumerate(zip(series, colors, strict=True)):
        values = [s[metric][f"p{q}"] or 0.0 for s in stats]
        xs = [i - 0.4 + bar * (k + 0.5) for i in range(len(names))]
        label = f"{'TTFT' if metric == 'ttft_ms' else 'E2E'} p{q}"
        ax_lat.bar(xs, values, bar, label=label, color=color)
    ax_lat.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_title("Latency percentiles")
    ax_lat.legend(fontsize="small", ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax_lat.grid(axis="y", alpha=0.3)

    reqs = [s["req_per_s"] or 0.0 for s in stats]
    toks = [s["output_tok_per_s"] or 0.0 for s in stats]
    xs = range(len(names))
    ax_thr.bar([x - 0.2 for x in xs], reqs, 0.4, label="requests/s", color="#41ab5d")
    ax_tok = ax_thr.twinx()
    ax_tok.bar([x + 0.2 for x in xs], toks, 0.4, label="output tokens/s", color="#807dba")
    ax_thr.set_xticks(list(xs), names, rotation=30, ha="right")
    ax_thr.set_ylabel("requests/s")
    ax_tok.set_ylabel("output tokens/s")
    ax_thr.set_title("Throughput")
    handles = ax_thr.get_legend_handles_labels()[0] + ax_tok.get_legend_handles_labels()[0]
    ax_thr.legend(handles, ["requests/s", "output tokens/s"], fontsize="small", ncols=2, loc="upper center",
                  bbox_to_anchor=(0.5, -0.22))
    ax_thr.grid(axis="y", alpha=0.3)

    cfg = result["config"]
    mode = f"rate {cfg['rate']:g}/s" if cfg["rate"] else f"concurrency {cfg['concurrency']}"
    fig.suptitle(f"{result['label'] or 'lorafleet bench'}: {result['overall']['requests']} requests, {mode}, "
                 f"max_tokens {cfg['max_tokens']}, {result['wall_s']:.1f} s")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result record as indented JSON."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------- compare


COMPARED = [
    ("req/s", lambda s: s["req_per_s"]),
    ("out tok/s", lambda s: s["output_tok_per_s"]),
    ("TTFT p50 ms", lambda s: s["ttft_ms"]["p50"]),
    ("TTFT p90 ms", lambda s: s["ttft_ms"]["p90"]),
    ("TTFT p99 ms", lambda s: s["ttft_ms"]["p99"]),
    ("E2E p50 ms", lambda s: s["e2e_ms"]["p50"]),
    ("E2E p90 ms", lambda s: s["e2e_ms"]["p90"]),
    ("E2E p99 ms", lambda s: s["e2e_ms"]["p99"]),
    ("errors", lambda s: s["error_count"]),
]


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, Any, Any, float | None]]:
    """(model, metric, A, B, B/A) for the overall run, then for every model both runs loaded."""
    rows = []
    shared = [m for m in a["per_model"] if m in b["per_model"]]
    for model in ["ALL", *shared]:
        sa = a["overall"] if model == "ALL" else a["per_model"][model]
        sb = b["overall"] if model == "ALL" else b["per_model"][model]
        for metric, get in COMPARED:
            va, vb = get(sa), get(sb)
            rows.append((model, metric, va, vb, ratio(va, vb)))
    return rows


def render_compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Two runs side by side with B/A ratios."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = []
    for tag, r, name in (("A", a, name_a), ("B", b, name_b)):
        cfg = r["config"]
        mode = f"rate {cfg['rate']:g}/s" if cfg.get("rate") else f"concurrency {cfg['concurrency']}"
        label = f" [{r['label']}]" if r.get("label") and r["label"] != name else ""
        lines.append(f"{tag}: {name}{label}: {len(cfg['models'])} models, {mode}, "
                     f"{r['overall']['requests']} requests in {r['wall_s']:.1f} s")
    rows = []
    previous = None
    for model, metric, va, vb, rt in compare_rows(a, b):
        rows.append(("" if model == previous else model, metric, fmt(va), fmt(vb),
                     "-" if rt is None else f"{rt:.2f}x"))
        previous = model
    lines.append(format_table(("model", "metric", "A", "B", "B/A"), rows, right=(2, 3, 4)))
    for tag, r, other in (("A", a, b), ("B", b, a)):
        only = [m for m in r["per_model"] if m not in other["per_model"]]
        if only:
            lines.append(f"only in {tag}: {', '.join(only)}")
    for tag, r in (("A", a), ("B", b)):
        rate = (r.get("server") or {}).get("prefix_cache_hit_rate")
        lines.append(f"{tag} prefix-cache hit rate: {'n/a' if rate is None else f'{100 * rate:.1f}%'}")
    return "\n".join(lines)


def load_result(path: Path) -> dict[str, Any]:
    """Read a results JSON written by ``lorafleet bench --out``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read a bench result ({exc})") from exc
    if data.get("schema") != SCHEMA:
        raise SystemExit(f"{path}: not a lorafleet bench result (schema {data.get('schema')!r}, want {SCHEMA})")
    return data

