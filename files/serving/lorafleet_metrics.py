"""Per-adapter metrics on vLLM's own ``/metrics``: ``--middleware lorafleet_metrics.AdapterMetrics``.

vLLM 0.32 counts every request under the base model's name, and its one LoRA metric
(``vllm:lora_requests_info``) names only the adapters running at this instant. This ASGI middleware
sees each completion request whole, in vLLM's API server process, and counts it under the served
name it asked for (the base or an adapter): requests by outcome, end-to-end latency and time to
first token, prompt and completion tokens, tool calls parsed and failed, the time of the last
request; and, refreshed at each scrape of ``/metrics``, which adapters the manifest declares
(``lorafleet_adapter_declared``, with a zero request count until one is used) and which vLLM has
loaded (``lorafleet_adapter_loaded``). Why a middleware: it is the one extension point vLLM 0.32 takes by import path that sees
the request's ``model``, the status vLLM answered (its 401 and 404 included, as this wraps vLLM's
key check) and every byte streamed; a stat logger sees only what reaches the engine.

Labels a dashboard groups by: ``model`` (one served name, or ``unknown_model`` for a name vLLM does
not serve, or ``unauthorized`` for a request vLLM refused with 401: a client never chooses a label
value), ``outcome`` (2xx, 4xx, 5xx, cancelled), ``stream`` (true, false). A name is served when
vLLM's own model registry (``app.state.openai_serving_models``: the base and every adapter loaded,
at start-up or at runtime) has it; the adapter manifest is the fallback where that registry is not
there.

Where vLLM serves from several API server processes (``--api-server-count`` > 1) it sets
``PROMETHEUS_MULTIPROC_DIR`` before they start and serves a multiprocess collector: prometheus_client
then keeps these values in that folder, summed over the processes (the last-request gauge takes
their max). With one process they live in the default registry vLLM serves.

Tokens of a stream: vLLM reports them only in a last ``usage`` chunk, when the client asks for it
with ``stream_options.include_usage``. Where it does not, this asks on its behalf and removes that
chunk from what the client receives: exact counts (a chunk can carry several tokens, so counting
chunks would not be), and the client sees the stream it asked for.

Tool calls that failed to parse are reported by the project's tool parser plugin
(``functiongemma_tool_parser.py`` calls :func:`tool_call_failed`), into the request being counted.

Cost: other requests pass untouched; for a completion request, one JSON decode of the request and
of a non-streamed answer, and a byte search in each streamed chunk.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
UNKNOWN_MODEL = "unknown_model"  # the request named no model vLLM serves (or no JSON body at all)
UNAUTHORIZED = "unauthorized"  # vLLM refused the key (401), whatever the request named
FIXED_LABELS = (UNKNOWN_MODEL, UNAUTHORIZED)
OUTCOMES = ("2xx", "4xx", "5xx", "cancelled")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40)
MANIFEST = os.environ.get("LORAFLEET_MANIFEST", "/lorafleet/adapters.json")

# The request being counted, for the tool parser plugin, which runs inside it (same task, or a task it started).
_CURRENT: contextvars.ContextVar["_Request | None"] = contextvars.ContextVar("lorafleet_metrics_request", default=None)


def tool_call_failed() -> None:
    """The tool parser's signal: output of the request being served did not parse as a tool call."""
    current = _CURRENT.get()
    if current is not None:
        current.tool_call_failures += 1


