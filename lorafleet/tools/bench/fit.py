"""Prompts that fit the server: its context length from ``/v1/models``, the prompts' tokens from ``/tokenize``.

vLLM lists ``max_model_len`` on each base model (an adapter's entry has none: it
shares its base's context). A request needs its prompt and ``--max-tokens``
within that length, so a run keeps as many of its ``--prefix-tools``
declarations as fit and says what it changed. Where the server lists no length
or cannot count tokens (a router in front of the boxes), prompts go as asked.

The count is exact: vLLM's ``/tokenize`` renders the same messages and tools
with the served chat template. A prompt's length is its developer turn plus its
question (the chat template's control tokens split them), so the question that
is longest with the asked declarations is the longest with fewer too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lorafleet.tools.bench.prompts import QUESTIONS, build_messages, tool_declarations
from lorafleet.tools.endpoint import Endpoint

# --unique-prefix starts every developer turn with a fresh id; one id may take a few tokens more than the
# one counted, so this many more are kept free.
UNIQUE_PREFIX_ROOM = 8


@dataclass(frozen=True)
class PromptFit:
    """What the run sends against the server's limit: declarations asked and kept, the longest prompt."""

    max_model_len: int
    max_tokens: int
    prefix_tools_asked: int
    prefix_tools: int
    prompt_tokens: int  # the longest prompt with the declarations kept (room for --unique-prefix included)

    @property
    def changed(self) -> bool:
        return self.prefix_tools != self.prefix_tools_asked

    def note(self) -> str:
        """One line for the report: what was changed and why."""
        return (f"--prefix-tools {self.prefix_tools_asked} lowered to {self.prefix_tools} to fit the server's "
                f"max_model_len of {self.max_model_len}: the longest prompt is now {self.prompt_tokens} tokens, "
                f"plus {self.max_tokens} for --max-tokens")


def context_length(listed: Sequence[dict[str, Any]], models: Sequence[str]) -> int | None:
    """The smallest ``max_model_len`` of the chosen models (an adapter's is its parent's); None if none is listed."""
    by_id = {m.get("id"): m for m in listed}
    limits = []
    for name in models:
        entry = by_id.get(name) or {}
        limit = entry.get("max_model_len") or (by_id.get(entry.get("parent")) or {}).get("max_model_len")
        if isinstance(limit, int) and limit > 0:
            limits.append(limit)
    return min(limits) if limits else None


def choose_prefix_tools(tokens: Callable[[int], int], max_model_len: int, max_tokens: int, asked: int) -> PromptFit:
    """The most declarations, up to ``asked``, whose longest prompt (``tokens(n)``) leaves room for ``max_tokens``.

    Raises ValueError naming the flag to lower when not even a prompt without declarations fits.
    """
    for n in range(asked, -1, -1):
        if tokens(n) + max_tokens <= max_model_len:
            return PromptFit(max_model_len, max_tokens, asked, n, tokens(n))
    shortest = tokens(0)
    room = max_model_len - shortest
    fix = f"lower --max-tokens to {room} or less" if room > 0 else "the prompt alone is too long for this server"
    raise ValueError(f"the server's max_model_len is {max_model_len} tokens: a prompt without tool declarations "
                     f"is {shortest} tokens, plus {max_tokens} for --max-tokens does not fit; {fix}")


async def count_tokens(session: Any, endpoint: Endpoint, model: str, messages: list[dict[str, str]],
                       tools: list[dict[str, Any]] | None) -> int:
    """The prompt's length in tokens, as vLLM's ``/tokenize`` renders it with the chat template."""
    body: dict[str, Any] = {"model": model, "messages": messages, "add_generation_prompt": True}
    if tools:
        body["tools"] = tools
    async with session.post(endpoint.server_url + "/tokenize", json=body) as resp:
        if resp.status != 200:
            raise ValueError(f"/tokenize answered HTTP {resp.status}")
        return int((await resp.json())["count"])


async def listed_models(session: Any, endpoint: Endpoint) -> list[dict[str, Any]]:
    """``/v1/models`` data, or [] when it cannot be read (the run reports that itself)."""
    try:
        async with session.get(endpoint.endpoint_url + "/models") as resp:
            return (await resp.json()).get("data", []) if resp.status == 200 else []
    except Exception:  # noqa: BLE001 - no list, no limit: the prompts go as asked
        return []


async def fit_prompts(session: Any, endpoint: Endpoint, models: Sequence[str], asked: int, max_tokens: int,
                      with_tools: bool, unique_prefix: bool) -> tuple[PromptFit | None, str | None]:
    """Fit the declarations to the server's limit: the fit (None when the limit is unknown) and a note, if any.

    ``with_tools``: the declarations go as ``tools`` (else as JSON text in the developer turn).
    Raises ValueError when nothing fits (see :func:`choose_prefix_tools`).
    """
    limit = context_length(await listed_models(session, endpoint), models)
    if limit is None:
        return None, None
    room = UNIQUE_PREFIX_ROOM if unique_prefix else 0

    async def count(n: int, question: int) -> int:
        tools = tool_declarations(n) if with_tools and n else None
        messages = build_messages(question, tools is not None, unique_prefix, n)
        return await count_tokens(session, endpoint, models[0], messages, tools) + room

    try:
        asked_counts = await asyncio.gather(*(count(asked, q) for q in range(len(QUESTIONS))))
        longest = max(range(len(QUESTIONS)), key=asked_counts.__getitem__)
        counts = {asked: asked_counts[longest]}
        if counts[asked] + max_tokens > limit:
            fewer = range(asked - 1, -1, -1)
            counts.update(zip(fewer, await asyncio.gather(*(count(n, longest) for n in fewer)), strict=True))
    except Exception as exc:  # noqa: BLE001 - a server without /tokenize: say so, send as asked
        return None, (f"prompts not fitted to the server's max_model_len of {limit}: their tokens could not be "
                      f"counted ({str(exc)[:120] or type(exc).__name__})")
    fit = choose_prefix_tools(counts.__getitem__, limit, max_tokens, asked)
    return fit, fit.note() if fit.changed else None
