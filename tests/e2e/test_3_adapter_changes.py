"""Adapters come and go with zero downtime, on the real CPU stack of the SSH scenario."""

from __future__ import annotations

import json
import shutil
import time

import openai
import pytest
import requests

from tests.support.load import BackgroundLoad
from tests.support.scenario import API_KEY, sh


@pytest.fixture(scope="module")
def stack(adapters_restored):
    return adapters_restored


@pytest.fixture(scope="module")
def demo(stack) -> dict:
    manifest = json.loads((stack.models_root / "lorafleet-demo" / "demo.json").read_text())
    return {a["name"]: a for a in manifest["adapters"]}


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.endpoint, api_key=API_KEY, max_retries=0, timeout=120)


def laptop_copy(stack, demo_name: str, folder: str) -> str:
    """A copy of a built demo adapter in a laptop folder, as a user's freshly trained adapter."""
    dest = stack.dir / "laptop" / folder
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(stack.models_root / "lorafleet-demo" / "adapters" / demo_name, dest)
    return str(dest)


def called_function(client, model: str, tool: dict) -> str | None:
    choice = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Do the thing for me."}],
        tools=[tool], max_tokens=48, temperature=0,
    ).choices[0]
    calls = choice.message.tool_calls or []
    return calls[0].function.name if calls else None


def served_adapters(stack) -> set[str]:
    models = requests.get(f"{stack.endpoint}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    return {m["id"] for m in models["data"] if m.get("parent")}


def deploy_under_load(stack, adapters: list[dict], check: bool = True) -> tuple[dict, BackgroundLoad]:
    """Change the declared adapters and deploy while the original adapters take steady traffic."""
    stack.write_inventory(adapters=adapters)
    # Two clients keep a steady stream on every original adapter; more would only slow the 2-core CI machine.
    with BackgroundLoad(stack.endpoint, API_KEY, [a["name"] for a in stack.declared], workers=2) as load:
        time.sleep(2)
        payload = stack.deploy(check=check)
        time.sleep(2)
    stack.report(f"[e2e adapters] background load: {load.summary()}")
    return payload, load


def test_add_an_adapter_under_load_without_restart(stack, client, demo):
    started = stack.vllm_started_at()
    added = {"name": "extra", "path": laptop_copy(stack, "email", "extra")}
    _, load = deploy_under_load(stack, [*stack.declared, added])
    assert load.ok > 0 and load.failed == 0, load.summary()
    assert stack.vllm_started_at() == started, "adding an adapter restarted vLLM"
    assert called_function(client, "extra", demo["email"]["tool"]) == demo["email"]["function"]


def test_update_an_adapter_answers_with_its_new_weights(stack, client, demo):
    started = stack.vllm_started_at()
    folder = stack.dir / "laptop" / "extra"
    new = stack.models_root / "lorafleet-demo" / "adapters" / "weather"
    for f in new.iterdir():
        shutil.copy(f, folder / f.name)
    _, load = deploy_under_load(stack, [*stack.declared, {"name": "extra", "path": str(folder)}])
    assert load.ok > 0 and load.failed == 0, load.summary()
    assert stack.vllm_started_at() == started, "updating an adapter restarted vLLM"
    assert called_function(client, "extra", demo["weather"]["tool"]) == demo["weather"]["function"]


def test_remove_an_adapter_unloads_it_and_keeps_its_files(stack, client):
    started = stack.vllm_started_at()
    _, load = deploy_under_load(stack, stack.declared)
    assert load.ok > 0 and load.failed == 0, load.summary()
    assert stack.vllm_started_at() == started, "removing an adapter restarted vLLM"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="extra", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert (stack.dir / "adapters" / "extra" / "adapter_config.json").is_file(), "prune is off: files must stay"


def test_a_restart_restores_the_declared_set(stack):
    stack.write_inventory(adapters=[*stack.declared, {"name": "extra", "path": str(stack.dir / "laptop" / "extra")}])
    stack.deploy()
    with stack.phase("docker restart"):
        sh("docker", "restart", stack.vllm_container(), timeout=120)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            health = sh("docker", "inspect", "--format", "{{.State.Health.Status}}", stack.vllm_container()).stdout.strip()
            if health == "healthy":
                break
            time.sleep(3)
    assert served_adapters(stack) == {a["name"] for a in stack.declared} | {"extra"}


def broken(stack, kind: str) -> str:
    folder = laptop_copy(stack, "sql", f"broken-{kind}")
    config_path = f"{folder}/adapter_config.json"
    config = json.load(open(config_path))
    if kind == "rank":
        config["r"] = 64
    elif kind == "base":
        config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"
    elif kind == "lm_head":
        config["target_modules"] = [*config["target_modules"], "lm_head"]
    elif kind == "weights":
        with open(f"{folder}/adapter_model.safetensors", "r+b") as f:
            f.truncate(100)
    json.dump(config, open(config_path, "w"))
    return folder


@pytest.mark.parametrize("kind,message", [
    ("rank", "above max_lora_rank"),
    ("weights", "corrupt"),
    ("base", "trained on base_model_name_or_path"),
    ("lm_head", "lm_head"),
])
def test_a_broken_adapter_is_refused_and_the_others_keep_serving(stack, kind, message):
    started = stack.vllm_started_at()
    before = served_adapters(stack)
    bad = {"name": f"bad-{kind}", "path": broken(stack, kind)}
    payload, load = deploy_under_load(stack, [*stack.declared, bad], check=False)
    assert payload["returncode"] != 0, f"a {kind} adapter was accepted"
    assert f"name='bad-{kind}'" in payload["output"] and message in payload["output"], payload["output"][-3000:]
    assert load.failed == 0, load.summary()
    assert served_adapters(stack) == before and stack.vllm_started_at() == started
    assert not (stack.dir / "adapters" / f"bad-{kind}").exists(), "a refused adapter must not reach the host"


def test_an_engine_change_that_cannot_become_healthy_is_rolled_back(stack):
    stack.write_inventory(adapters=stack.declared)
    stack.deploy()
    good = (stack.dir / "stack" / "compose.yaml").read_text()
    stack.write_inventory(extra_vllm_args=["--no-such-flag-from-lorafleet-tests"])
    with stack.phase("failed engine change + rollback"):
        payload = stack.deploy(check=False)
    assert payload["returncode"] != 0
    assert "rolling back" in payload["output"] and "rolled back" in payload["output"], payload["output"][-4000:]
    assert (stack.dir / "stack" / "compose.yaml").read_text() == good
    assert (stack.dir / "stack" / "compose.failed.yaml").is_file()
    assert served_adapters(stack) == {a["name"] for a in stack.declared}
    stack.write_inventory(extra_vllm_args=[])
    # The failed deploy stopped before it released the deploy lock: the next deploy from this laptop sees that
    # process is gone and breaks the lock; nothing else changes, the declared good state is what runs.
    assert stack.changed_operations(stack.deploy()) == ["Break the deploy lock"]
