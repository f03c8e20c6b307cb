"""``lorafleet bench``: load a lorafleet server across chosen adapters and report how it copes.

Every request is a streamed chat completion whose first turn is the same long
developer turn with tool declarations (the part prefix caching saves), then a
short user question. Requests go round-robin over the chosen models, either at a
fixed number in flight (``--concurrency``, closed loop) or at a request rate
with Poisson arrivals (``--rate``, open loop, in flight capped by
``--concurrency``). The run stops after ``--requests`` or ``--duration``,
whichever comes first, and every request has a ``--timeout``: the run is always
bounded in count and time.

Reported per model and overall: requests/s, output tokens/s, time to first
token and end-to-end latency (p50/p90/p99), and errors by kind; written as JSON
(``--out``) and drawn as a PNG (``--chart``). ``lorafleet bench compare A B``
puts two runs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from lorafleet.tools.endpoint import Endpoint
from lorafleet.tools.status import format_table, parse_prometheus, summarize_metrics

SCHEMA = "lorafleet-bench/1"
PERCENTILES = (50, 90, 99)

# ----------------------------------------------------------------- prompts

TOOL_SPECS = [
    ("get_weather", "Get the current weather for a city.", {"location": "City name, e.g. London"}),
    ("get_forecast", "Get the weather forecast for the next days.", {"location": "City name", "days": "1 to 7"}),
    ("run_sql", "Run one read-only SELECT statement on the sales database.", {"query": "The SQL text"}),
    ("create_event", "Add an event to the user's calendar.", {"title": "Short title", "date": "YYYY-MM-DD"}),
    ("list_events", "List calendar events between two dates.", {"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}),
    ("send_email", "Send an email on the user's behalf.", {"to": "Address", "subject": "Subject", "body": "Text"}),
    ("search_docs", "Search the internal documentation.", {"query": "Words to look for"}),
    ("convert_currency", "Convert an amount between currencies.",
     {"amount": "Number", "from_currency": "ISO code", "to_currency": "ISO code"}),
    ("set_timer", "Start a countdown timer.", {"minutes": "Whole minutes"}),
    ("translate", "Translate text into another language.", {"text": "Text", "target_language": "Language name"}),
    ("book_meeting_room", "Reserve a meeting room.", {"room": "Room name", "start": "ISO time", "minutes": "Length"}),
    ("get_stock_price", "Get the latest price of a listed share.", {"symbol": "Ticker symbol"}),
]

# FunctionGemma's developer turn is this sentence followed by the declarations
# (its chat template renders ``tools`` there); the rules after it add a little
# fixed text. Its length is set mostly by --prefix-tools.
DEVELOPER_TEXT = (
    "You are a model that can do function calling with the following functions. "
    "Answer with exactly one function call when a function fits the request, otherwise with one short "
    "sentence. Fill every required argument from the user's words; dates are YYYY-MM-DD."
)

QUESTIONS = [
    "What's the weather in London right now?",
    "Will it rain in Paris over the next three days?",
    "How many orders did we get from Germany last month?",
    "Put 'dentist' in my calendar for 2026-12-03.",
    "What's on my calendar next week, from 2026-12-07 to 2026-12-13?",
    "Email bob@example.com that the report is late.",
    "Find the docs about rotating the API key.",
    "How much is 250 euros in US dollars?",
    "Set a timer for 12 minutes.",
    "Translate 'good morning, team' into Spanish.",
    "Book the Aurora room at 2026-12-02T10:00 for 30 minutes.",
    "What is Nvidia's share price?",
    "Which five customers spent the most this year?",
    "Is it windy in Oslo?",
    "Remind me about the budget review on 2026-12-15.",
    "Convert 99.5 pounds to yen.",
    "Search the docs for how to add an adapter.",
    "What's the forecast for Madrid for 5 days?",
    "Send the team a note that the server is back up.",
    "What's the average order total per country?",
    "Translate 'thank you for waiting' into German.",
    "Set a 3 minute timer for the tea.",
    "What is the weather in Tokyo?",
    "List products cheaper than 10 dollars.",
]


def tool_declarations(count: int | None = None) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list every bench request declares (the first ``count`` of them)."""
    tools = []
    for name, description, params in TOOL_SPECS[:count]:
        tools.append({
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {k: {"type": "string", "description": v} for k, v in params.items()},
                    "required": list(params),
                },
            },
        })
    return tools


