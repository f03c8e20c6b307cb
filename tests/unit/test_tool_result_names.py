"""Tool results named after the call they answer: the grammar's function and the server's middleware.

The middleware is driven over the ASGI protocol with a recording app standing in for vLLM's API
server (which needs vLLM); the e2e suite runs it inside the real vLLM (test_tool_parser_plugin.py).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lorafleet.deploy.layout import MIDDLEWARE, SERVE_FILES
from lorafleet.functiongemma import ToolResultError, name_tool_results
from tests.support.modules import load_file


def call(call_id: str, name: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


LOOP = [
    {"role": "user", "content": "weather and time in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather"), call("c2", "get_time")]},
    {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
    {"role": "tool", "tool_call_id": "c1", "content": "3 degrees"},
]


def test_each_result_is_named_after_the_call_with_its_id_and_the_input_is_left_alone():
    given = json.loads(json.dumps(LOOP))
    named = name_tool_results(given)
    assert [m.get("name") for m in named] == [None, None, "get_time", "get_weather"]
    assert given == LOOP, "the caller's messages are not changed"


@pytest.mark.parametrize("result", [
    {"role": "tool", "tool_call_id": "c1", "name": "kept", "content": "x"},
    {"role": "tool", "tool_call_id": "zz", "content": {"name": "f", "response": {"ok": True}}},
    {"role": "tool", "content": [{"name": "f", "response": {}}, {"name": "g", "response": {}}]},
])
def test_results_that_name_themselves_need_nothing(result):
    assert name_tool_results(LOOP[:2] + [result]) is None
    assert name_tool_results([{"role": "user", "content": "hi"}]) is None


@pytest.mark.parametrize("result,reason", [
    ({"role": "tool", "tool_call_id": "c9", "content": "x"}, "tool_call_id 'c9' answers no call of an earlier assistant message (their ids: 'c1', 'c2')"),
    ({"role": "tool", "content": "x"}, "a tool result needs 'tool_call_id'"),
    ({"role": "tool", "tool_call_id": "c1", "name": None, "content": "x"}, None),
])
def test_a_result_that_answers_no_call_is_refused_by_its_place(result, reason):
    if reason is None:  # a null name is no name: the call's is used
        assert name_tool_results(LOOP[:2] + [result])[2]["name"] == "get_weather"
        return
    with pytest.raises(ToolResultError, match="^messages\\[2\\]: " + reason.replace("(", "\\(").replace(")", "\\)")):
        name_tool_results(LOOP[:2] + [result])


def test_a_call_later_in_the_conversation_does_not_name_an_earlier_result():
    with pytest.raises(ToolResultError, match="messages\\[1\\]"):
        name_tool_results([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c1", "content": "x"},
                           {"role": "assistant", "tool_calls": [call("c1", "f")]}])


# --- the middleware, over ASGI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def middleware_module():
    return load_file("lorafleet_middleware", SERVE_FILES["lorafleet_middleware.py"])


class RecordingApp:
    """Stands in for vLLM's API server: records the request it is handed and answers 200."""

    def __init__(self):
        self.scope, self.body = None, None

    async def __call__(self, scope, receive, send):
        self.scope, chunks = scope, []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def run(module, body: bytes, path="/v1/chat/completions", chunk=None, headers=()):
    inner = RecordingApp()
    app = module.ToolResultNames(inner)
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]}
    asyncio.run(app(scope, receive, send))
    return inner, sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_middleware_names_results_before_vllm_sees_the_request(middleware_module, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    body = json.dumps({"model": "weather", "messages": LOOP, "stream": True}).encode()
    inner, status, _ = run(middleware_module, body, chunk=50)  # a body in several ASGI messages
    sent = json.loads(inner.body)
    assert status == 200 and [m.get("name") for m in sent["messages"]][2:] == ["get_time", "get_weather"]
    assert {k: v for k, v in sent.items() if k != "messages"} == {"model": "weather", "stream": True}
    assert dict(inner.scope["headers"])[b"content-length"] == str(len(inner.body)).encode()


def test_requests_without_tool_results_and_other_paths_pass_as_they_came(middleware_module):
    plain = json.dumps({"model": "weather", "messages": LOOP[:1]}).encode()
    assert run(middleware_module, plain)[0].body == plain
    unanswered = json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode()
    inner, status, _ = run(middleware_module, unanswered, path="/v1/completions")
    assert (status, inner.body) == (200, unanswered)
    assert run(middleware_module, b"not json, \"tool\"")[0].body == b"not json, \"tool\"", "vLLM answers bad JSON itself"


def test_a_result_that_answers_no_call_gets_a_400_naming_it(middleware_module, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)  # a server without a key: no 401 to leave the request to
    body = json.dumps({"messages": LOOP[:2] + [{"role": "tool", "tool_call_id": "c9", "content": "x"}]}).encode()
    inner, status, answer = run(middleware_module, body)
    error = json.loads(answer)["error"]
    assert (status, inner.body) == (400, None)
    assert error["type"] == "BadRequestError" and error["message"].startswith("messages[2]: tool_call_id 'c9' answers no call")


def test_without_the_key_the_request_goes_on_to_vllm_s_own_401(middleware_module, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-right")
    body = json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode()
    inner, status, _ = run(middleware_module, body, headers=[(b"authorization", b"Bearer sk-wrong")])
    assert (status, inner.body) == (200, body), "handed on unchanged: vLLM's key check answers it"
    inner, status, _ = run(middleware_module, body, headers=[(b"authorization", b"Bearer sk-right")])
    assert (status, inner.body) == (400, None)


def test_the_deploy_ships_the_middleware_and_vllm_can_import_it_by_name():
    module, _, attribute = MIDDLEWARE[0].rpartition(".")
    assert SERVE_FILES[module + ".py"].is_file() and attribute == "ToolResultNames"
