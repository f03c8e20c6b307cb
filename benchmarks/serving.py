"""What the whole-server benchmarks share: a `lorafleet bench` run against the deployed CPU stack, and vLLM
recreated from the deployed compose file with its command changed (metrics_overhead, parser_server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from tests.support.scenario import API_KEY, sh


def bench(scenario, out: Path, label: str, args, max_tokens: int = 16) -> None:
    """A warm-up (the recreated server's first requests would otherwise count against it), then the measured run."""
    for requests, target in ((args.concurrency * 4, out.with_suffix(".warmup.json")), (args.requests, out)):
        command = [sys.executable, "-m", "lorafleet.tools.cli", "bench", "--url", scenario.endpoint, "--models", "all",
                   "--requests", str(requests), "--concurrency", str(args.concurrency), "--max-tokens", str(max_tokens),
                   "--prefix-tools", "2", "--no-progress", "--label", label, "--out", str(target)]
        subprocess.run(command, env={**os.environ, "LORAFLEET_API_KEY": API_KEY}, check=True,
                       stdout=subprocess.DEVNULL if target != out else None)


def recreate_vllm(scenario, edit: Callable[[list[str]], None], suffix: str) -> Path:
    """Recreate vLLM from the deployed compose file, its command changed in place by `edit`; the file it ran."""
    compose = scenario.dir / "stack" / "compose.yaml"
    project = yaml.safe_load(compose.read_text())
    edit(project["services"]["vllm"]["command"])
    edited = compose.with_name(f"compose.{suffix}.yaml")
    edited.write_text(yaml.safe_dump(project, sort_keys=False))
    sh("docker", "compose", "-p", scenario.project, "-f", str(edited), "up", "-d", "--wait", "--wait-timeout", "900",
       "--force-recreate")
    return edited