def build_messages(index: int, with_tools: bool, unique_prefix: bool,
                   tool_count: int | None = None) -> list[dict[str, str]]:
    """Messages of request ``index``: the shared developer turn, then one of the questions.

    With ``with_tools`` off the declarations are written into the developer turn
    as JSON, so the shared prefix stays as long. ``unique_prefix`` starts every
    developer turn with a fresh id, which defeats prefix caching (for comparison).
    """
    developer = DEVELOPER_TEXT
    if not with_tools and tool_count != 0:
        developer += "\n\nFunctions:\n" + json.dumps(tool_declarations(tool_count))
    if unique_prefix:
        developer = f"Session {uuid.uuid4().hex}. " + developer
    return [
        {"role": "system", "content": developer},
        {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]},
    ]


# ----------------------------------------------------------------- models


def split_listed(listed: Sequence[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(base, adapters) from ``/v1/models`` entries; adapters carry a ``parent``."""
    base = next((m["id"] for m in listed if not m.get("parent")), None)
    return base, [m["id"] for m in listed if m.get("parent")]


def resolve_models(models: str | None, adapters: str | None, listed: Sequence[dict[str, Any]]) -> list[str]:
    """Turn ``--models`` / ``--adapters`` into served model names, in order, without repeats.

    ``--models`` takes names and the words ``base``, ``all`` (base and every
    adapter), ``adapters`` (every adapter) and ``adapters:N`` (the first N).
    ``--adapters`` takes ``all``, a number N, or names. Neither given: ``all``.
    """
    base, adapter_names = split_listed(listed)
    known = {m["id"] for m in listed}
    wanted: list[str] = []

    def add_adapters(n: int | None) -> None:
        if n is not None and n > len(adapter_names):
            raise ValueError(f"asked for {n} adapters but the server serves {len(adapter_names)}")
        wanted.extend(adapter_names[:n] if n is not None else adapter_names)

    for token in [t.strip() for t in (models or "").split(",") if t.strip()]:
        if token == "base":
            if base is None:
                raise ValueError("--models base: the server lists no base model")
            wanted.append(base)
        elif token == "all":
            wanted.extend([base] if base else [])
            add_adapters(None)
        elif token == "adapters":
            add_adapters(None)
        elif token.startswith("adapters:") and token.split(":", 1)[1].isdigit():
            add_adapters(int(token.split(":", 1)[1]))
        elif token in known:
            wanted.append(token)
        else:
            raise ValueError(
                f"--models: {token!r} is not served; served models: {', '.join(sorted(known)) or 'none'}"
            )
    if adapters:
        spec = adapters.strip()
        if spec == "all":
            add_adapters(None)
        elif spec.isdigit():
            add_adapters(int(spec))
        else:
            for name in [a.strip() for a in spec.split(",") if a.strip()]:
                if name not in adapter_names:
                    raise ValueError(
                        f"--adapters: {name!r} is not a served adapter; adapters: {', '.join(adapter_names) or 'none'}"
                    )
                wanted.append(name)
    if not models and not adapters:
        wanted.extend([base] if base else [])
        add_adapters(None)
    unique = list(dict.fromkeys(wanted))
    if not unique:
        raise ValueError("no model chosen: the server lists none, or the selection is empty")
    return unique


# ----------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between ranks (numpy's default); None if empty."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean of ``values``."""
    clean = [v for v in values if v is not None]
    out: dict[str, float | None] = {f"p{q}": percentile(clean, q) for q in PERCENTILES}
    out["mean"] = sum(clean) / len(clean) if clean else None
    return out


@dataclass
class Sample:
    """One request's outcome (times in ms from the start of the run / of the request)."""

    model: str
    start_ms: float
    ok: bool
    e2e_ms: float | None = None
    ttft_ms: float | None = None
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str | None = None
    detail: str | None = None


def summarize(samples: Sequence[Sample], wall_s: float) -> dict[str, Any]:
    """Counts, throughput over ``wall_s`` and latency percentiles of ``samples``."""
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for s in samples:
        if not s.ok:
            kind = s.error or "unknown"
            errors[kind] = errors.get(kind, 0) + 1
            if s.detail and kind not in examples:
                examples[kind] = s.detail
    tokens = sum(s.output_tokens for s in ok)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_count": len(samples) - len(ok),
        "error_examples": dict(sorted(examples.items())),
        "req_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens": tokens,
        "prompt_tokens_mean": (sum(p) / len(p)) if (p := [s.prompt_tokens for s in ok if s.prompt_tokens]) else None,
        "output_tok_per_s": tokens / wall_s if wall_s > 0 else None,
        "ttft_ms": distribution([s.ttft_ms for s in ok if s.ttft_ms is not None]),
        "e2e_ms": distribution([s.e2e_ms for s in ok if s.e2e_ms is not None]),
    }


def summarize_run(samples: Sequence[Sample], models: Sequence[str], wall_s: float) -> dict[str, Any]:
    """``overall`` and ``per_model`` summaries; each model's rate is over the whole run's wall time."""
    return {
        "overall": summarize(samples, wall_s),
        "per_model": {m: summarize([s for s in samples if s.model == m], wall_s) for m in models},
    }


# ----------------------------------------------------------------- load


@dataclass
class BenchConfig:
    """What to run."""

    models: list[str]
    concurrency: int = 16
    rate: float | None = None
    requests: int | None = 100
    duration: float | None = None
    max_tokens: int = 32
    timeout: float = 300.0
    tools: bool = True
    prefix_tools: int = len(TOOL_SPECS)
    unique_prefix: bool = False
    seed: int = 0
    label: str = ""
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings that would make an unbounded or empty run."""
        if self.requests is None and self.duration is None:
            raise ValueError("give --requests N or --duration S (the run must end by itself)")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"--requests {self.requests}: must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"--duration {self.duration}: must be positive")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency {self.concurrency}: must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate {self.rate}: must be positive")
        if not 0 <= self.prefix_tools <= len(TOOL_SPECS):
            raise ValueError(f"--prefix-tools {self.prefix_tools}: must be between 0 and {len(TOOL_SPECS)}")
        if not self.models:
            raise ValueError("no model to load")


class HTTPStatusError(Exception):
    """A non-200 answer; ``status`` is the HTTP code and the message is the server's text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class StreamError(Exception):
    """An error event inside a 200 stream (vLLM sends one when generation fails mid-way)."""


def error_kind(exc: BaseException) -> str:
    """A short, stable name for a failure: ``http_404``, ``timeout``, ``connection``, ..."""
    import aiohttp

    if isinstance(exc, HTTPStatusError):
        return f"http_{exc.status}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, StreamError):
        return "stream_error"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):
        return "connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated_stream"
    if isinstance(exc, ValueError):
        return "bad_json"
    return type(exc).__name__


