"""A trivial OpenAI-compatible responder that answers at once, for testing the operator tools.

It speaks just enough of vLLM's API: ``GET /v1/models`` (base plus adapters,
adapters with ``parent``, ``max_model_len`` on the base), ``POST
/v1/chat/completions`` (streaming or not; an adapter answers with a tool call
when the request declares tools; a prompt and ``max_tokens`` beyond
``max_model_len`` are refused with vLLM's 400), ``POST /tokenize`` (a chat's
prompt tokens, counted as the completions count them), ``GET /metrics`` with the
vLLM 0.32 metric names the tools read, ``/version`` and ``/health``. Its purpose
is to measure the benchmark client's own ceiling: with a server that costs
nothing, whatever rate ``lorafleet bench`` reaches is the client's limit.

It runs on ``aiohttp.web``, binds to loopback only, and exits by itself after
``--max-seconds`` or ``--max-requests``. Tests run it in a thread with
:func:`running_fake_server`; by hand:
``python -m tests.support.fake_server --port 8001 --adapters 8``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from aiohttp import web

DEFAULT_BASE = "fake-functiongemma"


@dataclass
class FakeConfig:
    """How the fake server behaves."""

    base: str = DEFAULT_BASE
    adapters: list[str] = field(default_factory=lambda: ["weather", "sql", "calendar"])
    api_key: str | None = None
    tokens: int = 8
    ttft_ms: float = 0.0
    token_ms: float = 0.0
    tool_parser: bool = True
    broken: set[str] = field(default_factory=set)
    # Tokens an adapter's function call takes: a smaller max_tokens cuts it, and the answer is the unfinished
    # call as text with finish_reason "length", as vLLM's tool parser leaves a call it could not parse.
    call_tokens: int = 1
    max_model_len: int = 32768
    max_seconds: float = 3600.0
    max_requests: int = 10_000_000
    version: str = "0.32.0+fake"


@dataclass
class FakeState:
    """Counters behind ``/metrics``, shaped like vLLM's."""

    started: float = field(default_factory=time.time)
    requests: int = 0
    running: int = 0
    success: dict[str, int] = field(default_factory=dict)
    prefix_queries: int = 0
    prefix_hits: int = 0
    seen_prefixes: set[int] = field(default_factory=set)
    running_adapters: dict[str, int] = field(default_factory=dict)
    lora_stamp: float = 0.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tokens_of(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_tokens(req: dict[str, Any]) -> int:
    """A chat request's prompt length: its messages and its tool declarations, about 4 characters a token."""
    tools = req.get("tools")
    return sum(_tokens_of(json.dumps(m)) for m in req.get("messages") or []) + (_tokens_of(json.dumps(tools)) if tools else 0)


def _fake_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool.get("function", {}).get("parameters", {}) or {}
    props = params.get("properties", {}) or {}
    args: dict[str, Any] = {}
    for name in params.get("required", list(props)):
        spec = props.get(name, {})
        kind = spec.get("type")
        if spec.get("enum"):
            args[name] = spec["enum"][0]
        elif kind in ("integer", "number"):
            args[name] = 1
        elif kind == "boolean":
            args[name] = True
        else:
            args[name] = "London"
    return args


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}},
                             status=status)


