"""Per-adapter metrics in vLLM's API server: the middleware (files/serving/lorafleet_metrics.py) over ASGI.

A small ASGI app stands in for vLLM's API server as 0.32 behaves: its model registry on
``app.state.openai_serving_models``, 401 from its key check (inside the middleware), 404 for a model it
does not serve, JSON answers with ``usage``, server-sent events with a last usage chunk only when
``stream_options.include_usage`` asks, and a stream that a disconnected client ends. The counts are read
back through the real prometheus_client, from the text it exposes, as vLLM's ``/metrics`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lorafleet.deploy.layout import MIDDLEWARE, SERVE_FILES
from lorafleet.tools.status import parse_prometheus
from tests.support.modules import load_file

KEY = "sk-right"
BASE = "functiongemma-demo"


@pytest.fixture(scope="module")
def mod():
    # Registered as vLLM imports it: where the tool parser plugin finds it.
    module = load_file("lorafleet_metrics", SERVE_FILES["lorafleet_metrics.py"], register=True)
    yield module
    sys.modules.pop("lorafleet_metrics", None)


class FakeVllm:
    """vLLM 0.32's API server as far as the middleware sees it."""

    def __init__(self, adapters=("weather", "sql", "email")):
        self.state = SimpleNamespace(openai_serving_models=SimpleNamespace(
            base_model_paths=[SimpleNamespace(name=BASE, model_path="/m")],
            lora_requests={a: object() for a in adapters}))
        self.seen = []
        self.on_generate = None  # called inside the request, as the tool parser is

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append(body)
        if dict(scope["headers"]).get(b"authorization") != f"Bearer {KEY}".encode():
            return await respond(send, 401, {"error": "Unauthorized"})
        try:
            request = json.loads(body)
        except ValueError:
            return await respond(send, 400, {"error": {"message": "bad JSON"}})
        models = self.state.openai_serving_models
        model = request.get("model") or BASE
        if not isinstance(model, str):
            return await respond(send, 400, {"error": {"message": "model must be a string"}})
        if model != BASE and model not in models.lora_requests:
            return await respond(send, 404, {"error": {"message": f"The model `{model}` does not exist."}})
        if request.get("max_tokens", 1) < 1:
            return await respond(send, 400, {"error": {"message": "max_tokens must be at least 1"}})
        if request.get("boom"):
            raise RuntimeError("engine died")
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                 for i in range(request.get("calls", 0))]
        if not request.get("stream"):
            if self.on_generate:
                self.on_generate()
            message = {"role": "assistant", "content": "hi", "tool_calls": calls}
            return await respond(send, 200, {"choices": [{"index": 0, "message": message}], "usage": usage})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def stream():  # Starlette streams from a task of its own: the context is a copy
            if self.on_generate:
                self.on_generate()
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
            chunks += [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **c}]}}]} for i, c in enumerate(calls)]
            chunks += [{"choices": [{"index": 0, "delta": {"content": "x"}}]}] * 2
            for n, chunk in enumerate(chunks):
                if request.get("leave_after") == n:
                    await receive()  # the client's http.disconnect: Starlette stops the stream
                    return
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                            "more_body": True})
            if (request.get("stream_options") or {}).get("include_usage"):
                final = {"choices": [], "usage": usage}
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(final).encode() + b"\n\n",
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

        await asyncio.create_task(stream())


