"""Upgrading vLLM without losing the server, on the real CPU stack of the SSH scenario.

The deploy checks a new image before vLLM moves to it (files/serving/check_image.py in a throwaway
container). Here the image is built FROM the stack's serving image with vLLM's `tool_parsers` module
moved, as a release that moves it would: vLLM itself still imports, the tool parser plugin does not.
Pointed at it (`cpu_image`), the deploy is refused before the manifest, the compose file or the
container change, naming the plugin, the error and the image, while the old server keeps answering.
"""

from __future__ import annotations

import os

import pytest
import requests

from tests.support.load import BackgroundLoad
from tests.support.scenario import API_KEY, sh

# A layer that moves vllm.tool_parsers to vllm.tool_parsing, and every reference in vLLM with it.
MOVED_VLLM = r"""
FROM {base}
RUN set -e; d="$(python3 -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("vllm").origin))')"; \
    grep -rlZ --include='*.py' 'vllm\.tool_parsers' "$d" | xargs -0 sed -i 's/vllm\.tool_parsers/vllm.tool_parsing/g'; \
    mv "$d/tool_parsers" "$d/tool_parsing"; \
    python3 -c 'import vllm.entrypoints.launchers.cli_args, vllm.tool_parsing.abstract_tool_parser'
"""
CHECK_OP = "Check that {image} imports the plugins and renders the chat template"
# What the serving step changes after the check: none of it may run when the check fails.
SERVER_OPS = ("Write the adapter manifest", "Render the serving compose project",
              "Start vLLM and wait for /health (rolls back on failure)",
              "Bring the served adapters to the manifest (no restart)")


@pytest.fixture(scope="module")
def stack(ssh_stack):
    yield ssh_stack
    ssh_stack.write_inventory(cpu_image=None)  # the stack's own image again, for the modules after this one


@pytest.fixture(scope="module")
def serving_image(stack) -> str:
    return sh("docker", "inspect", "--format", "{{.Config.Image}}", stack.vllm_container()).stdout.strip()


@pytest.fixture(scope="module")
def moved_image(stack, serving_image):
    """The stack's serving image with vLLM's tool_parsers moved; removed by its id afterwards."""
    tag = f"lorafleet/e2e-vllm-moved:{stack.run_id}"
    with stack.phase("build an image whose vLLM moved tool_parsers"):
        built = sh("docker", "build", "-q", "-t", tag, "-", input=MOVED_VLLM.format(base=serving_image),
                   env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=1200)
    image_id = built.stdout.split()[-1]
    assert image_id.startswith("sha256:"), built.stdout
    yield tag
    sh("docker", "image", "rm", image_id, check=False)


def served_adapters(stack) -> set[str]:
    models = requests.get(f"{stack.endpoint}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    return {m["id"] for m in models["data"] if m.get("parent")}


def container(stack) -> dict:
    """What identifies the running vLLM: its container, image and start time."""
    fields = sh("docker", "inspect", "--format", "{{.Id}} {{.Image}} {{.State.StartedAt}}", stack.vllm_container())
    return dict(zip(("id", "image", "started"), fields.stdout.split()))


def test_the_first_deploy_checked_the_real_image_and_it_passed(stack, serving_image):
    # The converge started vLLM on an image it did not run yet: the check ran there first, in the real image.
    assert CHECK_OP.format(image=serving_image) in stack.changed_operations(stack.first_deploy)


def test_an_image_whose_vllm_moved_what_the_plugin_imports_is_refused_before_any_change(stack, moved_image):
    stack.deploy()  # the declared state, whatever the modules before left
    before, served = container(stack), served_adapters(stack)
    files = {name: stack.dir / "stack" / name for name in ("compose.yaml", "compose.last-good.yaml", "compose.failed.yaml",
                                                          "serve/adapters.json")}
    contents = {name: path.read_bytes() if path.exists() else None for name, path in files.items()}
    stack.write_inventory(cpu_image=moved_image)
    with BackgroundLoad(stack.endpoint, API_KEY, sorted(served), workers=2) as load:
        with stack.phase("a moved vLLM refused"):
            payload = stack.deploy(check=False)
    output = payload["output"]
    stack.report(f"[e2e image check] background load: {load.summary()}")

    assert payload["returncode"] != 0, output[-4000:]
    assert (f"FAILED in {moved_image}: tool parser plugin /lorafleet/functiongemma_tool_parser.py: does not import: "
            "ModuleNotFoundError: No module named 'vllm.tool_parsers'") in output, output[-4000:]
    assert "of functiongemma_tool_parser.py: from vllm.tool_parsers" in output, "the plugin's line that failed"
    assert f"the image {moved_image} cannot serve what this deploy ships" in output
    started = [line.split("Starting operation: ", 1)[1].strip() for line in output.splitlines() if "Starting operation: " in line]
    assert started[-1] == CHECK_OP.format(image=moved_image), "the deploy stopped at the check"
    assert not set(started) & set(SERVER_OPS)
    # The running server: the same container, image and start, its files as they were, every request answered.
    assert container(stack) == before
    assert {name: path.read_bytes() if path.exists() else None for name, path in files.items()} == contents
    assert load.ok > 0 and load.failed == 0, load.summary()
    assert served_adapters(stack) == served


def test_the_image_that_serves_needs_no_check_and_no_restart(stack):
    before = container(stack)
    stack.write_inventory(cpu_image=None)
    payload = stack.deploy()
    # The refused deploy stopped holding the lock (broken now: its process is gone) and had rewritten the demo model's
    # inputs marker and the demo adapters' source markers for the moved image (both hash the image the demo is built
    # in; the build found the model up to date): they are written back, the same files at the version vLLM serves.
    # Nothing that serves changes.
    demo_installs = {f"Install demo adapter {name}" for name in served_adapters(stack)}
    assert set(stack.changed_operations(payload)) <= {"Break the deploy lock", "Build the demo model and adapters",
                                                      *demo_installs}
    assert not [op for op in stack.changed_operations(payload) if op.startswith("Check that")]
    assert container(stack) == before
