"""One bench run against a server: warm-up, the server's counters before and after, the load, the record."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Any

from lorafleet.tools.bench.fit import PromptFit, fit_prompts
from lorafleet.tools.bench.load import (
    BenchConfig,
    HTTPStatusError,
    Progress,
    error_kind,
    make_session,
    raise_for_status,
    request_body,
    run_load,
)
from lorafleet.tools.bench.prompts import tool_declarations
from lorafleet.tools.bench.report import SCHEMA
from lorafleet.tools.bench.stats import server_delta, summarize_run
from lorafleet.tools.endpoint import Endpoint
from lorafleet.tools.status import parse_prometheus, summarize_metrics


def fetch_server_counters(endpoint: Endpoint, timeout: float = 5.0) -> dict[str, Any] | None:
    """Prefix-cache and request counters from ``/metrics`` plus ``/version``; None if unavailable."""
    import requests

    try:
        resp = requests.get(endpoint.server_url + "/metrics", timeout=timeout)
        if resp.status_code != 200:
            return None
        summary = summarize_metrics(parse_prometheus(resp.text))
        version = None
        vresp = requests.get(endpoint.server_url + "/version", timeout=timeout)
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


async def warm_up(session: Any, chat_url: str, model: str, cfg: BenchConfig,
                  tools: list[dict[str, Any]] | None) -> bool:
    """Send one short request before the clock starts; False when the server refuses tool declarations.

    vLLM answers 400 '"auto" tool choice requires --enable-auto-tool-choice ...'
    when it runs without a tool-call parser.
    """
    body = request_body(model, 0, cfg, tools, stream=False)
    body["max_tokens"] = 1
    async with session.post(chat_url, json=body) as resp:
        if tools and resp.status == 400 and "tool choice requires" in await resp.text():
            return False
        await raise_for_status(resp)
        await resp.read()
    return True


async def fit_to_server(session: Any, endpoint: Endpoint, cfg: BenchConfig, asked: int,
                        with_tools: bool) -> tuple[BenchConfig, PromptFit | None, str | None]:
    """``cfg`` with as many of the ``asked`` declarations as the server's context length holds (see :mod:`.fit`)."""
    fit, note = await fit_prompts(session, endpoint, cfg.models, asked, cfg.max_tokens, with_tools, cfg.unique_prefix)
    return (replace(cfg, prefix_tools=fit.prefix_tools) if fit else cfg), fit, note


async def checked_warm_up(session: Any, chat_url: str, cfg: BenchConfig, tools: list[dict[str, Any]] | None,
                          notes: list[str]) -> bool:
    """:func:`warm_up`; a 4xx stops the run with the server's reason, another failure is noted and counted later."""
    try:
        return await warm_up(session, chat_url, cfg.models[0], cfg, tools)
    except HTTPStatusError as exc:
        if 400 <= exc.status < 500:
            # Every request would fail the same way: stop with the server's reason.
            text = str(exc).lower()
            hint = " (lower --prefix-tools or --max-tokens)" if "context" in text or "too long" in text else ""
            raise ValueError(f"the server refused the first request to {cfg.models[0]}: {exc}{hint}") from exc
        notes.append(f"warm-up request failed: {error_kind(exc)}: {str(exc)[:200]}")
    except Exception as exc:  # noqa: BLE001 - the load itself will count it
        notes.append(f"warm-up request failed: {error_kind(exc)}: {str(exc)[:200]}")
    return True


async def prepare(session: Any, endpoint: Endpoint, chat_url: str, cfg: BenchConfig,
                  notes: list[str]) -> tuple[BenchConfig, list[dict[str, Any]] | None, PromptFit | None]:
    """Fit the prompts to the server's context length and warm it up: the config to run, its tools, the fit."""
    asked = cfg.prefix_tools
    cfg, fit, fit_note = await fit_to_server(session, endpoint, cfg, asked, cfg.tools)
    tools = tool_declarations(cfg.prefix_tools) if cfg.tools and cfg.prefix_tools else None
    if not await checked_warm_up(session, chat_url, cfg, tools, notes):
        tools = None
        notes.append("the server has no tool-call parser: declarations sent inside the developer turn")
        # Written into the developer turn, the declarations take other room: fit them again.
        cfg, fit, fit_note = await fit_to_server(session, endpoint, cfg, asked, False)
        await checked_warm_up(session, chat_url, cfg, None, notes)
    if fit_note:
        notes.insert(0, fit_note)
    return cfg, tools, fit


async def bench_async(endpoint: Endpoint, cfg: BenchConfig) -> dict[str, Any]:
    """Run one benchmark and return its result record (see :data:`SCHEMA`)."""
    cfg.check()
    chat_url = endpoint.endpoint_url + "/chat/completions"
    notes: list[str] = []
    async with make_session(endpoint, cfg.concurrency, cfg.timeout) as session:
        cfg, tools, fit = await prepare(session, endpoint, chat_url, cfg, notes)
        before = await asyncio.to_thread(fetch_server_counters, endpoint)
        progress = Progress(cfg.progress, cfg.requests if cfg.duration is None else None,
                            cfg.label or "bench")
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            samples, wall = await run_load(session, chat_url, cfg, tools, progress.update, notes)
        finally:
            progress.close()
        after = await asyncio.to_thread(fetch_server_counters, endpoint)

    config = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")}
    config.update(cfg.extra)
    config["url"] = endpoint.server_url  # the server URL, under the key saved runs have
    config["tools_declared"] = tools is not None
    result = {
        "schema": SCHEMA,
        "label": cfg.label,
        "started_at": started_at,
        "wall_s": wall,
        "config": config,
        "server": server_delta(before, after),
        "prompt_fit": None if fit is None else {**asdict(fit), "changed": fit.changed},
        "notes": notes,
        **summarize_run(samples, cfg.models, wall),
        "samples": [asdict(s) for s in sorted(samples, key=lambda s: s.start_ms)],
    }
    return result


def run_bench(endpoint: Endpoint, cfg: BenchConfig) -> dict[str, Any]:
    """Synchronous wrapper of :func:`bench_async`."""
    return asyncio.run(bench_async(endpoint, cfg))


def list_models(endpoint: Endpoint, timeout: float = 30.0) -> list[dict[str, Any]]:
    """``/v1/models`` data; SystemExit with the reason when it cannot be read."""
    import requests

    try:
        resp = requests.get(endpoint.endpoint_url + "/models", headers=endpoint.headers(), timeout=timeout)
    except requests.RequestException as exc:
        raise SystemExit(f"cannot reach {endpoint.describe()}: {type(exc).__name__}") from exc
    if resp.status_code == 401:
        raise SystemExit(f"{endpoint.server_url}: the API key was refused (401); "
                         "pass --api-key or set LORAFLEET_API_KEY")
    if resp.status_code != 200:
        raise SystemExit(f"{endpoint.endpoint_url}/models answered HTTP {resp.status_code}")
    return resp.json().get("data", [])

