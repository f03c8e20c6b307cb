"""remove.py on the local target: deploy, remove (the port free, the containers gone, models, adapters and
caches kept), remove again (0 changed), purge two roots (only what the deploy put there goes), purge again.

The scenario has a cache root of its own (`own_cache`), since it purges it; the models root is the one
shared with other runs (the demo model, a cache keyed by its inputs), which this module never purges.
"""

from __future__ import annotations

import socket

import pytest
import requests

from tests.support.scenario import API_KEY, converged, sh

PURGE = ("--data", 'remove_purge=["adapters","cache"]')
ADAPTERS = ("weather", "sql", "email", "alarm")  # group_data/local.py's demo adapters


@pytest.fixture(scope="module")
def stack(report):
    with converged("local", report=report, own_cache=True) as scenario:
        scenario.image = sh("docker", "inspect", "--format", "{{.Config.Image}}", scenario.vllm_container()).stdout.strip()
        yield scenario


def labelled(kind: str, project: str) -> list[str]:
    """The project's containers (`ps -a`) or networks (`network ls`), as the engine labels them."""
    command = ["ps", "-aq"] if kind == "containers" else ["network", "ls", "-q"]
    return sh("docker", *command, "--filter", f"label=com.docker.compose.project={project}").stdout.split()


def answers(stack) -> bool:
    try:
        return requests.get(stack.endpoint.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_remove_gives_the_port_back_and_keeps_models_adapters_and_caches(stack):
    assert answers(stack) and labelled("containers", stack.project), "the deploy serves before the removal"
    with stack.phase("remove"):
        payload = stack.remove()
    changed = stack.changed_operations(payload)
    stack.report(f"[e2e local] remove: {len(changed)} changed operations")
    assert f"Stop and remove the serving stack (frees port {stack.data['port']})" in changed, changed
    assert labelled("containers", stack.project) == [] and labelled("networks", stack.project) == []
    assert not answers(stack) and port_is_free(stack.data["port"])
    roots = stack.host_roots
    assert (roots["models_root"] / "lorafleet-demo" / ".lorafleet-inputs").is_file()
    for name in ADAPTERS:
        assert (roots["adapters_root"] / name / ".lorafleet-source").is_file(), name
    assert (roots["cache_root"] / "huggingface").is_dir() and (roots["cache_root"] / "vllm").is_dir()
    assert not (roots["stack_dir"] / "compose.yaml").exists() and not (roots["stack_dir"] / "secrets" / "serving.env").exists()
    assert stack.files_containing(API_KEY) == [], "the key went with the secrets env file"
    assert sh("docker", "image", "inspect", stack.image, check=False).returncode == 0, "the image stays"


def test_a_second_remove_changes_nothing(stack):
    changed = stack.changed_operations(stack.remove())
    stack.report(f"[e2e local] remove again: {len(changed)} changed operations {changed}")
    assert changed == []


def test_purge_empties_only_the_named_roots_of_what_the_deploy_put_there(stack):
    roots = stack.host_roots
    with stack.phase("purge"):
        changed = stack.changed_operations(stack.remove(*PURGE))
    assert changed == [f"Purge adapters_root: what the deploy put in {roots['adapters_root']}",
                       f"Purge cache_root: what the deploy put in {roots['cache_root']}"]
    assert roots["adapters_root"].is_dir() and sorted(p.name for p in roots["adapters_root"].iterdir()) == []
    assert roots["cache_root"].is_dir()
    assert not (roots["cache_root"] / "huggingface").exists() and not (roots["cache_root"] / "vllm").exists()
    assert (roots["models_root"] / "lorafleet-demo" / ".lorafleet-inputs").is_file(), "models were not named"


def test_a_second_purge_changes_nothing(stack):
    changed = stack.changed_operations(stack.remove(*PURGE))
    stack.report(f"[e2e local] purge again: {len(changed)} changed operations {changed}")
    assert changed == []


def test_destroy_leaves_nothing(stack):
    stack.destroy()
    assert stack.leftovers() == []
