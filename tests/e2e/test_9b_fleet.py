"""The fleet: two boxes and the router, deployed by one command, on real parts.

Two vLLM CPU stacks reached over SSH as the deploy reaches real boxes, and
HAProxy as the router (stand-ins: see tests/support/fleet.py).
The module asks for the shared SSH stack to be gone (`ssh_stack_gone`): only the
fleet's two engines share this machine's two cores.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
import uuid

import pytest
import requests

from lorafleet.deploy.router.config import BOX_HEADER
from tests.support.fleet import converged_fleet, measure
from tests.support.load import BackgroundLoad
from tests.support.scenario import API_KEY, ROOT, Scenario, sh


@pytest.fixture(scope="module")
def fleet(report, ssh_stack_gone):
    with converged_fleet(report=report) as fleet:
        yield fleet


def ask(url: str, key: str, model: str, content: str = "ping") -> requests.Response:
    return requests.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120, json={
        "model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": content}]})


def landed_on(response: requests.Response) -> str:
    """The box that answered: the router names it in a response header."""
    return response.headers.get(BOX_HEADER, "")


def models_of(fleet, box: str) -> list[str]:
    data = fleet.data[box]
    return [data["served_model_name"], *(a["name"] for a in data["adapters"])]


def test_every_adapter_answers_through_the_router_and_only_from_boxes_that_serve_it(fleet):
    seen = collections.defaultdict(set)
    everything = list(dict.fromkeys(models_of(fleet, "box-a") + models_of(fleet, "box-b")))
    for model in everything:
        for _ in range(4):
            response = ask(fleet.router_url, API_KEY, model)
            assert response.status_code == 200, f"{model}: {response.status_code} {response.text[:300]}"
            seen[model].add(landed_on(response))
    fleet.report(f"[e2e fleet] answered through the router: { {m: sorted(b) for m, b in seen.items()} }")
    only_a = [m for m in everything if m not in models_of(fleet, "box-b")]
    assert only_a and all(seen[m] == {"box-a"} for m in only_a), seen


def test_the_boxes_take_only_their_own_key_and_the_router_only_the_users(fleet):
    box_b = fleet.boxes["box-b"].endpoint
    assert ask(box_b, API_KEY, "weather").status_code == 401, "a box accepted the user's key: it must take only the router's"
    assert ask(box_b, fleet.box_key("box-b"), "weather").status_code == 200
    assert ask(fleet.router_url, fleet.box_key("box-b"), "weather").status_code == 401
    assert ask(fleet.router_url, "sk-wrong-" + uuid.uuid4().hex, "weather").status_code == 401


def test_the_router_logs_no_request_body_and_no_key(fleet):
    marker = "secret-prompt-" + uuid.uuid4().hex
    assert ask(fleet.router_url, API_KEY, "weather", content=marker).status_code == 200
    logs = sh("docker", "logs", fleet.router_container, check=False)
    text = logs.stdout + logs.stderr
    for secret in (marker, API_KEY, fleet.box_key("box-a"), fleet.box_key("box-b")):
        assert secret not in text, "the router's log holds a request body or a key"
    config = subprocess.run(["docker", "inspect", fleet.router_container], capture_output=True, text=True).stdout
    assert API_KEY not in config and fleet.box_key("box-a") not in config, "a key shows in `docker inspect`"


def test_a_second_converge_changes_nothing(fleet):
    started = {name: box.vllm_started_at() for name, box in fleet.boxes.items()}
    with fleet.phase("idempotence"):
        payload = fleet.deploy()
    changed = Scenario.changed_operations(payload)
    fleet.report(f"[e2e fleet] idempotence: {len(changed)} changed operations {changed}")
    assert changed == []
    assert {name: box.vllm_started_at() for name, box in fleet.boxes.items()} == started


def test_a_dead_box_leaves_rotation_with_no_failed_request_and_rejoins(fleet):
    shared = [m for m in models_of(fleet, "box-a") if m in models_of(fleet, "box-b")]
    vllm_b = fleet.boxes["box-b"].vllm_container()
    with fleet.phase("box-b down and back under load"):
        with BackgroundLoad(fleet.router_url, API_KEY, shared, workers=2) as load:
            time.sleep(3)
            _kill(vllm_b)
            time.sleep(8)  # the health checks (every 2 s, 2 failures) take it out of rotation
            while_down = collections.Counter(landed_on(ask(fleet.router_url, API_KEY, m)) for m in shared * 3)
            _start_again(vllm_b)
            rejoined = _wait_until_it_answers(fleet, "box-b", shared, deadline=600)
    fleet.report(f"[e2e fleet] box-b stopped: {load.summary()}; while down answered by {dict(while_down)}; "
                 f"rejoined after {rejoined:.0f} s")
    assert load.failed == 0, load.summary()
    assert set(while_down) == {"box-a"}, while_down


def _kill(container: str) -> None:
    """The box dies (SIGKILL); on this busy machine the engine may report the exit late, so wait for it."""
    sh("docker", "kill", container, check=False)
    for _ in range(60):
        if sh("docker", "inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "false":
            return
        time.sleep(2)
    raise AssertionError(f"{container} still runs 120 s after SIGKILL")


def _start_again(container: str) -> None:
    """`docker start`, retried: right after a stop the engine may still be releasing vLLM's worker processes."""
    for _ in range(20):
        if sh("docker", "start", container, check=False).returncode == 0:
            return
        time.sleep(3)
    sh("docker", "start", container)


