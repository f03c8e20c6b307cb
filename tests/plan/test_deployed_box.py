"""The deploy against a box that is already serving: pyinfra's @fake connector answers the facts.

Not a dry run: every operation "runs" against the fake connector, so these
tests see which operations change the box in each case, and the output at the
highest verbosity, with diffs, carries no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from inventories.dry_run import _FIRST_TIME_BOX as FIRST_TIME_BOX
from lorafleet.deploy import gpu, hashing, stack
from lorafleet.deploy.serving import plan as serving_plan
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data

ROOT = Path(__file__).resolve().parents[2]
HF_TOKEN = "hf_deployedBoxEXAMPLE0123456789abcdefgh"
API_KEY = "deployed-box-fake-api-key-51c2e8"
HOST = "@fake/function-gemma-server"
ADAPTERS = [{"name": "sql", "hub": "you/sql-lora", "revision": "abc123"},
            {"name": "email", "hub": "you/email-lora", "revision": "def456"}]
# nvidia-smi's answer to the preflight's query (gpu.QUERY) on the box's card: an RTX 3090 (Ampere).
AMPERE = "NVIDIA GeForce RTX 3090, 24576, 8.6, 560.94"
IMAGE_ID = "sha256:abc"  # the id of the settings' image (vllm/vllm-openai:v0.32.0) on the box
SERVING_OPS = ("Start vLLM and wait for /health (rolls back on failure)",
               "Bring the served adapters to the manifest (no restart)",
               "Verify /v1/models lists the base model and every adapter")


def stat_line(path: str, kind: str = "-") -> str:
    return f"user=root group=root mode={kind}rw-r--r-- atime=0 mtime=0 ctime=0 size=1 '{path}'"


def deployed_box(served=None, server_hash=None, env_applied=None, managed=(), gpu_answer=AMPERE,
                 running_image=IMAGE_ID) -> tuple[dict, dict]:
    """Host data whose fake facts describe a box serving what the settings declare, with changes.

    The box serves in the dtype preflight resolves from `gpu_answer` (nvidia-smi's, recorded), in a container
    of `running_image` (an image id; the settings' image is IMAGE_ID on the box).
    """
    data = {**group_data("gpu"), "adapters": ADAPTERS, "endpoint_host": "function-gemma-server"}
    s = build_settings(data, Secrets(hf_token=HF_TOKEN, api_key=API_KEY))
    s = replace(s, served_dtype=gpu.choose_dtype(s.dtype, s.profile, gpu.parse_query([gpu_answer])).dtype)
    p = stack.paths(s)
    versions = {a.name: f"{a.source}@{a.revision}" for a in s.adapters}
    files = {p.compose_file: serving_plan.render_compose(s), p.manifest: serving_plan.render_manifest(s, versions)}
    served = {n: versions[n] for n in versions} if served is None else served
    responses = {
        **FIRST_TIME_BOX,
        f"docker image inspect --format '{{{{.Id}}}}' {stack.serving_image(s)}": [IMAGE_ID],
        "nvidia-smi": [gpu_answer, "gpu=ok"],
        "docker inspect --format '{{.State.Status}}": [
            f"state=running|healthy|2026-11-27T00:00:00.0Z|container:gw|{server_hash or serving_plan.server_hash(s)}|{running_image}",
            "gateway=gw|2026-11-26T00:00:00.0Z",
            "served=" + json.dumps({"served": sorted(served), "applied": served}),
        ],
        f"cat {p.env_applied}": [env_applied or hashing.sha1_hex(stack.render_env_file(s))],
        "-name .lorafleet-source": list(managed),
    }
    for name in versions:
        responses[f"cat {s.adapter_dir(name)}/.lorafleet-source"] = [versions[name]]
    responses[f"cat {s.base_model_dir}/.lorafleet-source"] = [f"{s.base_model}@{s.base_model_revision}"]
    for folder in (p.stack_dir, p.serve_dir):
        responses[f"test -e {folder} || test -L {folder} ) || ( stat"] = [stat_line(folder, "d")]
    for path, text in files.items():
        responses[f"test -e {path} || test -L {path} ) || ( stat"] = [stat_line(path)]
        responses[f"sha1sum {path} 2>"] = [f"{hashing.sha1_hex(text)}  {path}"]
    data.update(fake_delay=0, fake_delay_jitter=0, fake_responses=responses)
    return data, versions


def run_deploy(tmp_path, data: dict, *args: str, file: str = "deploy.py", secrets: bool = True) -> subprocess.CompletedProcess:
    """Run the deploy (or another deploy file: remove.py) against the fake box, not dry, with pyinfra's JSON results
    on stdout; `secrets=False`: no HF_TOKEN or API key in the environment."""
    overrides = {k: v for k, v in data.items() if k not in group_data("gpu") or group_data("gpu")[k] != v}
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"gpu = [({HOST!r}, {overrides!r})]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "LORAFLEET_API_KEY", "VLLM_API_KEY")}
    env.update({"HF_TOKEN": HF_TOKEN, "LORAFLEET_API_KEY": API_KEY} if secrets else {})
    env.update(LORAFLEET_STATE_DIR=str(tmp_path / "state"), LORAFLEET_SECRETS_FILE=str(tmp_path / "none.env"))
    return subprocess.run([sys.executable, "-m", "pyinfra", "-y", "--json", "-vvv", "--diff", str(inventory), file, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def deploy(tmp_path, data: dict, *args: str, ok: bool = True, **run) -> tuple[dict[str, bool], str]:
    """Run the deploy (not dry) against the fake box; the operations that ran, and all output.

    `ok=False`: the deploy must fail (its output then holds why; no operation ran). `run`: run_deploy's keywords.
    """
    result = run_deploy(tmp_path, data, *args, **run)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) is ok, output[-4000:]
    if not ok:
        return {}, output
    ran = {}
    for op in json.loads(result.stdout)["results"]["operations"]:
        ran[op["name"]] = bool(op["success"])
    return ran, output


START = "bash /opt/lorafleet/bin/start.sh"
CHECK = "docker run --rm --network none --gpus all"  # the image check (check_image.py) in a throwaway container
CHECK_OP = "Check that vllm/vllm-openai:v0.32.0 imports the plugins and renders the chat template"
SYNC = "docker exec lorafleet-vllm python3 /lorafleet/sync_adapters.py"


def executed(output: str, command: str) -> list[str]:
    """The commands the deploy ran (facts included) that start with `command`."""
    return [line.split(">>> ", 1)[1] for line in output.splitlines() if ">>> " in line
            and line.split(">>> ", 1)[1].startswith(command)]


def test_nothing_changed_changes_nothing_that_serves(tmp_path):
    ran, output = deploy(tmp_path, deployed_box()[0])
    assert not any(ran.get(op) for op in SERVING_OPS), {op: ran.get(op) for op in SERVING_OPS}
    assert not executed(output, START) and not executed(output, SYNC)
    assert CHECK_OP not in ran and not executed(output, CHECK), "no cost when nothing changes"


def test_the_deploy_lock_is_taken_and_released_without_counting_as_a_change(tmp_path):
    ran, output = deploy(tmp_path, deployed_box()[0])
    # Molecule's idempotence check counts changed operations: the lock is bookkeeping, not one of them.
    assert ran["Take the deploy lock"] is False and ran["Release the deploy lock"] is False
    [taken] = executed(output, "bash -s -- acquire /opt/lorafleet/deploy.lock 600 ")
    [released] = executed(output, "bash -s -- release /opt/lorafleet/deploy.lock ")
    assert taken.split(" 600 ", 1)[1] == released.split("deploy.lock ", 1)[1], "released by the owner that took it"
    started = [line.split("Starting operation: ", 1)[1].strip() for line in output.splitlines() if "Starting operation: " in line]
    assert (started[0], started[-1]) == ("Take the deploy lock", "Release the deploy lock")
    commands = [line.split(">>> ", 1)[1] for line in output.splitlines() if ">>> " in line]
    assert commands[-1] == released, "released after everything else"


def test_a_lock_held_by_another_deploy_stops_before_any_change_naming_the_holder(tmp_path):
    data, _ = deployed_box(server_hash="an-older-server")
    held = ["lorafleet: the deploy lock is held by bob@laptop-b pid 200 since 2026-11-27T00:00:05Z.",
            "lorafleet:     pyinfra inventory.py deploy.py --data break_deploy_lock=True"]
    data["fake_responses"] = {"bash -s -- acquire": {"success": False, "stderr": held}, **data["fake_responses"]}
    result = run_deploy(tmp_path, data)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "held by bob@laptop-b pid 200" in output and "break_deploy_lock=True" in output
    # Asked once with the wait, then once more without it to fail with the reason; nothing after it ran.
    tries = executed(output, "bash -s -- acquire")
    assert [t.split()[5] for t in tries] == ["600", "0"]
    assert not executed(output, START) and not executed(output, "bash -s -- release")


def test_stale_server_starts_vllm_without_forcing(tmp_path):
    ran, output = deploy(tmp_path, deployed_box(server_hash="an-older-server")[0])
    [start] = executed(output, START)
    assert "--force-recreate" not in start
    assert not executed(output, CHECK), "the same image: nothing to check"


def test_a_new_image_is_checked_before_anything_of_the_server_changes(tmp_path):
    # The settings name another image than the one the container runs (its server hash changed with it).
    ran, output = deploy(tmp_path, deployed_box(server_hash="an-older-server", running_image="sha256:old")[0])
    [check] = executed(output, CHECK)
    assert "--entrypoint python3 vllm/vllm-openai:v0.32.0 /lorafleet/check_image.py --image vllm/vllm-openai:v0.32.0" in check
    assert "-v /opt/lorafleet/serve:/lorafleet:ro" in check
    commands = [line.split(">>> ", 1)[1] for line in output.splitlines() if ">>> " in line]
    [start] = executed(output, START)
    assert commands.index(check) < commands.index(start)
    names = list(ran)
    assert names.index(CHECK_OP) < names.index("Write the adapter manifest") < names.index(
        "Render the serving compose project") < names.index(SERVING_OPS[0])
    assert "vLLM will run an image it does not run now" in output


def test_a_failed_image_check_stops_the_deploy_before_start_sh_naming_plugin_error_and_image(tmp_path):
    data, _ = deployed_box(server_hash="an-older-server", running_image="sha256:old")
    refusal = ["lorafleet: FAILED in vllm/vllm-openai:v0.32.0: tool parser plugin /lorafleet/functiongemma_tool_parser.py: "
               "does not import: ModuleNotFoundError: No module named 'vllm.tool_parsers'",
               "lorafleet: the image vllm/vllm-openai:v0.32.0 cannot serve what this deploy ships"]
    data["fake_responses"] = {"/lorafleet/check_image.py --image": {"success": False, "stdout": refusal},
                              **data["fake_responses"]}
    result = run_deploy(tmp_path, data)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert refusal[0] in output and refusal[1] in output
    commands = [line.split(">>> ", 1)[1] for line in output.splitlines() if ">>> " in line]
    assert commands[-1].startswith(CHECK), "nothing ran after the check"
    assert not executed(output, START) and not executed(output, SYNC)


def test_a_start_on_the_same_image_after_a_refused_one_checks_nothing_and_a_rollback_checks_again(tmp_path):
    # A refused check or a rolled-back start left the old image running: the next deploy checks the new one again.
    ran, output = deploy(tmp_path, deployed_box(server_hash="server-last-good", running_image="sha256:old")[0])
    assert len(executed(output, CHECK)) == 1 and executed(output, START)
    # The container already runs the settings' image (its start failed for another reason): no check.
    ran, output = deploy(tmp_path, deployed_box(server_hash="server-last-good")[0])
    assert not executed(output, CHECK) and executed(output, START)


def test_cpu_image_is_pulled_never_built_and_checked_before_the_first_start(tmp_path):
    data = {**group_data("local"), "cpu_image": "lorafleet/vllm-cpu:0.33.0-mine", "fake_delay": 0, "fake_delay_jitter": 0,
            "fake_responses": FIRST_TIME_BOX}
    ran, output = deploy(tmp_path, data)
    names = list(ran)
    assert "Pull the serving image lorafleet/vllm-cpu:0.33.0-mine" in names
    assert not [name for name in names if name.startswith(("Build the serving image", "Upload the CPU image"))]
    check = "Check that lorafleet/vllm-cpu:0.33.0-mine imports the plugins and renders the chat template"
    assert names.index(check) < names.index(SERVING_OPS[0])
    [command] = [c for c in executed(output, "docker run --rm --network none") if "check_image.py" in c]
    assert "--gpus" not in command and "lorafleet/vllm-cpu:0.33.0-mine /lorafleet/check_image.py" in command


def test_rotated_key_recreates_vllm(tmp_path):
    ran, output = deploy(tmp_path, deployed_box(env_applied="0" * 40)[0])
    [start] = executed(output, START)
    assert "--force-recreate" in start


def test_adapter_drift_syncs_without_a_start(tmp_path):
    data, versions = deployed_box()
    data, _ = deployed_box(served={"sql": versions["sql"]})
    ran, output = deploy(tmp_path, data)
    assert not executed(output, START)
    assert executed(output, SYNC) == [SYNC, SYNC + " --verify"]


def test_prune_on_deletes_only_undeclared_managed_folders(tmp_path):
    data, _ = deployed_box(managed=["sql", "old-adapter"])
    data["prune_adapters"] = True
    ran, output = deploy(tmp_path, data)
    assert ran.get("Prune undeclared adapter folder old-adapter")
    assert not [name for name in ran if name.startswith("Prune") and "old-adapter" not in name]


@pytest.mark.parametrize("case", ["fresh", "rotated"])
def test_no_secret_in_the_output_of_a_real_run_at_the_highest_verbosity(tmp_path, case):
    data = deployed_box(env_applied="0" * 40)[0] if case == "rotated" else {
        **group_data("gpu"), "fake_delay": 0, "fake_delay_jitter": 0,
        "fake_responses": FIRST_TIME_BOX}
    ran, output = deploy(tmp_path, data)
    assert ran["Upload the secrets env file (0600)"] or case == "rotated"
    for secret in (HF_TOKEN, API_KEY):
        assert secret not in output


def test_a_storage_root_that_links_into_a_system_or_secrets_folder_is_refused_before_anything(tmp_path):
    data, _ = deployed_box()
    # realpath -m on the box: adapters_root is a link to /etc/lorafleet, cache_root one into /root/.ssh.
    data["fake_responses"]["realpath -m -- "] = [
        "/mnt/d/AI_Models/base", "/etc/lorafleet", "/root/.ssh/cache", "/opt/lorafleet"]
    _, output = deploy(tmp_path, data, ok=False)
    assert "preflight failed (nothing was changed)" in output and "Take the deploy lock" not in output
    assert ("adapters_root=/mnt/e/AI_Models/adapters resolves on the host to /etc/lorafleet (through a link), "
            "which is a system folder the deploy would write into") in output
    assert "cache_root=/mnt/d/AI_Models/cache resolves on the host to /root/.ssh/cache" in output
    assert "models_root=" not in output.split("preflight failed", 1)[1] and "stack_dir=" not in output.split("preflight failed", 1)[1]