def make_session(endpoint: Endpoint, concurrency: int, timeout: float) -> Any:
    """An aiohttp session sized for ``concurrency`` connections.

    aiohttp rather than the ``openai`` client: at 256 in flight the openai
    client spends milliseconds of CPU per request (request-body transforms,
    response models, connection-pool scans), which capped the client near
    300 req/s; the raw stream is parsed here with ``json``.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency + 8, limit_per_host=0, force_close=False)
    headers = {"Content-Type": "application/json", **endpoint.headers()}
    return aiohttp.ClientSession(
        connector=connector, headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10.0),
        json_serialize=json.dumps,
    )


async def _raise_for_status(resp: Any) -> None:
    if resp.status == 200:
        return
    text = await resp.text()
    try:
        err = json.loads(text).get("error", text)
        text = err.get("message", text) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    raise HTTPStatusError(resp.status, text[:300])


def request_body(model: str, index: int, cfg: BenchConfig, tools: list[dict[str, Any]] | None,
                 stream: bool = True) -> dict[str, Any]:
    """The JSON body of request ``index`` to ``model``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": build_messages(index, tools is not None, cfg.unique_prefix, cfg.prefix_tools),
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = tools
    return body


async def one_request(session: Any, url: str, model: str, index: int, cfg: BenchConfig, t_run: float,
                      tools: list[dict[str, Any]] | None) -> Sample:
    """Send one streamed chat request; time the first token and the end."""
    body = request_body(model, index, cfg, tools)
    start = time.perf_counter()
    sample = Sample(model=model, start_ms=(start - t_run) * 1000, ok=False)
    counted = 0
    usage_tokens = None
    try:
        async with asyncio.timeout(cfg.timeout):
            async with session.post(url, json=body) as resp:
                await _raise_for_status(resp)
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise StreamError(str(event["error"])[:200])
                    usage = event.get("usage")
                    if usage:
                        usage_tokens = usage.get("completion_tokens")
                        sample.prompt_tokens = usage.get("prompt_tokens")
                    for choice in event.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
                            if sample.ttft_ms is None:
                                sample.ttft_ms = (time.perf_counter() - start) * 1000
                            counted += 1
    except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
        sample.error = error_kind(exc)
        sample.detail = (str(exc) or type(exc).__name__)[:200]
        sample.e2e_ms = (time.perf_counter() - start) * 1000
        return sample
    sample.e2e_ms = (time.perf_counter() - start) * 1000
    sample.output_tokens = usage_tokens if usage_tokens is not None else counted
    sample.ok = True
    return sample


