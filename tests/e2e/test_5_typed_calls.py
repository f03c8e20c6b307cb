"""Every FunctionGemma value type arrives typed, through the real server, its tool parser and the openai client;
an OpenAI agent loop (a tool result sent by its id alone) gets the next turn."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from tests.support.scenario import API_KEY
from tests.support.streams import join_stream


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
    content, calls = join_stream(ask(client, alarm, stream=True))
    assert not content.strip()
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("set_alarm", alarm["arguments"])]


# --- an ordinary OpenAI agent loop: call, tool result (tool_call_id only), the model's next turn ------------------
DEVELOPER = {"role": "developer", "content": "You are a model that can do function calling with the following functions"}


def turn(client, alarm, messages, stream: bool) -> tuple[str, list[dict]]:
    """The model's turn as content and calls ({id, name, arguments}), joined from the deltas when streamed."""
    answer = client.chat.completions.create(model="alarm", messages=messages, tools=[alarm["tool"]], max_tokens=160,
                                            temperature=0, stream=stream)
    if stream:
        return join_stream(answer)
    message = answer.choices[0].message
    return message.content or "", [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                                   for c in message.tool_calls or []]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_agent_loop_sends_a_tool_result_by_id_and_gets_the_next_turn(ssh_stack, client, alarm, stream):
    messages = [DEVELOPER, {"role": "user", "content": "Wake me up for the gym."}]
    _, [first] = turn(client, alarm, messages, stream)
    assert (first["name"], json.loads(first["arguments"])) == ("set_alarm", alarm["arguments"])  # null included
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": first["id"], "type": "function", "function": {"name": first["name"], "arguments": first["arguments"]}}]},
        # what an OpenAI client sends: no name; FunctionGemma's template refuses that without the server's middleware
        {"role": "tool", "tool_call_id": first["id"], "content": "alarm set for 07:00"},
    ]
    # served (without the name, the template would refuse it: a 400), and answered in text as FunctionGemma does
    content, calls = turn(client, alarm, messages, stream)
    assert (content, calls) == (alarm["after_result"], [])
    # the template saw the result named after the call it answers (vLLM's /tokenize renders the same prompt)
    base = ssh_stack.endpoint.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    tokens = requests.post(f"{base}/tokenize", json={"model": "alarm", "messages": messages, "tools": [alarm["tool"]],
                                                     "add_generation_prompt": True}, headers=headers, timeout=60)
    assert tokens.status_code == 200, tokens.text
    prompt = requests.post(f"{base}/detokenize", json={"model": "alarm", "tokens": tokens.json()["tokens"]},
                           headers=headers, timeout=60).json()["prompt"]
    assert "<end_function_call><start_function_response>response:set_alarm{value:<escape>alarm set for 07:00<escape>}" \
        "<end_function_response>" in prompt, prompt
    ssh_stack.report(f"[e2e ssh] agent loop ({'streamed' if stream else 'whole'}): result named set_alarm by its id; "
                     f"next turn {content[:60]!r}, calls {[c['name'] for c in calls]}")


def test_a_tool_result_that_answers_no_call_is_a_clear_400(client, alarm):
    messages = [DEVELOPER, {"role": "user", "content": "Wake me up."},
                {"role": "tool", "tool_call_id": "call_nowhere", "content": "done"}]
    with pytest.raises(openai.BadRequestError, match="messages\\[2\\]: tool_call_id 'call_nowhere' answers no call"):
        client.chat.completions.create(model="alarm", messages=messages, tools=[alarm["tool"]], max_tokens=16)