class Metrics:
    """The collectors, in one registry (vLLM's default one unless a test gives its own)."""

    def __init__(self, registry=REGISTRY):
        kw = {"registry": registry}
        self.requests = Counter("lorafleet_requests", "Completion requests by served model and outcome.",
                                ["model", "outcome"], **kw)
        self.latency = Histogram("lorafleet_request_duration_seconds",
                                 "End-to-end time of a completion request, from its arrival to its last byte.",
                                 ["model", "stream"], buckets=LATENCY_BUCKETS, **kw)
        self.ttft = Histogram("lorafleet_time_to_first_token_seconds",
                              "Time from a streamed request's arrival to its first chunk.",
                              ["model"], buckets=TTFT_BUCKETS, **kw)
        self.prompt_tokens = Counter("lorafleet_prompt_tokens", "Prompt tokens, from vLLM's usage.", ["model"], **kw)
        self.completion_tokens = Counter("lorafleet_completion_tokens", "Completion tokens, from vLLM's usage.",
                                         ["model"], **kw)
        self.tool_calls = Counter("lorafleet_tool_calls", "Tool calls parsed and returned.", ["model"], **kw)
        self.tool_call_failures = Counter("lorafleet_tool_call_parse_failures",
                                          "Model outputs the tool parser could not read as calls.", ["model"], **kw)
        self.declared = Gauge("lorafleet_adapter_declared",
                              "1 for each adapter of the deploy's manifest, 0 once it left it.", ["model"],
                              multiprocess_mode="max", **kw)
        self.loaded = Gauge("lorafleet_adapter_loaded",
                            "1 for each adapter vLLM serves now (its model registry), 0 once unloaded.", ["model"],
                            multiprocess_mode="max", **kw)
        self.last_request = Gauge("lorafleet_last_request_timestamp_seconds",
                                  "Unix time of the last completion request that ended.", ["model"],
                                  multiprocess_mode="max", **kw)


_DEFAULT: Metrics | None = None


def default_metrics() -> Metrics:
    """One set per process: vLLM builds the middleware stack more than once, and the image check imports it."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Metrics()
    return _DEFAULT


class _Request:
    """What one request has shown so far."""

    __slots__ = ("name", "stream", "injected", "start", "status", "first_chunk", "finished", "disconnected",
                 "json_body", "usage", "tool_calls", "tool_call_failures", "buffer")

    def __init__(self, start: float):
        self.name, self.stream, self.injected, self.start = None, False, False, start
        self.status, self.first_chunk, self.finished, self.disconnected = None, None, False, False
        self.json_body, self.usage, self.tool_calls, self.tool_call_failures = False, None, 0, 0
        self.buffer: list[bytes] = []


class ServedNames:
    """Is a name served: vLLM's model registry when the app has one, else the manifest (re-read when it changes)."""

    def __init__(self, manifest: str = MANIFEST):
        self.manifest, self._stamp, self._names = manifest, None, frozenset()

    def __call__(self, scope, name: str) -> bool:
        registry = _registry(scope)
        if registry is not None:
            return name in registry.lora_requests or any(p.name == name for p in registry.base_model_paths)
        return name in self._from_manifest()

    def base(self, scope) -> str | None:
        """The name vLLM serves a request without ``model`` under."""
        registry = _registry(scope)
        if registry is not None:
            return registry.base_model_paths[0].name if registry.base_model_paths else None
        self._from_manifest()
        return self._base

    def declared(self) -> frozenset:
        """The manifest's adapters (the same object while the manifest is unchanged)."""
        self._from_manifest()
        return self._adapters

    def _from_manifest(self) -> frozenset:
        try:
            stamp = os.stat(self.manifest).st_mtime_ns
        except OSError:
            if self._stamp is not None or self._adapters is None:
                self._stamp, self._names, self._base, self._adapters = None, frozenset(), None, frozenset()
            return self._names
        if stamp != self._stamp:
            try:
                with open(self.manifest, encoding="utf-8") as f:
                    manifest = json.load(f)
                self._base = manifest.get("base_model")
                self._adapters = frozenset(a["name"] for a in manifest.get("adapters", []))
                self._names = self._adapters | ({self._base} if self._base else set())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._base, self._names, self._adapters = None, frozenset(), frozenset()
            self._stamp = stamp
        return self._names

    _base: str | None = None
    _adapters: frozenset | None = None


def _registry(scope):
    app = scope.get("app")
    state = getattr(app, "state", None)
    try:
        registry = getattr(state, "openai_serving_models", None)
    except Exception:  # noqa: BLE001 - Starlette's State raises its own error for a missing attribute
        return None
    if registry is None or not hasattr(registry, "lora_requests") or not hasattr(registry, "base_model_paths"):
        return None
    return registry


