"""A trivial OpenAI-compatible responder that answers at once, for testing the operator tools.

It speaks just enough of vLLM's API: ``GET /v1/models`` (base plus adapters,
adapters with ``parent``), ``POST /v1/chat/completions`` (streaming or not; an
adapter answers with a tool call when the request declares tools), ``GET
/metrics`` with the vLLM 0.32 metric names the tools read, ``/version`` and
``/health``. Its purpose is to measure the benchmark client's own ceiling: with
a server that costs nothing, whatever rate ``lorafleet bench`` reaches is the
client's limit.

It is a small hand-written HTTP/1.1 server on asyncio (keep-alive, chunked
streaming) so it needs no dependency and stays fast. It binds to loopback only
and exits by itself after ``--max-seconds`` or ``--max-requests``.

Run: ``python -m tests.support.fake_server --port 8001 --adapters 8`` or
``lorafleet fake-server ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

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


class FakeServer:
    """The request handlers; ``serve()`` runs them on a socket."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.state = FakeState()
        self.done = asyncio.Event()

    # ------------------------------------------------------------- endpoints

    def models(self) -> dict[str, Any]:
        created = int(self.state.started)
        data = [{"id": self.config.base, "object": "model", "created": created, "owned_by": "vllm",
                 "root": self.config.base, "parent": None, "max_model_len": 32768}]
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
        total = sum(_tokens_of(json.dumps(m)) for m in messages)
        self.state.prefix_queries += total
        key = hash(head)
        if key in self.state.seen_prefixes:
            self.state.prefix_hits += _tokens_of(head)
        else:
            self.state.seen_prefixes.add(key)

    # ------------------------------------------------------------------ http

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection."""
        try:
            while not self.done.is_set():
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=120)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _ = lines[0].split(" ", 2)
                except ValueError:
                    break
                headers = {}
                for h in lines[1:]:
                    if ":" in h:
                        k, v = h.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                keep = headers.get("connection", "").lower() != "close"
                await self.route(method, target.split("?", 1)[0], headers, body, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str = "application/json") -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  500: "Internal Server Error"}.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _json(self, writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
        self._respond(writer, status, json.dumps(obj).encode())

    def _error(self, writer: asyncio.StreamWriter, status: int, message: str, kind: str) -> None:
        self._json(writer, status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

    async def route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                    writer: asyncio.StreamWriter) -> None:
        """Dispatch one request."""
        if path.startswith("/v1") and self.config.api_key:
            if headers.get("authorization") != f"Bearer {self.config.api_key}":
                self._json(writer, 401, {"error": "Unauthorized"})
                await writer.drain()
                return
        if method == "GET" and path == "/health":
            self._respond(writer, 200, b"")
        elif method == "GET" and path == "/version":
            self._json(writer, 200, {"version": self.config.version})
        elif method == "GET" and path == "/metrics":
            self._respond(writer, 200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif method == "GET" and path == "/v1/models":
            self._json(writer, 200, self.models())
        elif method == "POST" and path == "/v1/chat/completions":
            await self.chat(body, writer)
            return
        else:
            self._error(writer, 404, f"no route {method} {path}", "NotFoundError")
        await writer.drain()

    async def chat(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        """``/v1/chat/completions``, streaming or not."""
        cfg, st = self.config, self.state
        st.requests += 1
        if st.requests >= cfg.max_requests:
            self.done.set()
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            self._error(writer, 400, "body is not JSON", "BadRequestError")
            await writer.drain()
            return
        model = req.get("model")
        if model not in (cfg.base, *cfg.adapters):
            self._error(writer, 404, f"The model `{model}` does not exist.", "NotFoundError")
            await writer.drain()
            return
        tools = req.get("tools") or []
        if tools and not cfg.tool_parser and req.get("tool_choice", "auto") == "auto":
            self._error(writer, 400, '"auto" tool choice requires --enable-auto-tool-choice and '
                        "--tool-call-parser to be set", "BadRequestError")
            await writer.drain()
            return
        if model in cfg.broken:
            self._finish("error")
            self._error(writer, 500, f"adapter {model} is broken (fake server --broken)", "InternalServerError")
            await writer.drain()
            return

        self._account_prompt(req.get("messages") or [])
        is_adapter = model != cfg.base
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens") or cfg.tokens
        n_tokens = max(1, min(cfg.tokens, int(max_tokens)))
        call = None
        if tools and is_adapter and req.get("tool_choice") != "none":
            fn = tools[0].get("function", {})
            call = {"name": fn.get("name", "tool"), "arguments": json.dumps(_fake_arguments(tools[0]))}
        pieces = [f"tok{i} " for i in range(n_tokens)]
        reason = "tool_calls" if call else ("length" if n_tokens >= int(max_tokens) else "stop")
        prompt_tokens = sum(_tokens_of(json.dumps(m)) for m in req.get("messages") or [])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                 "total_tokens": prompt_tokens + n_tokens}
        rid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        created = int(time.time())

        st.running += 1
        if is_adapter:
            st.running_adapters[model] = st.running_adapters.get(model, 0) + 1
            st.lora_stamp = time.time()
        try:
            if req.get("stream"):
                await self._stream(writer, req, rid, created, model, pieces, call, reason, usage)
            else:
                if cfg.ttft_ms or cfg.token_ms:
                    await asyncio.sleep((cfg.ttft_ms + cfg.token_ms * n_tokens) / 1000)
                message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(pieces)}
                if call:
                    message["tool_calls"] = [{"id": f"call_{rid[-8:]}", "type": "function", "function": call}]
                self._json(writer, 200, {
                    "id": rid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                    "usage": usage,
                })
                await writer.drain()
            self._finish("stop" if reason == "tool_calls" else reason)
        finally:
            st.running -= 1
            if is_adapter:
                st.running_adapters[model] -= 1
                st.lora_stamp = time.time()

    async def _stream(self, writer: asyncio.StreamWriter, req: dict[str, Any], rid: str, created: int,
                      model: str, pieces: list[str], call: dict[str, Any] | None, reason: str,
                      usage: dict[str, int]) -> None:
        cfg = self.config

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": choices, **extra}
            data = b"data: " + json.dumps(obj).encode() + b"\n\n"
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        writer.write(event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        if cfg.ttft_ms:
            await writer.drain()
            await asyncio.sleep(cfg.ttft_ms / 1000)
        if call:
            tc = {"index": 0, "id": f"call_{rid[-8:]}", "type": "function", "function": call}
            writer.write(event([{"index": 0, "delta": {"tool_calls": [tc]}, "finish_reason": None}]))
        else:
            for i, piece in enumerate(pieces):
                if i and cfg.token_ms:
                    await writer.drain()
                    await asyncio.sleep(cfg.token_ms / 1000)
                writer.write(event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
        writer.write(event([{"index": 0, "delta": {}, "finish_reason": reason}]))
        if (req.get("stream_options") or {}).get("include_usage"):
            writer.write(event([], usage=usage))
        done = b"data: [DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()

    async def serve(self, host: str, port: int, ready: Any = None) -> None:
        """Listen on ``host:port`` until a limit is reached or the process is told to stop."""
        if not is_loopback(host):
            raise SystemExit(f"fake server: --host {host} is not a loopback address; use 127.0.0.1")
        server = await asyncio.start_server(self.handle, host, port, backlog=1024, limit=1 << 20)
        bound = server.sockets[0].getsockname()[1]
        if ready:
            ready(bound)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.done.set)
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.done.wait(), timeout=self.config.max_seconds)
        # The remaining connections are dropped when the loop closes.


# ---------------------------------------------------------------- process helpers


def _argv(config: FakeConfig, host: str, port: int) -> list[str]:
    argv = ["--host", host, "--port", str(port), "--base", config.base,
            "--adapters", ",".join(config.adapters), "--tokens", str(config.tokens),
            "--ttft-ms", str(config.ttft_ms), "--token-ms", str(config.token_ms),
            "--max-seconds", str(config.max_seconds), "--max-requests", str(config.max_requests)]
    if not config.tool_parser:
        argv.append("--no-tool-parser")
    if config.broken:
        argv += ["--broken", ",".join(sorted(config.broken))]
    return argv


@contextlib.contextmanager
def running_fake_server(config: FakeConfig | None = None, host: str = "127.0.0.1",
                        startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the fake server in a child process on a free port; yield its URL, stop it on exit."""
    config = config or FakeConfig()
    env = dict(os.environ)
    if config.api_key:
        env["FAKE_SERVER_API_KEY"] = config.api_key  # kept off the command line (ps shows argv)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_server", *_argv(config, host, 0)],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + startup_timeout
        line = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline and not line.startswith("listening on "):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"fake server exited with code {proc.returncode} before listening")
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server did not start within {startup_timeout:g} s")
        yield line.split("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``lorafleet fake-server`` / ``python -m tests.support.fake_server``."""
    p = parser or argparse.ArgumentParser(prog="lorafleet fake-server")
    p.description = ("An instant OpenAI-compatible responder on loopback, for testing the operator tools. "
                     "Set FAKE_SERVER_API_KEY in its environment to require that key on /v1.")
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


def run(args: argparse.Namespace) -> int:
    """Serve until a limit or a signal; print ``listening on URL`` once bound."""
    config = config_from_args(args)

    def ready(port: int) -> None:
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"listening on http://{host}:{port}", flush=True)

    asyncio.run(FakeServer(config).serve(args.host, args.port, ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tests.support.fake_server``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
