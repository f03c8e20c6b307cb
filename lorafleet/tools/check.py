# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "openai>=1.50",
# ]
# ///
"""Connection check for a lorafleet server: does every served model answer?

Lists the served models (``/v1/models``: the base model and its adapters), sends
one chat request to each of them concurrently, and prints one row per model:
status, latency, and the short answer or the parsed tool call ``fn(args)``. A
function call the answer's token budget cut short (``CUT``) is a failure that
names ``--max-tokens``: the raw text of half a call is not an answer.
Adapters trained for tool calls can answer with one: the request declares a
small set of tools.

``lorafleet check`` runs it in process, with the server and key that every
lorafleet command finds (:mod:`lorafleet.tools.endpoint`). It imports nothing
from lorafleet, so it also runs alone from any machine with uv, no checkout needed:

    uv run lorafleet/tools/check.py --url http://HOST:8000 --api-key KEY

Run alone, URL and key come from the flags, else the environment (LORAFLEET_URL,
LORAFLEET_API_KEY), else http://127.0.0.1:8000 and no key. The URL may be the
server URL or the endpoint (the same plus ``/v1``). The key is never printed.

Exit codes: 0 every model answered; 1 at least one failed; 2 the server could
not be reached, refused the key, or listed no model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Sequence

# Shared with lorafleet.tools.endpoint, which imports them from here: this file must stay standalone.
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "LORAFLEET_URL"

# Small, generic declarations: enough for a tool-call adapter to pick one.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City name, e.g. London"}},
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_sql",
            "description": "Run a read-only SQL query against the sales database.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "One SELECT statement"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_event",
            "description": "Add an event to the user's calendar.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                },
                "required": ["title", "date"],
            },
        },
    },
]
DEVELOPER = "You are a model that can do function calling with the following functions."
QUESTION = "What is the weather like in London right now?"
AUTO_TOOLS_ERROR = "tool choice requires"  # vLLM's 400 without --enable-auto-tool-choice
# The answer's token budget: room for a whole function call. The demo's longest call (its `alarm`
# adapter's, every value type) is at most 130 tokens in any byte-level tokenizer; a cut call is a failure.
DEFAULT_MAX_TOKENS = 256
CALL_START, CALL_END = "<start_function_call>", "<end_function_call>"  # FunctionGemma's call markers


def normalize_url(url: str) -> str:
    """The server URL from a server URL or an endpoint: no whitespace, trailing slash or ``/v1``; a scheme."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url if "://" in url else "http://" + url


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Flags first, then LORAFLEET_URL / LORAFLEET_API_KEY, then the default URL and no key."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    key = api_key or os.environ.get("LORAFLEET_API_KEY") or None
    return normalize_url(url), key


def short(text: str | None, width: int = 48) -> str:
    """One line of at most ``width`` characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_call(name: str, arguments: str | None) -> str:
    """``fn(k="v", n=1)`` from a tool call's name and JSON arguments."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return f"{name}({short(arguments, 40)})"
    if not isinstance(args, dict):
        return f"{name}({json.dumps(args)})"
    return f"{name}(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) + ")"


def cut_call(text: str | None, finish_reason: str | None) -> bool:
    """True when the token budget ended the answer inside a function call: it never reached the parser whole."""
    text = text or ""
    return finish_reason == "length" and text.rfind(CALL_START) > text.rfind(CALL_END)