class Progress:
    """A tqdm bar on stderr (silent when disabled or when tqdm is missing)."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover
                return
            self.bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True,
                            leave=True, mininterval=0.5)
        self.errors = 0

    def update(self, sample: Sample) -> None:
        if not sample.ok:
            self.errors += 1
        if self.bar is not None:
            self.bar.update(1)
            if not sample.ok:
                self.bar.set_postfix(errors=self.errors, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def run_load(session: Any, url: str, cfg: BenchConfig, tools: list[dict[str, Any]] | None,
                   on_done: Callable[[Sample], None] = lambda s: None,
                   notes: list[str] | None = None) -> tuple[list[Sample], float]:
    """Drive the load as ``cfg`` says; return the samples and the wall time in seconds.

    Remarks on the run (such as arrivals held back by the in-flight cap) are appended to ``notes``.
    """
    notes = [] if notes is None else notes
    samples: list[Sample] = []
    t_run = time.perf_counter()
    deadline = t_run + cfg.duration if cfg.duration else None
    issued = 0
    capped = 0

    def next_index() -> int | None:
        nonlocal issued
        if cfg.requests is not None and issued >= cfg.requests:
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        issued += 1
        return issued - 1

    async def send(index: int) -> None:
        model = cfg.models[index % len(cfg.models)]
        sample = await one_request(session, url, model, index, cfg, t_run, tools)
        samples.append(sample)
        on_done(sample)

    if cfg.rate is None:
        async def worker() -> None:
            while (index := next_index()) is not None:
                await send(index)

        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
    else:
        rng = random.Random(cfg.seed)
        in_flight = asyncio.Semaphore(cfg.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.perf_counter()

        async def bounded(index: int) -> None:
            try:
                await send(index)
            finally:
                in_flight.release()

        while True:
            next_at += rng.expovariate(cfg.rate)
            delay = next_at - time.perf_counter()
            if deadline is not None and next_at >= deadline:
                break
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight.locked():
                capped += 1
            await in_flight.acquire()
            index = next_index()
            if index is None:
                in_flight.release()
                break
            task = asyncio.create_task(bounded(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    if capped:
        notes.append(f"{capped} arrivals waited for a free slot: the --concurrency cap "
                     f"({cfg.concurrency}) held back the --rate")
    return samples, time.perf_counter() - t_run


def fetch_server_counters(endpoint: Endpoint, timeout: float = 5.0) -> dict[str, Any] | None:
    """Prefix-cache and request counters from ``/metrics`` plus ``/version``; None if unavailable."""
    import requests

    try:
        resp = requests.get(endpoint.url + "/metrics", timeout=timeout)
        if resp.status_code != 200:
            return None
        summary = summarize_metrics(parse_prometheus(resp.text))
        version = None
        vresp = requests.get(endpoint.url + "/version", timeout=timeout)
        if vresp.status_code == 200:
            version = vresp.json().get("version")
    except (requests.RequestException, ValueError):
        return None
    return {
        "version": version,
        "prefix_cache_queries": summary["prefix_cache_queries"],
        "prefix_cache_hits": summary["prefix_cache_hits"],
        "requests_finished": summary["requests_finished"],
    }


def server_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """What the server counted during the run: prefix-cache hit rate and finished requests."""
    out: dict[str, Any] = {"version": (after or before or {}).get("version"), "prefix_cache_hit_rate": None,
                           "prefix_cache_queries": None, "prefix_cache_hits": None, "requests_finished": None}
    if not before or not after:
        return out
    for key in ("prefix_cache_queries", "prefix_cache_hits", "requests_finished"):
        if before.get(key) is not None and after.get(key) is not None:
            out[key] = after[key] - before[key]
    if out["prefix_cache_queries"]:
        out["prefix_cache_hit_rate"] = (out["prefix_cache_hits"] or 0) / out["prefix_cache_queries"]
    return out


async def warm_up(session: Any, url: str, model: str, cfg: BenchConfig,
                  tools: list[dict[str, Any]] | None) -> bool:
    """Send one short request before the clock starts; False when the server refuses tool declarations.

    vLLM answers 400 '"auto" tool choice requires --enable-auto-tool-choice ...'
    when it runs without a tool-call parser.
    """
    body = request_body(model, 0, cfg, tools, stream=False)
    body["max_tokens"] = 1
    async with session.post(url, json=body) as resp:
        if tools and resp.status == 400 and "tool choice requires" in await resp.text():
            return False
        await _raise_for_status(resp)
        await resp.read()
    return True


async def bench_async(endpoint: Endpoint, cfg: BenchConfig) -> dict[str, Any]:
    """Run one benchmark and return its result record (see :data:`SCHEMA`)."""
    cfg.check()
    url = endpoint.base_url + "/chat/completions"
    notes = []
    async with make_session(endpoint, cfg.concurrency, cfg.timeout) as session:
        tools = tool_declarations(cfg.prefix_tools) if cfg.tools and cfg.prefix_tools else None
        try:
            if not await warm_up(session, url, cfg.models[0], cfg, tools):
                tools = None
                notes.append("the server has no tool-call parser: declarations sent inside the developer turn")
                await warm_up(session, url, cfg.models[0], cfg, None)
        except HTTPStatusError as exc:
            if 400 <= exc.status < 500:
                # Every request would fail the same way: stop with the server's reason.
                text = str(exc).lower()
                hint = " (lower --prefix-tools or --max-tokens)" if "context" in text or "too long" in text else ""
                raise ValueError(f"the server refused the first request to {cfg.models[0]}: {exc}{hint}") from exc
            notes.append(f"warm-up request failed: {error_kind(exc)}: {str(exc)[:200]}")
        except Exception as exc:  # noqa: BLE001 - the load itself will count it
            notes.append(f"warm-up request failed: {error_kind(exc)}: {str(exc)[:200]}")
        before = await asyncio.to_thread(fetch_server_counters, endpoint)
        progress = Progress(cfg.progress, cfg.requests if cfg.duration is None else None,
                            cfg.label or "bench")
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            samples, wall = await run_load(session, url, cfg, tools, progress.update, notes)
        finally:
            progress.close()
        after = await asyncio.to_thread(fetch_server_counters, endpoint)

    config = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")}
    config.update(cfg.extra)
    config["url"] = endpoint.url
    config["tools_declared"] = tools is not None
    result = {
        "schema": SCHEMA,
        "label": cfg.label,
        "started_at": started_at,
        "wall_s": wall,
        "config": config,
        "server": server_delta(before, after),
        "notes": notes,
        **summarize_run(samples, cfg.models, wall),
        "samples": [asdict(s) for s in sorted(samples, key=lambda s: s.start_ms)],
    }
    return result


def run_bench(endpoint: Endpoint, cfg: BenchConfig) -> dict[str, Any]:
    """Synchronous wrapper of :func:`bench_async`."""
    return asyncio.run(bench_async(endpoint, cfg))


# ----------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_result(result: dict[str, Any]) -> str:
    """The per-model and overall table of one run."""
    rows = []
    for name, s in [*result["per_model"].items(), ("ALL", result["overall"])]:
        errors = ", ".join(f"{k}:{v}" for k, v in s["errors"].items()) or "-"
        rows.append((
            name, s["requests"], s["ok"], _rate(s["req_per_s"]), _rate(s["output_tok_per_s"]),
            *(_ms(s["ttft_ms"][f"p{q}"]) for q in PERCENTILES),
            *(_ms(s["e2e_ms"][f"p{q}"]) for q in PERCENTILES),
            errors,
        ))
    headers = ("model", "sent", "ok", "req/s", "out tok/s", "TTFT p50", "p90", "p99", "E2E p50", "p90", "p99",
               "errors")
    cfg = result["config"]
    mode = f"rate {cfg['rate']:g}/s (cap {cfg['concurrency']} in flight)" if cfg["rate"] else \
        f"concurrency {cfg['concurrency']}"
    head = (f"{result['label'] + ': ' if result['label'] else ''}{cfg['url']}, {len(cfg['models'])} models, "
            f"{mode}, {result['overall']['requests']} requests in {result['wall_s']:.1f} s "
            f"(latencies in ms)")
    lines = [head, format_table(headers, rows, right=range(1, 11))]
    server = result.get("server") or {}
    if server.get("prefix_cache_hit_rate") is not None:
        lines.append(f"server prefix-cache hit rate during the run: {100 * server['prefix_cache_hit_rate']:.1f}% "
                     f"({server['prefix_cache_hits']:,.0f} of {server['prefix_cache_queries']:,.0f} prompt tokens)")
    else:
        lines.append("server prefix-cache hit rate during the run: n/a")
    lines.extend(f"error {kind}, e.g.: {text}" for kind, text in result["overall"].get("error_examples", {}).items())
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return "\n".join(lines)


def write_chart(result: dict[str, Any], path: Path) -> None:
    """PNG: latency percentiles per model (left) and throughput per model (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*result["per_model"], "ALL"]
    stats = [*result["per_model"].values(), result["overall"]]
    width = max(10.0, 4.0 + 0.9 * len(names))
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(width, 5.5), constrained_layout=True)

    series = [("ttft_ms", q) for q in PERCENTILES] + [("e2e_ms", q) for q in PERCENTILES]
    colors = ["#9ecae1", "#4292c6", "#08519c", "#fdae6b", "#f16913", "#a63603"]
    bar = 0.8 / len(series)
    for k, ((metric, q), color) in enumerate(zip(series, colors, strict=True)):
        values = [s[metric][f"p{q}"] or 0.0 for s in stats]
        xs = [i - 0.4 + bar * (k + 0.5) for i in range(len(names))]
        label = f"{'TTFT' if metric == 'ttft_ms' else 'E2E'} p{q}"
        ax_lat.bar(xs, values, bar, label=label, color=color)
    ax_lat.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_title("Latency percentiles")
    ax_lat.legend(fontsize="small", ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax_lat.grid(axis="y", alpha=0.3)

    reqs = [s["req_per_s"] or 0.0 for s in stats]
    toks = [s["output_tok_per_s"] or 0.0 for s in stats]
    xs = range(len(names))
    ax_thr.bar([x - 0.2 for x in xs], reqs, 0.4, label="requests/s", color="#41ab5d")
    ax_tok = ax_thr.twinx()
    ax_tok.bar([x + 0.2 for x in xs], toks, 0.4, label="output tokens/s", color="#807dba")
    ax_thr.set_xticks(list(xs), names, rotation=30, ha="right")
    ax_thr.set_ylabel("requests/s")
    ax_tok.set_ylabel("output tokens/s")
    ax_thr.set_title("Throughput")
    handles = ax_thr.get_legend_handles_labels()[0] + ax_tok.get_legend_handles_labels()[0]
    ax_thr.legend(handles, ["requests/s", "output tokens/s"], fontsize="small", ncols=2, loc="upper center",
                  bbox_to_anchor=(0.5, -0.22))
    ax_thr.grid(axis="y", alpha=0.3)

    cfg = result["config"]
    mode = f"rate {cfg['rate']:g}/s" if cfg["rate"] else f"concurrency {cfg['concurrency']}"
    fig.suptitle(f"{result['label'] or 'lorafleet bench'}: {result['overall']['requests']} requests, {mode}, "
                 f"max_tokens {cfg['max_tokens']}, {result['wall_s']:.1f} s")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result record as indented JSON."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------- compare


COMPARED = [
    ("req/s", lambda s: s["req_per_s"]),
    ("out tok/s", lambda s: s["output_tok_per_s"]),
    ("TTFT p50 ms", lambda s: s["ttft_ms"]["p50"]),
    ("TTFT p90 ms", lambda s: s["ttft_ms"]["p90"]),
    ("TTFT p99 ms", lambda s: s["ttft_ms"]["p99"]),
    ("E2E p50 ms", lambda s: s["e2e_ms"]["p50"]),
    ("E2E p90 ms", lambda s: s["e2e_ms"]["p90"]),
    ("E2E p99 ms", lambda s: s["e2e_ms"]["p99"]),
    ("errors", lambda s: s["error_count"]),
]


def ratio(a: float | None, b: float | None) -> float | None:
    """b / a, or None when either is missing or a is zero."""
    if a is None or b is None or a == 0:
        return None
    return b / a


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, Any, Any, float | None]]:
    """(model, metric, A, B, B/A) for the overall run, then for every model both runs loaded."""
    rows = []
    shared = [m for m in a["per_model"] if m in b["per_model"]]
    for model in ["ALL", *shared]:
        sa = a["overall"] if model == "ALL" else a["per_model"][model]
        sb = b["overall"] if model == "ALL" else b["per_model"][model]
        for metric, get in COMPARED:
            va, vb = get(sa), get(sb)
            rows.append((model, metric, va, vb, ratio(va, vb)))
    return rows


