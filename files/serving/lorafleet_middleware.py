"""ASGI middleware vLLM runs in its API server: ``--middleware lorafleet_middleware.ToolResultNames``.

An OpenAI agent loop sends a tool result as ``{"role": "tool", "tool_call_id": ..., "content": ...}``,
without ``name``. FunctionGemma's chat template writes the function's name before each result and
refuses a tool message without one ("Invalid tool response: 'name' must be provided."), so the
second turn of every agent loop would fail. This middleware names each such result after the call
it answers (``lorafleet.functiongemma.name_tool_results``) before vLLM renders the template, and
answers 400 for a result that answers no call.

vLLM 0.32 renders the chat template before any tool-parser hook runs (``adjust_request`` comes
after), and imports ``--middleware`` by name: the entrypoint puts this folder on PYTHONPATH.

Cost: requests other than POST /v1/chat/completions and /tokenize pass untouched; a chat body without a
``"tool"`` in it is read and handed on as it came; only a body with a tool result is decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

try:
    from lorafleet.functiongemma import ToolResultError, name_tool_results
except ImportError:  # in the serving container: functiongemma.py lies beside this file, on PYTHONPATH
    from functiongemma import ToolResultError, name_tool_results

# Where vLLM renders a conversation with the chat template: chat completions, and /tokenize of messages.
CHAT_PATHS = ("/v1/chat/completions", "/tokenize")


class ToolResultNames:
    def __init__(self, app):
        self.app = app
        # vLLM checks the key in a middleware inside this one: a request it will refuse (401) must not
        # get a 400 from here first, so the same check decides whether a bad result is reported.
        key = os.environ.get("VLLM_API_KEY", "")
        self.key_hash = hashlib.sha256(key.encode()).digest() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in CHAT_PATHS:
            await self.app(scope, receive, send)
            return
        received = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if message["type"] != "http.request":  # the client left before the whole body came: vLLM sees it so
            await self.app(scope, _replay(received, receive), send)
            return
        body = b"".join(m.get("body", b"") for m in received)
        if b'"tool"' in body:
            try:
                named = _named(body)
            except ToolResultError as error:
                if self._authorised(scope):
                    await _bad_request(send, str(error))
                    return
                named = None
            if named is not None:
                body = named
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                         + [(b"content-length", str(len(body)).encode())]}
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    def _authorised(self, scope) -> bool:
        if self.key_hash is None:
            return True
        value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self.key_hash)


def _named(body: bytes) -> bytes | None:
    """The body with its tool results named, or None when nothing changes (or vLLM should judge it)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None  # vLLM answers a body that is not JSON itself
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list):
        return None
    named = name_tool_results(messages)
    if named is None:
        return None
    return json.dumps({**payload, "messages": named}, ensure_ascii=False).encode()


def _replay(messages, receive):
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed


async def _bad_request(send, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "BadRequestError", "param": "messages", "code": 400}}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