class AdapterMetrics:
    """ASGI middleware: counts each completion request under the served name it asked for."""

    def __init__(self, app, metrics: Metrics | None = None, served: ServedNames | None = None, clock=time.monotonic):
        self.app = app
        self.metrics = metrics or default_metrics()
        self.served = served or ServedNames()
        self.clock = clock
        self._declared: frozenset = frozenset()
        self._loaded: frozenset = frozenset()
        self._bases: set[str] = set()
        for label in FIXED_LABELS:
            self.metrics.requests.labels(label, "4xx")
        self.declare()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in COMPLETION_PATHS:
            if scope["type"] == "http" and scope.get("path", "").startswith("/metrics"):
                self.declare()
                self.note_loaded(scope)
            await self.app(scope, receive, send)
            return
        r = _Request(self.clock())
        received = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if message["type"] == "http.request":
            body = b"".join(m.get("body", b"") for m in received)
            rewritten = self._read_request(r, body)
            if rewritten is not None:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                         + [(b"content-length", str(len(rewritten)).encode())]}
                received = [{"type": "http.request", "body": rewritten, "more_body": False}]
        else:
            r.disconnected = True
        pending = list(received)

        async def replayed():
            if pending:
                return pending.pop(0)
            message = await receive()
            if message["type"] == "http.disconnect":
                r.disconnected = True
            return message

        async def watched(message):
            try:
                message = self._watch(r, message)
            except Exception:  # noqa: BLE001 - a metric is never worth an answer: send it as vLLM wrote it
                _log_once("reading an answer")
            try:
                await send(message)
            except BaseException:  # the server could not write to the client: it left (uvicorn: OSError)
                r.disconnected = True
                raise

        token = _CURRENT.set(r)
        try:
            await self.app(scope, replayed, watched)
        except asyncio.CancelledError:
            r.disconnected = True
            raise
        except BaseException:
            if not r.finished and not r.disconnected:
                r.status = 500  # what Starlette's error middleware, outside this one, answers
            raise
        finally:
            _CURRENT.reset(token)
            try:
                self._count(scope, r)
            except Exception:  # noqa: BLE001 - never fail a request, or hide its own error, over a metric
                _log_once("counting a request")

    def declare(self) -> None:
        """Before each scrape: the manifest's adapters, each with a zero count until used (an idle one shows)."""
        names = self.served.declared()
        if names is self._declared:
            return
        m = self.metrics
        for name in self._declared - names:
            m.declared.labels(name).set(0)
        for name in names - self._declared:
            m.declared.labels(name).set(1)
            self._zero(name)
        self._declared = names

    def _zero(self, name: str) -> None:
        """Every series of a served name from the start, at zero: Prometheus' rate() sees no increase in a series'
        first value, so a counter or histogram born with the first request would show nothing for it."""
        m = self.metrics
        for outcome in OUTCOMES:
            m.requests.labels(name, outcome)
        for stream in ("true", "false"):
            m.latency.labels(name, stream)
        for series in (m.ttft, m.prompt_tokens, m.completion_tokens, m.tool_calls, m.tool_call_failures):
            series.labels(name)

    def note_loaded(self, scope) -> None:
        """Before each scrape: the adapters vLLM's registry holds now (loaded at start-up or at runtime)."""
        registry = _registry(scope)
        if registry is None:
            return
        names = frozenset(registry.lora_requests)
        for name in self._loaded - names:
            self.metrics.loaded.labels(name).set(0)
        for name in names - self._loaded:
            self.metrics.loaded.labels(name).set(1)
            self._zero(name)
        self._loaded = names
        for path in registry.base_model_paths:
            if path.name not in self._bases:
                self._bases.add(path.name)
                self._zero(path.name)

    def _read_request(self, r: _Request, body: bytes) -> bytes | None:
        """Note the model and stream flag; the body to hand on instead, when usage must be asked for."""
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        model = payload.get("model")
        r.name = model if isinstance(model, str) else ("" if model is None else None)
        r.stream = payload.get("stream") is True
        if not r.stream:
            return None
        options = payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return None
        if options is not None and not isinstance(options, dict):
            return None  # vLLM refuses it itself
        r.injected = True
        return json.dumps({**payload, "stream_options": {**(options or {}), "include_usage": True}},
                          ensure_ascii=False).encode()

    def _watch(self, r: _Request, message):
        """See one message of the answer on its way out: the message to send (without the usage this asked for)."""
        kind = message["type"]
        if kind == "http.response.start":
            r.status = message["status"]
            content_type = dict(message.get("headers", ())).get(b"content-type", b"")
            r.json_body = content_type.startswith(b"application/json")
            return message
        if kind != "http.response.body":
            return message
        body = message.get("body", b"")
        if body and r.first_chunk is None:
            r.first_chunk = self.clock()
        if not message.get("more_body", False):
            r.finished = True
        if r.stream:
            if b'"usage"' in body or b'"tool_calls"' in body:
                kept = self._stream_events(r, body)
                if kept is not body:
                    return {**message, "body": kept}
        elif r.json_body and body:
            r.buffer.append(body)
        return message

    def _stream_events(self, r: _Request, body: bytes) -> bytes:
        """Read usage and tool calls from server-sent events; without the usage event this injected."""
        kept, dropped = [], False
        for event in body.split(b"\n\n"):
            data = event[6:] if event.startswith(b"data: ") else None
            if data and data != b"[DONE]":
                try:
                    chunk = json.loads(data)
                except ValueError:
                    chunk = None
                if isinstance(chunk, dict):
                    if isinstance(chunk.get("usage"), dict):
                        r.usage = chunk["usage"]
                        if r.injected and not chunk.get("choices"):
                            dropped = True
                            continue
                    r.tool_calls += _streamed_calls(chunk)
            kept.append(event)
        return b"\n\n".join(kept) if dropped else body

    def _count(self, scope, r: _Request) -> None:
        end = self.clock()
        m = self.metrics
        if r.status == 401:
            name = UNAUTHORIZED
        elif r.name == "":
            name = self.served.base(scope) or UNKNOWN_MODEL
        elif r.name is not None and self.served(scope, r.name):
            name = r.name
        else:
            name = UNKNOWN_MODEL
        if not r.finished and (r.disconnected or r.status is None):
            outcome = "cancelled"
        else:
            outcome = _outcome(r.status)
        m.requests.labels(name, outcome).inc()
        m.last_request.labels(name).set(time.time())
        if outcome == "cancelled":
            return
        m.latency.labels(name, "true" if r.stream else "false").observe(end - r.start)
        if r.stream and r.first_chunk is not None and outcome == "2xx":
            m.ttft.labels(name).observe(r.first_chunk - r.start)
        if r.buffer and outcome == "2xx":
            try:
                answer = json.loads(b"".join(r.buffer))
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                r.usage = answer.get("usage")
                r.tool_calls += sum(len((c.get("message") or {}).get("tool_calls") or ())
                                    for c in answer.get("choices") or () if isinstance(c, dict))
        if isinstance(r.usage, dict):
            m.prompt_tokens.labels(name).inc(_tokens(r.usage.get("prompt_tokens")))
            m.completion_tokens.labels(name).inc(_tokens(r.usage.get("completion_tokens")))
        if r.tool_calls:
            m.tool_calls.labels(name).inc(r.tool_calls)
        if r.tool_call_failures:
            m.tool_call_failures.labels(name).inc(r.tool_call_failures)


_LOGGED: set[str] = set()


def _log_once(what: str) -> None:
    """One traceback per kind of failure in vLLM's log, not one per request."""
    if what not in _LOGGED:
        _LOGGED.add(what)
        logging.getLogger("lorafleet_metrics").exception("per-adapter metrics failed %s; the request went on", what)


def _outcome(status: int | None) -> str:
    if status is None or status >= 500:
        return "5xx"
    return "4xx" if status >= 400 else "2xx"


def _tokens(value) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _streamed_calls(chunk: dict) -> int:
    """New tool calls in one streamed chunk: each call's first delta carries its id."""
    count = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        for call in (delta or {}).get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id"):
                count += 1
    return count
