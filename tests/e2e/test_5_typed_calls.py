"""Every FunctionGemma value type arrives typed, through the real server, its tool parser and the openai client."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.scenario import API_KEY


@pytest.fixture(scope="module")
def alarm(ssh_stack) -> dict:
    demo = json.loads((ssh_stack.models_root / "lorafleet-demo" / "demo.json").read_text())
    return next(a for a in demo["adapters"] if a["name"] == "alarm")


@pytest.fixture(scope="module")
def client(ssh_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=ssh_stack.endpoint, api_key=API_KEY, max_retries=0, timeout=120)


def ask(client, alarm, stream: bool):
    return client.chat.completions.create(
        model="alarm", messages=[{"role": "user", "content": "Wake me up for the gym."}],
        tools=[alarm["tool"]], max_tokens=160, temperature=0, stream=stream,
    )


def test_non_streaming_call_has_every_value_with_its_type(ssh_stack, client, alarm):
    choice = ask(client, alarm, stream=False).choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    ssh_stack.report(f"[e2e ssh] typed call: {call.function.name}({call.function.arguments})")
    assert call.function.name == "set_alarm"
    assert arguments == alarm["arguments"]
    assert [type(arguments[k]).__name__ for k in ("hour", "volume", "enabled", "label", "days", "snooze", "sound")] == \
        ["int", "float", "bool", "str", "list", "dict", "NoneType"]


def test_streaming_gives_the_same_call_once_the_deltas_are_joined(client, alarm):
    calls: dict[int, dict] = {}
    content = ""
    for chunk in ask(client, alarm, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            entry["name"] += (tc.function and tc.function.name) or ""
            entry["arguments"] += (tc.function and tc.function.arguments) or ""
    assert not content.strip()
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("set_alarm", alarm["arguments"])]