class FakeServer:
    """The request handlers; ``serve()`` runs them on a loopback port until ``stop()`` or a limit."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.state = FakeState()
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------- bodies

    def models(self) -> dict[str, Any]:
        created = int(self.state.started)
        data = [{"id": self.config.base, "object": "model", "created": created, "owned_by": "vllm",
                 "root": self.config.base, "parent": None, "max_model_len": self.config.max_model_len}]
        data += [{"id": a, "object": "model", "created": created, "owned_by": "vllm",
                  "root": f"/adapters/{a}", "parent": self.config.base} for a in self.config.adapters]
        return {"object": "list", "data": data}

    def metrics(self) -> str:
        st, base = self.state, self.config.base
        lab = f'engine="0",model_name="{base}"'
        lines = [
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {st.started:.2f}",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lab}}} {float(st.running)}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lab}}} 0.0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lab}}} {min(1.0, st.running / 256):.4f}",
            "# TYPE vllm:prefix_cache_queries counter",
            f"vllm:prefix_cache_queries_total{{{lab}}} {float(st.prefix_queries)}",
            "# TYPE vllm:prefix_cache_hits counter",
            f"vllm:prefix_cache_hits_total{{{lab}}} {float(st.prefix_hits)}",
            "# TYPE vllm:request_success counter",
        ]
        for reason in ("stop", "length", "abort", "error"):
            lines.append(
                f'vllm:request_success_total{{{lab},finished_reason="{reason}"}} {float(st.success.get(reason, 0))}'
            )
        running = ",".join(sorted(a for a, n in st.running_adapters.items() if n > 0))
        lines += [
            "# TYPE vllm:lora_requests_info gauge",
            f'vllm:lora_requests_info{{max_lora="4",running_lora_adapters="{running}",'
            f'waiting_lora_adapters=""}} {st.lora_stamp or st.started:.3f}',
        ]
        return "\n".join(lines) + "\n"

    def _finish(self, reason: str) -> None:
        self.state.success[reason] = self.state.success.get(reason, 0) + 1

    def _account_prompt(self, messages: list[dict[str, Any]]) -> None:
        # The first message plays the shared developer turn: its tokens hit the
        # prefix cache from the second time it is seen, as in vLLM.
        if not messages:
            return
        head = json.dumps(messages[0], sort_keys=True)
        self.state.prefix_queries += sum(_tokens_of(json.dumps(m)) for m in messages)
        key = hash(head)
        if key in self.state.seen_prefixes:
            self.state.prefix_hits += _tokens_of(head)
        else:
            self.state.seen_prefixes.add(key)

    # ------------------------------------------------------------- http

    def app(self) -> web.Application:
        """The aiohttp application: routes, and the API key check on ``/v1``."""

        @web.middleware
        async def require_key(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
            key = self.config.api_key
            if key and request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {key}":
                return web.json_response({"error": "Unauthorized"}, status=401)
            return await handler(request)

        async def health(_: web.Request) -> web.Response:
            return web.Response()

        async def version(_: web.Request) -> web.Response:
            return web.json_response({"version": self.config.version})

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.metrics().encode(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

        async def models(_: web.Request) -> web.Response:
            return web.json_response(self.models())

        async def tokenize(request: web.Request) -> web.Response:
            count = _prompt_tokens(json.loads(await request.read() or b"{}"))
            return web.json_response({"count": count, "max_model_len": self.config.max_model_len,
                                      "tokens": list(range(count)), "token_strs": None})

        app = web.Application(middlewares=[require_key])
        app.router.add_get("/health", health)
        app.router.add_get("/version", version)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/tokenize", tokenize)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``/v1/chat/completions``, streaming or not."""
        cfg, st = self.config, self.state
        st.requests += 1
        if st.requests >= cfg.max_requests:
            self.done.set()
        try:
            req = json.loads(await request.read() or b"{}")
        except ValueError:
            return _error(400, "body is not JSON", "BadRequestError")
        model = req.get("model")
        if model not in (cfg.base, *cfg.adapters):
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        tools = req.get("tools") or []
        if tools and not cfg.tool_parser and req.get("tool_choice", "auto") == "auto":
            return _error(400, '"auto" tool choice requires --enable-auto-tool-choice and '
                          "--tool-call-parser to be set", "BadRequestError")
        if model in cfg.broken:
            self._finish("error")
            return _error(500, f"adapter {model} is broken (fake server --broken)", "InternalServerError")

        max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or cfg.tokens)
        prompt_tokens = _prompt_tokens(req)
        if prompt_tokens + max_tokens > cfg.max_model_len:
            return _error(400, f"This model's maximum context length is {cfg.max_model_len} tokens. However, you "
                          f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
                          f"{max_tokens} in the completion).", "BadRequestError")
        self._account_prompt(req.get("messages") or [])
        is_adapter = model != cfg.base
        n_tokens = max(1, min(cfg.tokens, max_tokens))
        call = None
        if tools and is_adapter and req.get("tool_choice") != "none":
            fn = tools[0].get("function", {})
            call = {"name": fn.get("name", "tool"), "arguments": json.dumps(_fake_arguments(tools[0]))}
        pieces = [f"tok{i} " for i in range(n_tokens)]
        reason = "tool_calls" if call else ("length" if n_tokens >= max_tokens else "stop")
        if call and max_tokens < cfg.call_tokens:
            raw = f"<start_function_call>call:{call['name']}{{" + ",".join(
                f"{k}:<escape>{v}<escape>" for k, v in json.loads(call["arguments"]).items()) + "}<end_function_call>"
            call, n_tokens, reason = None, max_tokens, "length"
            pieces = [raw[: len(raw) * max_tokens // cfg.call_tokens]]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                 "total_tokens": prompt_tokens + n_tokens}
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "created": int(time.time()), "model": model}
        call_id = f"call_{head['id'][-8:]}"
        tool_call = {"index": 0, "id": call_id, "type": "function", "function": call} if call else None

        st.running += 1
        if is_adapter:
            st.running_adapters[model] = st.running_adapters.get(model, 0) + 1
            st.lora_stamp = time.time()
        try:
            if req.get("stream"):
                include_usage = (req.get("stream_options") or {}).get("include_usage")
                response = await self._stream(request, head, pieces, tool_call, reason,
                                              usage if include_usage else None)
            else:
                await asyncio.sleep((cfg.ttft_ms + cfg.token_ms * n_tokens) / 1000)
                message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(pieces)}
                if tool_call:
                    message["tool_calls"] = [{k: v for k, v in tool_call.items() if k != "index"}]
                response = web.json_response({**head, "object": "chat.completion", "usage": usage,
                                              "choices": [{"index": 0, "message": message, "finish_reason": reason}]})
            self._finish("stop" if reason == "tool_calls" else reason)
            return response
        finally:
            st.running -= 1
            if is_adapter:
                st.running_adapters[model] -= 1
                st.lora_stamp = time.time()

    async def _stream(self, request: web.Request, head: dict[str, Any], pieces: list[str],
                      tool_call: dict[str, Any] | None, reason: str,
                      usage: dict[str, int] | None) -> web.StreamResponse:
        cfg = self.config
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        pending: list[bytes] = []  # events wait here until a delay or the end: one write each, not per event

        def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> None:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            body = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
            pending.append(b"data: " + json.dumps(body).encode() + b"\n\n")

        async def pause(ms: float) -> None:
            if ms:
                await response.write(b"".join(pending))
                pending.clear()
                await asyncio.sleep(ms / 1000)

        event({"role": "assistant", "content": ""})
        await pause(cfg.ttft_ms)
        if tool_call:
            event({"tool_calls": [tool_call]})
        for i, piece in enumerate([] if tool_call else pieces):
            await pause(cfg.token_ms if i else 0)
            event({"content": piece})
        event({}, reason)
        if usage:
            event(None, usage=usage)
        pending.append(b"data: [DONE]\n\n")
        await response.write_eof(b"".join(pending))
        return response

    async def serve(self, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
        """Listen on ``host:port`` until :meth:`stop`, a signal, or a limit; ``ready(port)`` once bound."""
        if not is_loopback(host):
            raise SystemExit(f"fake server: --host {host} is not a loopback address; use 127.0.0.1")
        self.loop = asyncio.get_running_loop()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=1024)
            await site.start()
            if ready:
                ready(runner.addresses[0][1])
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self.loop.add_signal_handler(sig, self.done.set)  # the main thread only
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.done.wait(), timeout=self.config.max_seconds)
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Ask :meth:`serve` to return; safe from any thread."""
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.done.set)


@contextlib.contextmanager
def running_fake_server(config: FakeConfig | None = None, host: str = "127.0.0.1",
                        startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the fake server in a thread on a free port; yield its server URL, stop it on exit."""
    server = FakeServer(config or FakeConfig())
    bound: queue.Queue[int | BaseException] = queue.Queue()

    def main() -> None:
        try:
            asyncio.run(server.serve(host, 0, bound.put))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting test
            bound.put(exc)

    thread = threading.Thread(target=main, name="fake-server", daemon=True)
    thread.start()
    try:
        try:
            port = bound.get(timeout=startup_timeout)
        except queue.Empty:
            raise RuntimeError(f"fake server did not start within {startup_timeout:g} s") from None
        if isinstance(port, BaseException):
            raise RuntimeError(f"fake server failed to start: {port!r}") from port
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.stop()
        thread.join(timeout=10)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m tests.support.fake_server``."""
    p = argparse.ArgumentParser(prog="python -m tests.support.fake_server",
                                description="An instant OpenAI-compatible responder on loopback, for testing the "
                                "operator tools. Set FAKE_SERVER_API_KEY in its environment to require that key "
                                "on /v1.")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port (0 = any free port; default 8001)")
    p.add_argument("--base", default=DEFAULT_BASE, help=f"served base model name (default {DEFAULT_BASE})")
    p.add_argument("--adapters", default="weather,sql,calendar",
                   help="comma-separated adapter names, or a number N for adapter-01..adapter-N")
    p.add_argument("--tokens", type=int, default=8, help="output tokens per answer (default 8)")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token (default 0)")
    p.add_argument("--token-ms", type=float, default=0.0, help="delay between tokens (default 0)")
    p.add_argument("--no-tool-parser", action="store_true",
                   help="answer requests with tools by the 400 vLLM gives without --enable-auto-tool-choice")
    p.add_argument("--broken", default="", help="comma-separated models that answer 500")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (default 3600)")
    p.add_argument("--max-requests", type=int, default=10_000_000, help="exit after this many chat requests")
    return p


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    """A :class:`FakeConfig` from parsed arguments; the API key comes from FAKE_SERVER_API_KEY."""
    names = args.adapters.strip()
    adapters = [f"adapter-{i:02d}" for i in range(1, int(names) + 1)] if names.isdigit() else \
        [a.strip() for a in names.split(",") if a.strip()]
    return FakeConfig(base=args.base, adapters=adapters, api_key=os.environ.get("FAKE_SERVER_API_KEY") or None,
                      tokens=args.tokens, ttft_ms=args.ttft_ms, token_ms=args.token_ms,
                      tool_parser=not args.no_tool_parser,
                      broken={b.strip() for b in args.broken.split(",") if b.strip()},
                      max_seconds=args.max_seconds, max_requests=args.max_requests)


def main(argv: list[str] | None = None) -> int:
    """Serve until a limit or a signal; print ``listening on URL`` once bound."""
    args = build_parser().parse_args(argv)
    host = f"[{args.host}]" if ":" in args.host else args.host
    server = FakeServer(config_from_args(args))
    asyncio.run(server.serve(args.host, args.port, lambda port: print(f"listening on http://{host}:{port}",
                                                                       flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
