"""Benchmark: the whole server with lorafleet's tool parser plugin, then with vLLM's built-in `functiongemma` parser.

    python -m benchmarks.parser_server [--requests 1024] [--concurrency 256] [--max-tokens 32]

One run, one machine: it deploys the CPU stack of the e2e scenario (target @local), runs `lorafleet
bench` over the base and the demo adapters with the server as deployed (`--tool-parser-plugin
/lorafleet/functiongemma_tool_parser.py --tool-call-parser lorafleet_functiongemma`), then recreates
vLLM from the same compose file with `--tool-call-parser functiongemma` and no plugin, and runs the
same bench again, then recreates it as deployed and runs ours once more (so the order of the runs
shows). Every request streams (for TTFT) and declares tools, so the server's tool parser
reads every chunk of every answer; 32 output tokens let most calls finish inside the answer. Each
run has a warm-up of its own. Prints `lorafleet bench compare` of the two (the built-in parser is A,
lorafleet's B: ratios are ours / built-in) and one line of requests/s and TTFT p50, writes both JSON
files to benchmarks/results/ and removes everything it made.

Needs a Docker engine (the scenario builds the CPU serving image and the demo model when missing).
`benchmarks.parser_compare` holds the parsers' accuracy and their cost per chunk in one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.serving import bench, recreate_vllm
from lorafleet.deploy.layout import PROJECT_TOOL_PARSER
from tests.support.scenario import converged, docker_engine_problem

RESULTS = Path(__file__).resolve().parent / "results"
BUILTIN = "functiongemma"  # vLLM's own FunctionGemma tool parser (vllm/tool_parsers/functiongemma_tool_parser.py)


def builtin_parser(command: list[str]) -> None:
    """vLLM's command with its built-in parser: `--tool-call-parser functiongemma`, no `--tool-parser-plugin FILE`."""
    parser = command.index("--tool-call-parser") + 1
    if command[parser] != PROJECT_TOOL_PARSER or "--tool-parser-plugin" not in command:
        raise SystemExit(f"the deployed vLLM does not run lorafleet's parser: {' '.join(command)}")
    command[parser] = BUILTIN
    plugin = command.index("--tool-parser-plugin")
    del command[plugin:plugin + 2]


def measured(path: Path) -> dict:
    """A measured run's record; SystemExit when its requests did not declare tools (the parser would not run)."""
    result = json.loads(path.read_text(encoding="utf-8"))
    if not result["config"].get("tools_declared"):
        raise SystemExit(f"{path}: the requests declared no tools ({'; '.join(result.get('notes', []))})")
    return result


def summary(ours: dict, builtin: dict) -> str:
    """One line: our requests/s over the built-in's, and both TTFT p50s."""
    a, b = ours["overall"], builtin["overall"]

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    rate = f"{a['req_per_s'] / b['req_per_s']:.2f}x" if a["req_per_s"] and b["req_per_s"] else "n/a"
    return (f"lorafleet's parser / built-in: {rate} requests/s, "
            f"TTFT p50 {ms(a['ttft_ms']['p50'])} ms vs {ms(b['ttft_ms']['p50'])} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=32,
                        help="output tokens per request (16 cuts many calls short)")
    args = parser.parse_args()
    problem = docker_engine_problem()
    if problem:
        print(problem)
        return 2
    RESULTS.mkdir(exist_ok=True)
    ours, builtin, again = (RESULTS / f"parser-{name}.json" for name in ("ours", "builtin", "ours-again"))
    # max_num_seqs as high as the load: all 256 streams run at once, so the parser sees every one of them
    # (the local target's 32 would queue the rest, and the queue, not the parser, would set TTFT).
    with converged("local", max_num_seqs=args.concurrency) as scenario:
        bench(scenario, ours, "lorafleet's parser", args, max_tokens=args.max_tokens)
        measured(ours)
        recreate_vllm(scenario, builtin_parser, "builtin-parser")
        bench(scenario, builtin, "vLLM's functiongemma parser", args, max_tokens=args.max_tokens)
        # Ours once more, on a server recreated as the built-in's was: what the order of the runs costs shows.
        recreate_vllm(scenario, lambda command: None, "ours-again")
        bench(scenario, again, "lorafleet's parser, again", args, max_tokens=args.max_tokens)
        line = summary(measured(ours), measured(builtin))
        line_again = summary(measured(again), measured(builtin))
    compared = [subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", "bench", "compare", str(builtin),
                                str(run)]).returncode for run in (ours, again)]
    print(f"first run: {line}\nagain, after the built-in: {line_again}")
    return max(compared)


if __name__ == "__main__":
    raise SystemExit(main())