def render_compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Two runs side by side with B/A ratios."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = []
    for tag, r, name in (("A", a, name_a), ("B", b, name_b)):
        cfg = r["config"]
        mode = f"rate {cfg['rate']:g}/s" if cfg.get("rate") else f"concurrency {cfg['concurrency']}"
        label = f" [{r['label']}]" if r.get("label") and r["label"] != name else ""
        lines.append(f"{tag}: {name}{label}: {len(cfg['models'])} models, {mode}, "
                     f"{r['overall']['requests']} requests in {r['wall_s']:.1f} s")
    rows = []
    previous = None
    for model, metric, va, vb, rt in compare_rows(a, b):
        rows.append(("" if model == previous else model, metric, fmt(va), fmt(vb),
                     "-" if rt is None else f"{rt:.2f}x"))
        previous = model
    lines.append(format_table(("model", "metric", "A", "B", "B/A"), rows, right=(2, 3, 4)))
    for tag, r, other in (("A", a, b), ("B", b, a)):
        only = [m for m in r["per_model"] if m not in other["per_model"]]
        if only:
            lines.append(f"only in {tag}: {', '.join(only)}")
    for tag, r in (("A", a), ("B", b)):
        rate = (r.get("server") or {}).get("prefix_cache_hit_rate")
        lines.append(f"{tag} prefix-cache hit rate: {'n/a' if rate is None else f'{100 * rate:.1f}%'}")
    return "\n".join(lines)