async def respond(send, status, payload):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def post(middleware, payload, key=KEY, path="/v1/chat/completions", raw=None):
    """One request through the middleware: (status, the bytes the client received)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "app": middleware.inner}
    try:
        asyncio.run(middleware(scope, receive, send))
    except RuntimeError:
        pass
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def box(mod):
    registry = CollectorRegistry()
    inner = FakeVllm()
    middleware = mod.AdapterMetrics(inner, metrics=mod.Metrics(registry), served=mod.ServedNames("/nonexistent"))
    middleware.inner = inner
    middleware.registry = registry
    return middleware


def read(box) -> dict:
    """{(metric, frozenset(labels)): value} from the exposition text, as status reads /metrics."""
    samples = parse_prometheus(generate_latest(box.registry).decode())
    return {(s.name, frozenset(s.labels.items())): s.value for s in samples}


def value(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())), 0)


def test_each_request_counts_under_the_name_it_asked_for_with_its_outcome(box):
    for model, n in (("weather", 3), ("sql", 2), (BASE, 1)):
        for _ in range(n):
            assert post(box, {"model": model, "messages": []})[0] == 200
    assert post(box, {"model": "email", "messages": [], "max_tokens": 0})[0] == 400
    assert post(box, {"messages": []})[0] == 200, "no model: vLLM serves the base"
    m = read(box)
    assert value(m, "lorafleet_requests_total", model="weather", outcome="2xx") == 3
    assert value(m, "lorafleet_requests_total", model="sql", outcome="2xx") == 2
    assert value(m, "lorafleet_requests_total", model=BASE, outcome="2xx") == 2
    assert value(m, "lorafleet_requests_total", model="email", outcome="4xx") == 1
    assert value(m, "lorafleet_prompt_tokens_total", model="weather") == 21
    assert value(m, "lorafleet_completion_tokens_total", model="sql") == 6
    assert value(m, "lorafleet_request_duration_seconds_count", model="weather", stream="false") == 3
    assert value(m, "lorafleet_last_request_timestamp_seconds", model="sql") > 1.7e9


def test_a_client_never_chooses_a_label_value(box):
    assert post(box, {"model": "no-such-adapter-1", "messages": []})[0] == 404
    assert post(box, {"model": "no-such-adapter-2", "messages": [], "stream": True})[0] == 404
    assert post(box, {"model": "weather", "messages": []}, key="sk-wrong")[0] == 401
    assert post(box, {"model": "made-up", "messages": []}, key=None)[0] == 401
    assert post(box, None, raw=b"not json")[0] == 400
    assert post(box, {"model": ["weather"], "messages": []})[0] == 400
    m = read(box)
    models = {dict(labels).get("model") for _, labels in m}
    assert models <= {"unknown_model", "unauthorized", "weather", BASE} and "made-up" not in models
    assert value(m, "lorafleet_requests_total", model="unknown_model", outcome="4xx") == 4
    assert value(m, "lorafleet_requests_total", model="unauthorized", outcome="4xx") == 2
    assert value(m, "lorafleet_requests_total", model="weather", outcome="4xx") == 0


def test_a_stream_gets_ttft_and_exact_tokens_and_the_client_sees_the_stream_it_asked_for(box):
    status, text = post(box, {"model": "weather", "messages": [], "stream": True})
    assert status == 200 and b'"usage"' not in text and text.endswith(b"data: [DONE]\n\n")
    asked = json.loads(box.inner.seen[-1])
    assert asked["stream_options"] == {"include_usage": True}, "asked on the client's behalf"
    status, text = post(box, {"model": "weather", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert b'"usage"' in text, "a client that asked for usage keeps it"
    post(box, {"model": "sql", "messages": []})
    m = read(box)
    assert value(m, "lorafleet_time_to_first_token_seconds_count", model="weather") == 2
    assert value(m, "lorafleet_time_to_first_token_seconds_count", model="sql") == 0, "TTFT only for streams"
    assert value(m, "lorafleet_request_duration_seconds_count", model="weather", stream="true") == 2
    assert value(m, "lorafleet_prompt_tokens_total", model="weather") == 14
    assert value(m, "lorafleet_completion_tokens_total", model="weather") == 6


def test_tool_calls_parsed_and_failed_streamed_or_not(box, mod):
    post(box, {"model": "email", "messages": [], "calls": 2})
    post(box, {"model": "email", "messages": [], "calls": 1, "stream": True})
    box.inner.on_generate = lambda: sys.modules["lorafleet_metrics"].tool_call_failed()  # as the plugin reports
    post(box, {"model": "email", "messages": []})
    post(box, {"model": "email", "messages": [], "stream": True})
    m = read(box)
    assert value(m, "lorafleet_tool_calls_total", model="email") == 3
    assert value(m, "lorafleet_tool_call_parse_failures_total", model="email") == 2
    mod.tool_call_failed()  # outside any request: nothing to count, and no error


def test_a_client_that_leaves_mid_stream_is_cancelled_and_a_crash_is_5xx(box):
    status, text = post(box, {"model": "sql", "messages": [], "stream": True, "leave_after": 2})
    assert status == 200 and not text.endswith(b"[DONE]\n\n")
    post(box, {"model": "sql", "messages": [], "boom": True})
    m = read(box)
    assert value(m, "lorafleet_requests_total", model="sql", outcome="cancelled") == 1
    assert value(m, "lorafleet_requests_total", model="sql", outcome="5xx") == 1
    assert value(m, "lorafleet_request_duration_seconds_count", model="sql", stream="true") == 0


def test_a_client_gone_when_the_server_writes_is_cancelled_too(box):
    """uvicorn with ASGI spec 2.4 raises OSError from send once the client left; Starlette ends the stream so."""
    failing = {"after": 2}

    async def send(message):
        failing["after"] -= 1
        if failing["after"] < 0:
            raise OSError("client disconnected")

    async def receive():
        return {"type": "http.request", "body": json.dumps({"model": "sql", "stream": True}).encode()}

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "app": box.inner,
             "headers": [(b"authorization", f"Bearer {KEY}".encode())]}
    with pytest.raises(OSError):
        asyncio.run(box(scope, receive, send))
    assert value(read(box), "lorafleet_requests_total", model="sql", outcome="cancelled") == 1


def test_an_adapter_loaded_or_unloaded_at_runtime_is_followed(box):
    post(box, {"model": "fresh", "messages": []})
    box.inner.state.openai_serving_models.lora_requests["fresh"] = object()
    post(box, {"model": "fresh", "messages": []})
    del box.inner.state.openai_serving_models.lora_requests["fresh"]
    post(box, {"model": "fresh", "messages": []})
    m = read(box)
    assert value(m, "lorafleet_requests_total", model="fresh", outcome="2xx") == 1
    assert value(m, "lorafleet_requests_total", model="unknown_model", outcome="4xx") == 2


def test_a_scrape_notes_the_adapters_vllm_has_loaded(box):
    async def nothing(*args):
        return None

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "app": box.inner}
    box.app = nothing  # vLLM's /metrics route: not what this test reads
    asyncio.run(box(scope, nothing, nothing))
    box.inner.state.openai_serving_models.lora_requests.pop("email")
    asyncio.run(box(scope, nothing, nothing))
    m = read(box)
    assert [value(m, "lorafleet_adapter_loaded", model=a) for a in ("weather", "sql", "email")] == [1, 1, 0]
    zeros = {dict(labels)["model"] for (name, labels), v in m.items() if name == "lorafleet_requests_total" and v == 0}
    assert zeros == {"weather", "sql", "email", BASE, "unknown_model", "unauthorized"}, \
        "every served name has its series from the first scrape: rate() sees its first request"
    for series in ("lorafleet_time_to_first_token_seconds_count", "lorafleet_completion_tokens_total",
                   "lorafleet_prompt_tokens_total", "lorafleet_tool_calls_total"):
        assert (series, frozenset({"model": "weather"}.items())) in m, f"{series} at zero before any request"
    assert (("lorafleet_request_duration_seconds_count", frozenset({"model": "weather", "stream": "true"}.items()))
            in m), "the latency histogram too: the dashboard's quantiles need its first value before the first request"


def test_other_paths_pass_untouched(box):
    post(box, {"model": "weather", "input": "x"}, path="/v1/embeddings")
    assert sum(v for (name, _), v in read(box).items() if name == "lorafleet_requests_total") == 0


def test_without_vllms_registry_the_manifest_names_what_is_served(mod, tmp_path):
    manifest = tmp_path / "adapters.json"
    manifest.write_text(json.dumps({"base_model": BASE, "adapters": [{"name": "weather", "path": "/a", "version": "1"}]}))
    served = mod.ServedNames(str(manifest))
    scope = {"app": object()}
    assert served(scope, "weather") and served(scope, BASE) and not served(scope, "sql")
    assert served.base(scope) == BASE
    manifest.write_text(json.dumps({"base_model": BASE, "adapters": [{"name": "sql", "path": "/b", "version": "1"}]}))
    os.utime(manifest, ns=(1, 10**18))
    assert served(scope, "sql") and not served(scope, "weather"), "re-read when it changes"


def test_the_manifest_s_adapters_are_declared_with_zero_requests_until_used(mod, tmp_path):
    manifest = tmp_path / "adapters.json"
    manifest.write_text(json.dumps({"base_model": BASE, "adapters": [{"name": "weather"}, {"name": "sql"}]}))
    registry = CollectorRegistry()
    box = mod.AdapterMetrics(FakeVllm(), metrics=mod.Metrics(registry), served=mod.ServedNames(str(manifest)))
    box.inner, box.registry = box.app, registry
    m = read(box)
    assert value(m, "lorafleet_adapter_declared", model="sql") == 1
    assert ("lorafleet_requests_total", frozenset({"model": "sql", "outcome": "2xx"}.items())) in m, "a zero shows"
    manifest.write_text(json.dumps({"base_model": BASE, "adapters": [{"name": "weather"}]}))
    os.utime(manifest, ns=(1, 10**18))
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}

    async def nothing(*args):
        return None

    box.app = nothing
    asyncio.run(box(scope, nothing, nothing))  # a scrape re-reads the manifest
    m = read(box)
    assert value(m, "lorafleet_adapter_declared", model="sql") == 0
    assert value(m, "lorafleet_adapter_declared", model="weather") == 1


def test_with_several_api_servers_the_metrics_go_through_the_multiprocess_folder(tmp_path):
    """vLLM sets PROMETHEUS_MULTIPROC_DIR before its API servers start (--api-server-count > 1) and serves
    prometheus_client's MultiProcessCollector: two processes' requests add up there."""
    script = textwrap.dedent(f"""
        import asyncio, importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("lorafleet_metrics", {str(SERVE_FILES["lorafleet_metrics.py"])!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        async def app(scope, receive, send):
            await receive()
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": b"{{}}"}})
        served = lambda scope, name: name == "weather"
        served.base = lambda scope: None
        served.declared = lambda: frozenset({{"weather"}})
        m = mod.AdapterMetrics(app, served=served)
        async def receive():
            return {{"type": "http.request", "body": json.dumps({{"model": "weather"}}).encode()}}
        async def send(message):
            pass
        asyncio.run(m({{"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}}, receive, send))
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    samples = parse_prometheus(generate_latest(registry).decode())
    total = [s.value for s in samples if s.name == "lorafleet_requests_total" and s.labels == {"model": "weather", "outcome": "2xx"}]
    stamps = [s for s in samples if s.name == "lorafleet_last_request_timestamp_seconds"]
    assert total == [2.0] and len(stamps) == 1 and "pid" not in stamps[0].labels
    declared = [s for s in samples if s.name == "lorafleet_adapter_declared"]
    assert [(s.labels, s.value) for s in declared] == [({"model": "weather"}, 1.0)]


def test_no_adapter_may_be_named_like_a_fixed_label(mod):
    from lorafleet.adapters.declared import METRICS_LABELS

    assert METRICS_LABELS == mod.FIXED_LABELS


def test_the_deploy_ships_the_metrics_outermost_and_vllm_can_import_it_by_name(mod):
    module, _, attribute = MIDDLEWARE[-1].rpartition(".")
    assert SERVE_FILES[module + ".py"].is_file() and getattr(mod, attribute) is mod.AdapterMetrics
    assert MIDDLEWARE.index("lorafleet_metrics.AdapterMetrics") == len(MIDDLEWARE) - 1, "vLLM: the last added is outermost"
    mod.AdapterMetrics(lambda *a: None)  # built as vLLM builds it, around an app, with the default registry
    mod.AdapterMetrics(lambda *a: None)  # twice: vLLM may build the stack again


def test_a_failing_metric_never_fails_the_request(box, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a broken collector")

    monkeypatch.setattr(box.metrics.requests, "labels", broken)
    monkeypatch.setattr(box, "_stream_events", broken)
    assert post(box, {"model": "weather", "messages": []})[0] == 200
    status, text = post(box, {"model": "weather", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and text.endswith(b"data: [DONE]\n\n") and b'"usage"' in text, "sent as vLLM wrote it"
