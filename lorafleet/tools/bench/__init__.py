"""``lorafleet bench``: load a lorafleet server across chosen adapters and report how it copes.

Every request is a streamed chat completion whose first turn is the same long
developer turn with tool declarations (the part prefix caching saves), then a
short user question. Requests go round-robin over the chosen models, either at a
fixed number in flight (``--concurrency``, closed loop) or at a request rate
with Poisson arrivals (``--rate``, open loop, in flight capped by
``--concurrency``). The run stops after ``--requests`` or ``--duration``,
whichever comes first, and every request has a ``--timeout``: the run is always
bounded in count and time.

Reported per model and overall: requests/s, output tokens/s, time to first
token and end-to-end latency (p50/p90/p99), and errors by kind; written as JSON
(``--out``) and drawn as a PNG (``--chart``). ``lorafleet bench compare A B``
puts two runs side by side.

The parts: :mod:`.prompts` (what a request says, which models), :mod:`.fit`
(prompts that fit the server's context length), :mod:`.load` (the aiohttp
client and the load loops), :mod:`.run` (one run: the fit, warm-up, server
counters, the record), :mod:`.stats` (percentiles, summaries), :mod:`.report`
(table, chart, JSON, compare); this module holds the command-line wiring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from lorafleet.tools.bench.load import BenchConfig
from lorafleet.tools.bench.prompts import TOOL_SPECS, resolve_models
from lorafleet.tools.bench.report import load_result, render_compare, render_result, write_chart, write_json
from lorafleet.tools.bench.run import list_models, run_bench
from lorafleet.tools.endpoint import Endpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``lorafleet bench``."""
    p.add_argument("--models", help="comma-separated: names, base, all, adapters, adapters:N (default: all)")
    p.add_argument("--adapters", help="all, a number N (the first N), or comma-separated adapter names")
    p.add_argument("--versus", metavar="MODELS",
                   help="run a second configuration with these models (same syntax as --models) and compare, "
                        "e.g. --models base --versus adapters:8")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests in flight (default 16; with --rate, the in-flight cap, default 256)")
    p.add_argument("--rate", type=float, help="requests per second, Poisson arrivals (open loop)")
    p.add_argument("--requests", type=int, help="stop after this many requests (default 100 without --duration)")
    p.add_argument("--duration", type=float, help="stop sending after this many seconds")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request before it counts as a timeout")
    p.add_argument("--no-tools", action="store_true", help="write the declarations into the prompt, not `tools`")
    p.add_argument("--prefix-tools", type=int, default=len(TOOL_SPECS), metavar="N",
                   help=f"tool declarations in the shared developer turn, 0-{len(TOOL_SPECS)} "
                        f"(default {len(TOOL_SPECS)}; fewer are sent, with a note, when the prompt and "
                        f"--max-tokens would not fit the server's max_model_len)")
    p.add_argument("--unique-prefix", action="store_true",
                   help="make every developer turn unique, which defeats prefix caching (for comparison)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    p.add_argument("--label", default="", help="name of this run in tables, charts and JSON")
    p.add_argument("--out", type=Path, help="write the results JSON here")
    p.add_argument("--chart", type=Path, help="write a PNG chart here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, models: list[str], label: str | None = None) -> BenchConfig:
    """A :class:`BenchConfig` from parsed arguments and resolved model names."""
    concurrency = args.concurrency or (256 if args.rate else 16)
    requests = args.requests if args.requests is not None else (None if args.duration else 100)
    return BenchConfig(models=models, concurrency=concurrency, rate=args.rate, requests=requests,
                       duration=args.duration, max_tokens=args.max_tokens, timeout=args.timeout,
                       tools=not args.no_tools, prefix_tools=args.prefix_tools,
                       unique_prefix=args.unique_prefix, seed=args.seed,
                       label=label if label is not None else args.label, progress=not args.no_progress)


def _suffixed(path: Path | None, suffix: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-{suffix}{path.suffix}")


def main_bench(endpoint: Endpoint, args: argparse.Namespace) -> int:
    """``lorafleet bench``: run one configuration, or two with ``--versus``; 1 if any request failed."""
    listed = list_models(endpoint)
    try:
        models_a = resolve_models(args.models, args.adapters, listed)
        models_b = resolve_models(args.versus, None, listed) if args.versus else None
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc

    runs = [(args.label or (args.models or args.adapters or "all"), models_a, "a")]
    if models_b is not None:
        runs.append((args.versus, models_b, "b"))
    results = []
    for label, models, suffix in runs:
        cfg = config_from_args(args, models, label)
        try:
            result = run_bench(endpoint, cfg)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        results.append(result)
        print(render_result(result))
        print()
        out = _suffixed(args.out, suffix) if models_b is not None else args.out
        chart = _suffixed(args.chart, suffix) if models_b is not None else args.chart
        if out:
            write_json(result, out)
            print(f"results: {out}")
        if chart:
            write_chart(result, chart)
            print(f"chart: {chart}")
    if len(results) == 2:
        print()
        print(render_compare(results[0], results[1], runs[0][0], runs[1][0]))
    return 1 if any(r["overall"]["error_count"] for r in results) else 0


def main_compare(argv: Sequence[str]) -> int:
    """``lorafleet bench compare A.json B.json``."""
    p = argparse.ArgumentParser(prog="lorafleet bench compare", description="Two bench runs side by side.")
    p.add_argument("a", type=Path, help="results JSON of run A (the reference)")
    p.add_argument("b", type=Path, help="results JSON of run B; ratios are B/A")
    args = p.parse_args(list(argv))
    print(render_compare(load_result(args.a), load_result(args.b), str(args.a), str(args.b)))
    return 0