def _wait_until_it_answers(fleet, box: str, models: list[str], deadline: float) -> float:
    """Seconds until the router sends a request to `box` again."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if any(landed_on(ask(fleet.router_url, API_KEY, m)) == box for m in models):
            return time.monotonic() - start
        time.sleep(2)
    raise AssertionError(f"{box} did not rejoin the router's rotation within {deadline} s")


def test_an_engine_change_rolls_one_box_at_a_time_with_no_failed_request(fleet):
    shared = [m for m in models_of(fleet, "box-a") if m in models_of(fleet, "box-b")]
    before = {name: box.vllm_started_at() for name, box in fleet.boxes.items()}
    fleet.write_inventory(extra_vllm_args=["--seed", "7"])  # a flag: every box must be recreated
    with fleet.phase("engine change rolled under load"):
        # Each reload of the router closes its idle keep-alive connections: a client sends such a request
        # again, as the openai client does by default (the issue allows retries; the summary counts them).
        with BackgroundLoad(fleet.router_url, API_KEY, shared, workers=2, retry_connection_errors=True) as load:
            payload = fleet.deploy()
    after = {name: box.vllm_started_at() for name, box in fleet.boxes.items()}
    first, second = sorted(after, key=after.get)
    healthy_first = _healthy_at(fleet.boxes[first])
    fleet.report(f"[e2e fleet] engine change: {load.summary()}; {first} started {after[first]}, healthy "
                 f"{healthy_first}; then {second} started {after[second]}")
    assert load.failed == 0, load.summary()
    assert all(after[n] != before[n] for n in after), "a box was not recreated"
    assert after[second] > healthy_first, f"{second} was restarted before {first} was healthy again: not one at a time"
    assert any("one box at a time" in name for name in Scenario.changed_operations(payload))


def _healthy_at(box: Scenario) -> str:
    """When vLLM in the box's container began to answer (its log's time stamp, RFC 3339 in UTC like StartedAt)."""
    logs = sh("docker", "logs", "--timestamps", box.vllm_container(), check=False)
    ready = [line.split()[0] for line in (logs.stdout + logs.stderr).splitlines() if "Application startup complete" in line]
    assert ready, f"{box.vllm_container()} never logged its start-up"
    return min(ready)


def test_status_and_check_show_every_box(fleet):
    for command in (["status", "--fleet"], ["check", "--fleet"]):
        result = subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", *command, "--inventory", str(fleet.inventory)],
                                cwd=ROOT, env=fleet.env(), capture_output=True, text=True, timeout=600)
        fleet.report(f"[e2e fleet] lorafleet {' '.join(command)}:\n{result.stdout}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "box-a" in result.stdout and "box-b" in result.stdout
        for secret in (API_KEY, fleet.box_key("box-a"), fleet.box_key("box-b")):
            assert secret not in result.stdout + result.stderr


def test_benchmark_router_versus_one_box(fleet):
    box = fleet.boxes["box-a"]
    figures = measure(fleet.router_url, API_KEY, box.endpoint, fleet.box_key("box-a"),
                      models=[m for m in models_of(fleet, "box-a") if m in models_of(fleet, "box-b")],
                      requests_per_run=48, concurrency=8, low_load_requests=20)
    fleet.report("[e2e fleet] benchmark (2-core machine: overhead and correctness, not scale):\n" + figures["table"])
    assert figures["router"]["error_count"] == 0 and figures["direct"]["error_count"] == 0


def test_destroy_removes_everything_it_made(fleet):
    fleet.destroy()
    assert fleet.leftovers() == []