def load_result(path: Path) -> dict[str, Any]:
    """Read a results JSON written by ``lorafleet bench --out``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read a bench result ({exc})") from exc
    if data.get("schema") != SCHEMA:
        raise SystemExit(f"{path}: not a lorafleet bench result (schema {data.get('schema')!r}, want {SCHEMA})")
    return data


# ----------------------------------------------------------------- CLI glue


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``lorafleet bench``."""
    p.add_argument("--models", help="comma-separated: names, base, all, adapters, adapters:N (default: all)")
    p.add_argument("--adapters", help="all, a number N (the first N), or comma-separated adapter names")
    p.add_argument("--versus", metavar="MODELS",
                   help="run a second configuration with these models (same syntax as --models) and compare, "
                        "e.g. --models base --versus adapters:8")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests in flight (default 16; with --rate, the in-flight cap, default 256)")
    p.add_argument("--rate", type=float, help="requests per second, Poisson arrivals (open loop)")
    p.add_argument("--requests", type=int, help="stop after this many requests (default 100 without --duration)")
    p.add_argument("--duration", type=float, help="stop sending after this many seconds")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (default 32)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request before it counts as a timeout")
    p.add_argument("--no-tools", action="store_true", help="write the declarations into the prompt, not `tools`")
    p.add_argument("--prefix-tools", type=int, default=len(TOOL_SPECS), metavar="N",
                   help=f"tool declarations in the shared developer turn, 0-{len(TOOL_SPECS)} "
                        f"(default {len(TOOL_SPECS)}; lower it for a short --max-model-len)")
    p.add_argument("--unique-prefix", action="store_true",
                   help="make every developer turn unique, which defeats prefix caching (for comparison)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    p.add_argument("--label", default="", help="name of this run in tables, charts and JSON")
    p.add_argument("--out", type=Path, help="write the results JSON here")
    p.add_argument("--chart", type=Path, help="write a PNG chart here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, models: list[str], label: str | None = None) -> BenchConfig:
    """A :class:`BenchConfig` from parsed arguments and resolved model names."""
    concurrency = args.concurrency or (256 if args.rate else 16)
    requests = args.requests if args.requests is not None else (None if args.duration else 100)
    return BenchConfig(models=models, concurrency=concurrency, rate=args.rate, requests=requests,
                       duration=args.duration, max_tokens=args.max_tokens, timeout=args.timeout,
                       tools=not args.no_tools, prefix_tools=args.prefix_tools,
                       unique_prefix=args.unique_prefix, seed=args.seed,
                       label=label if label is not None else args.label, progress=not args.no_progress)


def _suffixed(path: Path | None, suffix: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-{suffix}{path.suffix}")


def list_models(endpoint: Endpoint, timeout: float = 30.0) -> list[dict[str, Any]]:
    """``/v1/models`` data; SystemExit with the reason when it cannot be read."""
    import requests

    try:
        resp = requests.get(endpoint.url + "/v1/models", headers=endpoint.headers(), timeout=timeout)
    except requests.RequestException as exc:
        raise SystemExit(f"cannot reach {endpoint.describe()}: {type(exc).__name__}") from exc
    if resp.status_code == 401:
        raise SystemExit(f"{endpoint.url}: the API key was refused (401); pass --api-key or set LORAFLEET_API_KEY")
    if resp.status_code != 200:
        raise SystemExit(f"{endpoint.url}/v1/models answered HTTP {resp.status_code}")
    return resp.json().get("data", [])


def main_bench(endpoint: Endpoint, args: argparse.Namespace) -> int:
    """``lorafleet bench``: run one configuration, or two with ``--versus``; 1 if any request failed."""
    listed = list_models(endpoint)
    try:
        models_a = resolve_models(args.models, args.adapters, listed)
        models_b = resolve_models(args.versus, None, listed) if args.versus else None
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc

    runs = [(args.label or (args.models or args.adapters or "all"), models_a, "a")]
    if models_b is not None:
        runs.append((args.versus, models_b, "b"))
    results = []
    for label, models, suffix in runs:
        cfg = config_from_args(args, models, label)
        try:
            result = run_bench(endpoint, cfg)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        results.append(result)
        print(render_result(result))
        print()
        out = _suffixed(args.out, suffix) if models_b is not None else args.out
        chart = _suffixed(args.chart, suffix) if models_b is not None else args.chart
        if out:
            write_json(result, out)
            print(f"results: {out}")
        if chart:
            write_chart(result, chart)
            print(f"chart: {chart}")
    if len(results) == 2:
        print()
        print(render_compare(results[0], results[1], runs[0][0], runs[1][0]))
    return 1 if any(r["overall"]["error_count"] for r in results) else 0


def main_compare(argv: Sequence[str]) -> int:
    """``lorafleet bench compare A.json B.json``."""
    p = argparse.ArgumentParser(prog="lorafleet bench compare", description="Two bench runs side by side.")
    p.add_argument("a", type=Path, help="results JSON of run A (the reference)")
    p.add_argument("b", type=Path, help="results JSON of run B; ratios are B/A")
    args = p.parse_args(list(argv))
    print(render_compare(load_result(args.a), load_result(args.b), str(args.a), str(args.b)))
    return 0
