"""The load client: aiohttp sessions, one streamed request timed, the closed and open loops, progress."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from lorafleet.tools.bench.prompts import TOOL_SPECS, build_messages
from lorafleet.tools.bench.stats import Sample
from lorafleet.tools.endpoint import Endpoint


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


async def raise_for_status(resp: Any) -> None:
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


async def one_request(session: Any, chat_url: str, model: str, index: int, cfg: BenchConfig, t_run: float,
                      tools: list[dict[str, Any]] | None) -> Sample:
    """Send one streamed chat request; time the first token and the end."""
    body = request_body(model, index, cfg, tools)
    start = time.perf_counter()
    sample = Sample(model=model, start_ms=(start - t_run) * 1000, ok=False)
    counted = 0
    usage_tokens = None
    try:
        async with asyncio.timeout(cfg.timeout):
            async with session.post(chat_url, json=body) as resp:
                await raise_for_status(resp)
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


async def run_load(session: Any, chat_url: str, cfg: BenchConfig, tools: list[dict[str, Any]] | None,
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
        sample = await one_request(session, chat_url, model, index, cfg, t_run, tools)
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

