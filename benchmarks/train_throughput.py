"""Benchmark: the user's loop on the demo model, with figures: train, deploy, eval.

    python -m benchmarks.train_throughput [--examples 160] [--steps 100] [--batch-size 16] [--seed 7]

Needs a Docker engine (see .ci/setup.sh). One run, one machine, the real CPU stack of the e2e
scenario (target @local), removed at the end:
1. a seeded dataset for a function the demo adapters do not know (``lorafleet.train.sample``);
2. ``lorafleet train`` on the demo base, on this CPU, in a throwaway container of the serving image;
3. the adapter deployed beside the demo adapters (a runtime load, no restart);
4. ``lorafleet eval`` of the held-out examples against the base and the adapter.
Prints training throughput (examples/s, tokens/s), the final loss, and the eval table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from lorafleet.tools.eval import evaluate, table
from lorafleet.train import sample
from lorafleet.train.container import docker_command
from lorafleet.train.data import load_examples, write_jsonl
from lorafleet.train.score import summarise
from tests.support.scenario import API_KEY, converged, docker_engine_problem, sh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=160, help="training examples (held-out: a quarter)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    problem = docker_engine_problem()
    if problem:
        print(f"train_throughput: {problem}", file=sys.stderr)
        return 2
    with converged("local") as scenario:
        folder = scenario.dir / "train"
        folder.mkdir(exist_ok=True)
        train, heldout = folder / "train.jsonl", folder / "heldout.jsonl"
        write_jsonl(train, sample.dataset(args.examples, args.seed))
        write_jsonl(heldout, sample.dataset(max(8, args.examples // 4), args.seed + 1000))
        image = sh("docker", "inspect", "--format", "{{.Config.Image}}", scenario.vllm_container()).stdout.strip()
        demo = scenario.models_root / "lorafleet-demo"
        out = scenario.dir / "laptop" / "timer"
        out.parent.mkdir(parents=True, exist_ok=True)
        train_args = ["--rank", "16", "--alpha", "32", "--lr", "1e-2", "--max-steps", str(args.steps),
                      "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--max-lora-rank", "16",
                      "--base-name", json.loads((demo / "demo.json").read_text())["base_name"], "--json"]
        t0 = time.monotonic()
        result = sh(*docker_command(image, train, demo / "base", out, train_args), timeout=3600, check=False)
        wall = time.monotonic() - t0
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return 1
        record = json.loads(result.stdout)

        base = scenario.data["served_model_name"]
        scenario.write_inventory(adapters=[*scenario.data["adapters"], {"name": "timer", "path": str(out)}])
        started = scenario.vllm_started_at()
        t1 = time.monotonic()
        scenario.deploy()
        deploy_seconds = time.monotonic() - t1
        restarted = scenario.vllm_started_at() != started
        examples = load_examples(heldout, require_final_assistant=True)
        t2 = time.monotonic()
        figures = {m: summarise(o) for m, o in evaluate(scenario.endpoint, API_KEY, [base, "timer"], examples).items()}
        eval_seconds = time.monotonic() - t2

    seen = record["steps"] * args.batch_size
    tokens_per_example = record["trained_tokens"] / record["examples"]
    print(f"\ntraining on this CPU ({record['device']}, demo base, rank 16, batch {args.batch_size}):")
    print(f"  {record['examples_per_second']} examples/s ({seen} examples in {record['train_seconds']} s; "
          f"about {record['examples_per_second'] * tokens_per_example:.0f} trained tokens/s), "
          f"final loss {record['final_loss']}; the whole container run {wall:.1f} s")
    print(f"deploy of the new adapter: {deploy_seconds:.1f} s, vLLM restarted: {restarted}")
    print(f"eval of {len(examples)} held-out examples ({eval_seconds:.1f} s for both models):\n")
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
