"""Benchmark: vLLM's built-in `functiongemma` tool parser versus lorafleet's, on generated calls.

    python -m benchmarks.parser_compare [--image IMAGE] [--seed 0] [--per-kind 30]

Needs a Docker engine and the CPU serving image (the e2e scenario or a local deploy builds it;
by default the newest `lorafleet/vllm-cpu:*`).  Generates a seeded corpus of calls covering each
value type and edge case, written with `render_call` as the chat template writes them, and runs
both parsers on each inside one throwaway container of the serving image, through the classes
`vllm serve` uses (ParserManager, the request's adjust_request, parse and parse_delta).  Prints
the share of calls each parser returns exactly (name and arguments equal, types included), per
kind, non-streaming and streaming (chunks cut as a tokenizer would: control tokens whole).
Then what each parser costs in vLLM's API server process: microseconds per non-streamed response
and per streamed chunk (the parsers run one after the other on each case, in the same process, so
a busy machine slows both alike), over all cases and for the longest fifth of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from tests.support.parser_cases import BUILTIN, KINDS, OURS, corpus, newest_serving_image, run_in_serving_image


def exact_calls(expected: list, got: list[dict]) -> int:
    """How many of the expected calls `got` returns exactly, in place (types included: 1 is not "1")."""
    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    hits = 0
    for (name, arguments), call in zip(expected, got):
        try:
            hits += call["name"] == name and same(json.loads(call["arguments"]), arguments)
        except (TypeError, ValueError):
            pass
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="serving image (default: the newest lorafleet/vllm-cpu:*)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=30)
    args = parser.parse_args()
    image = args.image or newest_serving_image()
    if not image:
        raise SystemExit("no lorafleet/vllm-cpu image here: run the e2e scenario or a local deploy first, or pass --image")
    cases = corpus(args.seed, args.per_kind)
    results, _ = run_in_serving_image(image, cases, [BUILTIN, OURS])

    columns = [(BUILTIN, False), (OURS, False), (BUILTIN, True), (OURS, True)]
    totals = {column: 0 for column in columns}
    print(f"{len(cases)} cases, {sum(len(c['calls']) for c in cases)} calls; image {image}; seed {args.seed}")
    print(f"{'kind':28} {'calls':>5}  {'built-in':>9} {'lorafleet':>9}  {'built-in':>9} {'lorafleet':>9}")
    print(f"{'':28} {'':>5}  {'non-streaming':>19}  {'streaming':>19}")
    for kind in KINDS:
        rows = [(c, r) for c, r in zip(cases, results) if c["kind"] == kind]
        calls = sum(len(c["calls"]) for c, _ in rows)
        shares = []
        for name, streaming in columns:
            hits = sum(exact_calls(c["calls"], (r[name].get("stream", {}) if streaming else r[name]).get("tool_calls", []))
                       for c, r in rows)
            totals[(name, streaming)] += hits
            shares.append(f"{100 * hits / calls:8.1f}%")
        print(f"{kind:28} {calls:5}  {shares[0]} {shares[1]}  {shares[2]} {shares[3]}")
    calls = sum(len(c["calls"]) for c in cases)
    print(f"{'all':28} {calls:5}  " + " ".join(f"{100 * totals[col] / calls:8.1f}%" for col in columns[:2])
          + "  " + " ".join(f"{100 * totals[col] / calls:8.1f}%" for col in columns[2:]))
    print()
    print_costs(cases, results)


def costs(cases: list[dict], results: list[dict], name: str) -> dict[str, float]:
    """Microseconds: median per non-streamed response, and per streamed chunk (all cases; the longest fifth)."""
    rows = [(c, r[name]) for c, r in zip(cases, results) if all("parse_ns" in r[n] for n in (BUILTIN, OURS))]
    longest = sorted(rows, key=lambda row: -len(row[0]["text"]))[:max(1, len(rows) // 5)]

    def per_chunk(chosen):
        return sum(r["stream"]["ns"] for _, r in chosen) / max(1, sum(r["stream"]["chunks"] for _, r in chosen)) / 1000

    return {"response": statistics.median(r["parse_ns"] for _, r in rows) / 1000,
            "response, longest": statistics.median(r["parse_ns"] for _, r in longest) / 1000,
            "chunk": per_chunk(rows), "chunk, longest": per_chunk(longest)}


def print_costs(cases: list[dict], results: list[dict]) -> None:
    builtin, ours = costs(cases, results, BUILTIN), costs(cases, results, OURS)
    print(f"{'cost in the API server (us)':28} {'built-in':>9} {'lorafleet':>9} {'ratio':>7}")
    for key in builtin:
        print(f"{'per ' + key:28} {builtin[key]:9.1f} {ours[key]:9.1f} {ours[key] / builtin[key]:6.2f}x")


if __name__ == "__main__":
    main()
