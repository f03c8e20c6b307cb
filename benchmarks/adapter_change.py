"""Benchmark: adding an adapter the lorafleet way (runtime load) versus the restart way.

    python -m benchmarks.adapter_change            # needs a Docker engine (see .ci/setup.sh)

One run, one machine, the real CPU stack of the e2e scenario (target @local):
1. lorafleet: declare a new adapter and run the deploy; vLLM loads it at runtime.
2. restart: list the adapters with `--lora-modules` in the compose file and run
   `docker compose up -d`, which recreates the container.
Both under the same steady load on the other adapters. Prints, for each way, the
time from the change's start to the new adapter's first answer, and the failed
requests to the other adapters meanwhile. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time

import requests
import yaml

from tests.support.load import BackgroundLoad
from tests.support.scenario import API_KEY, Scenario, converged, docker_engine_problem, sh


def first_answer(endpoint: str, model: str, started: float, done: dict, deadline: float = 900) -> None:
    """Poll `model` until it answers; record seconds since `started`."""
    while time.monotonic() - started < deadline:
        try:
            r = requests.post(f"{endpoint}/chat/completions", timeout=60, headers={"Authorization": f"Bearer {API_KEY}"},
                              json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
            if r.status_code == 200:
                done["seconds"] = time.monotonic() - started
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)


def measure(scenario: Scenario, others: list[str], new: str, change) -> dict:
    done: dict = {}
    with BackgroundLoad(scenario.endpoint, API_KEY, others) as load:
        time.sleep(3)
        started = time.monotonic()
        poller = threading.Thread(target=first_answer, args=(scenario.endpoint, new, started, done))
        poller.start()
        change()
        change_seconds = time.monotonic() - started
        poller.join()
        time.sleep(2)
    return {"answers_after_s": done.get("seconds"), "change_took_s": change_seconds, "outage_s": load.outage_seconds,
            "failed": load.failed, "ok": load.ok, "failures": dict(load.failures)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-env", default="{}", help="JSON of extra vLLM environment, to compare engine settings")
    args = parser.parse_args()
    problem = docker_engine_problem()
    if problem:
        print(problem)
        return 2
    with converged("local", vllm_env=json.loads(args.vllm_env)) as scenario:
        declared = [dict(a) for a in scenario.data["adapters"]]
        others = [a["name"] for a in declared]
        demo_adapters = scenario.models_root / "lorafleet-demo" / "adapters"

        laptop = scenario.dir / "laptop" / "bench-runtime"
        shutil.copytree(demo_adapters / "email", laptop)
        scenario.write_inventory(adapters=[*declared, {"name": "bench-runtime", "path": str(laptop)}])
        runtime = measure(scenario, others, "bench-runtime", scenario.deploy)

        compose_file = scenario.dir / "stack" / "compose.yaml"
        project = yaml.safe_load(compose_file.read_text())
        vllm = project["services"]["vllm"]
        shutil.copytree(demo_adapters / "sql", scenario.dir / "adapters" / "bench-restart")
        names = [*others, "bench-runtime", "bench-restart"]
        vllm["entrypoint"] = ["vllm", "serve"]
        vllm["command"] = [*vllm["command"], "--lora-modules",
                           *(json.dumps({"name": n, "path": str(scenario.dir / "adapters" / n)}) for n in names)]
        compose_file.write_text(yaml.safe_dump(project, sort_keys=False))
        compose = ["docker", "compose", "-p", scenario.project, "-f", str(compose_file)]
        restart = measure(scenario, others, "bench-restart", lambda: sh(*compose, "up", "-d", timeout=900))

        print("\nAdding one adapter while 4 clients keep calling the other adapters (CPU stack, one run):")
        print(f"{'way':<38}{'new adapter answers after':>27}{'others down for':>17}{'failed / ok requests':>24}")
        for way, r in (("lorafleet (deploy, runtime load)", runtime), ("restart (--lora-modules, compose up)", restart)):
            answered = f"{r['answers_after_s']:.1f} s" if r["answers_after_s"] is not None else "never"
            print(f"{way:<38}{answered:>27}{r['outage_s']:>15.1f} s{r['failed']:>14} / {r['ok']:<8}")
        print(json.dumps({"runtime": runtime, "restart": restart}, indent=2))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