def error_kind(exc: BaseException) -> str:
    """A short name for a failed request: HTTP status, timeout or connection."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        message = ""
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            err = body.get("error", body)
            message = err.get("message", "") if isinstance(err, dict) else str(err)
        return f"HTTP {exc.status_code} {short(message or str(exc), 60)}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection failed"
    return f"{type(exc).__name__}: {short(str(exc), 60)}"


async def ask(client, model: str, max_tokens: int, use_tools: bool) -> dict:
    """One chat request to ``model``; a row of the result table."""
    import openai

    messages = [{"role": "system", "content": DEVELOPER}, {"role": "user", "content": QUESTION}]
    started = time.perf_counter()
    note = ""
    try:
        try:
            kwargs = {"tools": TOOLS} if use_tools else {}
            resp = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kwargs
            )
        except openai.BadRequestError as exc:
            if not (use_tools and AUTO_TOOLS_ERROR in str(exc)):
                raise
            # The server runs without a tool-call parser: check plain chat.
            note = " (server has no tool parser)"
            started = time.perf_counter()
            resp = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0
            )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        return {"model": model, "ok": False, "status": "FAIL", "latency_ms": None,
                "answer": error_kind(exc)}
    latency = (time.perf_counter() - started) * 1000
    choice = resp.choices[0] if resp.choices else None
    if choice is None:
        return {"model": model, "ok": False, "status": "FAIL", "latency_ms": latency, "answer": "no choices"}
    calls = choice.message.tool_calls or []
    if calls:
        answer = "; ".join(format_call(c.function.name, c.function.arguments) for c in calls)
    elif cut_call(choice.message.content, choice.finish_reason):
        return {"model": model, "ok": False, "status": "CUT", "latency_ms": latency,
                "answer": f"function call cut by the {max_tokens}-token budget: raise --max-tokens "
                          f"({short(choice.message.content, 40)!r})" + note}
    else:
        answer = repr(short(choice.message.content))
    return {"model": model, "ok": True, "status": "ok", "latency_ms": latency, "answer": answer + note}


def format_table(headers, rows) -> str:
    """Plain text columns."""
    cells = [list(headers)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def check(server_url: str, api_key: str | None, timeout: float, max_tokens: int, use_tools: bool,
                expected: Sequence[str] = ()) -> int:
    """List the models, ask each one (and each of ``expected`` the server does not list), print the table.

    Returns the exit code. A model of ``expected`` missing from the list is asked anyway, so it fails in its row.
    """
    import openai

    endpoint = server_url + "/v1"
    client = openai.AsyncOpenAI(base_url=endpoint, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
    try:
        try:
            page = await client.models.list()
        except openai.AuthenticationError:
            print(f"{server_url}: the API key was refused (401); pass --api-key or set LORAFLEET_API_KEY",
                  file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001
            print(f"{server_url}: cannot list models: {error_kind(exc)}", file=sys.stderr)
            return 2
        models = list(page.data)
        if not models:
            print(f"{server_url}: the server lists no model", file=sys.stderr)
            return 2
        parent = {m.id: getattr(m, "parent", None) for m in models}
        names = [m.id for m in models]
        unlisted = [m for m in expected if m not in parent]
        names += unlisted
        started = time.perf_counter()
        rows = await asyncio.gather(*(ask(client, n, max_tokens, use_tools) for n in names))
        wall = time.perf_counter() - started
    finally:
        await client.close()

    table = [
        (r["model"], "adapter" if parent.get(r["model"]) else "not listed" if r["model"] in unlisted else "base",
         r["status"],
         "-" if r["latency_ms"] is None else f"{r['latency_ms']:.0f}", r["answer"])
        for r in rows
    ]
    print(f"server {server_url}: {len(parent)} models ({sum(1 for p in parent.values() if p)} adapters)"
          + (f"; declared but not listed: {', '.join(unlisted)}" if unlisted else ""))
    print(format_table(("model", "kind", "status", "latency ms", "answer"), table))
    failed = [r["model"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} answered in {wall * 1000:.0f} ms"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of the check besides URL and key (``lorafleet check`` adds those its own way)."""
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for each answer (default 120: CPU servers are slow)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"answer length limit; a function call it cuts fails (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--no-tools", action="store_true", help="do not declare tools in the requests")


def run(server_url: str, api_key: str | None, args: argparse.Namespace, expected: Sequence[str] = ()) -> int:
    """Run the check with the options of :func:`add_options`; return the exit code."""
    return asyncio.run(check(server_url, api_key, args.timeout, args.max_tokens, not args.no_tools, expected))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: parse the arguments and run the check."""
    p = argparse.ArgumentParser(description="Check that every model a lorafleet server lists answers.")
    p.add_argument("--url", help=f"server URL or endpoint (env {URL_ENV}; default {DEFAULT_URL})")
    p.add_argument("--api-key", help="API key (env LORAFLEET_API_KEY; never printed)")
    add_options(p)
    args = p.parse_args(argv)
    return run(*resolve(args.url, args.api_key), args)


if __name__ == "__main__":
    sys.exit(main())
