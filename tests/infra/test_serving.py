"""Checks of a deployed host: containers, GPU, health, models, adapters, metrics, network door."""

from __future__ import annotations

import json

import pytest
import requests

LOGS_HINT = "look at `docker logs {c}` on the host"


def inspect(host, name: str) -> dict:
    result = host.run(f"docker inspect {name}")
    assert result.rc == 0, f"container {name} does not exist on the host: run the deploy ({result.stderr.strip()})"
    return json.loads(result.stdout)[0]


def test_serving_container_is_running_and_healthy(host, container):
    state = inspect(host, container)["State"]
    assert state["Status"] == "running", f"{container} is {state['Status']}: {LOGS_HINT.format(c=container)}"
    assert state.get("Health", {}).get("Status") == "healthy", (
        f"{container} is not healthy ({state.get('Health', {}).get('Status')}): {LOGS_HINT.format(c=container)}"
    )


def test_gpu_is_visible_inside_the_vllm_container(host, target, container, record_property):
    if target.settings.profile != "cuda":
        pytest.skip(f"profile is {target.settings.profile!r}: no GPU to check (the cpu profile serves on the CPU)")
    result = host.run(f"docker exec {container} nvidia-smi --query-gpu=name,memory.total --format=csv,noheader")
    assert result.rc == 0, (
        f"nvidia-smi failed inside {container}: {result.stderr.strip()}; check NVIDIA's Windows driver and Docker "
        "Desktop's GPU support, then redeploy"
    )
    gpus = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert gpus, f"no GPU listed inside {container}"
    record_property("gpus", "; ".join(gpus))
    print(f"GPU in {container}: {'; '.join(gpus)}")


def test_health_answers(base_url):
    response = requests.get(f"{base_url}/health", timeout=30)
    assert response.status_code == 200, f"{base_url}/health answered {response.status_code}"


def test_models_lists_the_base_and_every_adapter(models, target):
    s = target.settings
    assert s.served_model_name in models, f"base {s.served_model_name!r} not served; served: {sorted(models)}"
    declared = {a.name for a in s.adapters}
    missing = declared - set(models)
    assert not missing, f"declared adapters not served: {sorted(missing)}; rerun the deploy or check `docker logs`"
    for name in declared:
        parent = getattr(models[name], "parent", None)
        assert parent == s.served_model_name, f"adapter {name} has parent {parent!r}, expected {s.served_model_name!r}"


def _tools(function: str) -> list[dict]:
    return [{"type": "function", "function": {"name": function, "description": f"Call {function}",
             "parameters": {"type": "object", "properties": {}}}}]


def _ask(client, model: str, tools=None):
    kwargs = {"tools": tools} if tools else {}
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Please handle my request."}],
        max_tokens=256, temperature=0, **kwargs,  # room for a call with many arguments (the alarm adapter)
    ).choices[0]


def test_adapter_answers_through_the_openai_client(client, adapter):
    choice = _ask(client, adapter)
    assert choice.message.content or choice.message.tool_calls, f"adapter {adapter} gave an empty answer"


def test_adapter_is_really_applied(client, target, adapter, demo_manifest):
    if demo_manifest is not None:
        expected = {a["name"]: a for a in demo_manifest["adapters"]}[adapter]
        choice = _ask(client, adapter, _tools(expected["function"]))
        calls = choice.message.tool_calls or []
        assert calls, f"adapter {adapter} answered {choice.message.content!r} instead of a call to {expected['function']}"
        assert calls[0].function.name == expected["function"], (
            f"adapter {adapter} called {calls[0].function.name}, expected its own {expected['function']}"
        )
        print(f"{adapter}: {calls[0].function.name}({calls[0].function.arguments})")
        return
    base = _ask(client, target.settings.served_model_name)
    mine = _ask(client, adapter)
    assert (mine.message.content, mine.message.tool_calls) != (base.message.content, base.message.tool_calls), (
        f"adapter {adapter} answers exactly like the base: it may not be applied (check its weights are not zero)"
    )


def test_metrics_report_lora_state(metrics_text):
    assert "vllm:lora_requests_info" in metrics_text, "/metrics has no vllm:lora_requests_info: is --enable-lora set?"


def test_endpoint_is_reachable_only_through_its_door(host, target, container):
    s = target.settings
    vllm = inspect(host, container)["HostConfig"]
    if s.network_mode == "publish":
        bindings = [b["HostIp"] for b in (vllm.get("PortBindings") or {}).get(f"{s.port}/tcp", [])]
        assert bindings == [s.publish_address], f"vLLM is published on {bindings}, expected only {s.publish_address}"
        return
    assert not vllm.get("PortBindings"), f"{container} publishes ports itself: {vllm['PortBindings']}"
    gateway = inspect(host, s.gateway_container)
    assert vllm["NetworkMode"] == f"container:{gateway['Id']}", (
        f"{container} is not in the gateway's network namespace ({vllm['NetworkMode']}): rerun the deploy"
    )
    published = (gateway["HostConfig"].get("PortBindings") or {}).get(f"{s.port}/tcp") or []
    exposed = [b["HostIp"] for b in published if b.get("HostIp") not in ("127.0.0.1", "::1")]
    assert not exposed, f"the gateway publishes port {s.port} on {exposed}: the endpoint must be tailnet-only"
