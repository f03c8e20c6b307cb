"""A streamed chat completion joined as an OpenAI client joins it: the content, and each call's deltas."""

from __future__ import annotations


def join_stream(chunks) -> tuple[str, list[dict]]:
    """(content, calls) of an `openai` stream: each call {"id", "name", "arguments"}, in the order of its index."""
    content, calls = "", {}
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            call["name"] += (tc.function and tc.function.name) or ""
            call["arguments"] += (tc.function and tc.function.arguments) or ""
    return content, [calls[i] for i in sorted(calls)]
