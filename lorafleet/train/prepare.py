"""From validated examples to token ids and labels, with the base model's chat template.

Pure: the template and the tokenizer come in as functions, so the unit tests run it with the
demo's template in Jinja and a toy tokenizer, and :mod:`lorafleet.train.run` with transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from lorafleet.functiongemma import CallSyntaxError, parse_calls, render_call
from lorafleet.train.data import Example, same_json
from lorafleet.train.lora import CALL_STOP, IGNORE, Render, Segment, TemplateError, assistant_segments, encode_segments

STOP_TEXTS = (CALL_STOP, "<end_of_turn>", "<eos>")


@dataclass
class Prepared:
    """The encoded examples and what was left out."""

    examples: list[tuple[list[int], list[int]]]
    too_long: list[int]  # lines of examples over --max-length
    trained_tokens: int


def trained_weight(message: dict) -> bool:
    """OpenAI's ``weight``: an assistant message with weight 0 is context, not learnt."""
    return message.get("weight", 1) != 0


def _strip_stops(text: str) -> str:
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for stop in STOP_TEXTS:
            if text.endswith(stop):
                text, changed = text[: -len(stop)].rstrip(), True
    return text


def check_rendered_calls(example: Example, segments: Sequence[Segment]) -> None:
    """Each trained turn's calls, as the template wrote them, must read back as the data's (typed) calls.

    The served tool parser reads what the model learns to write: a template that writes a call
    differently from FunctionGemma's grammar (``render_call``) would teach calls nobody can parse.
    """
    for s in segments:
        if not s.trained:
            continue
        message = example.messages[s.message]
        wanted = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        if not wanted:
            continue
        text = _strip_stops(s.text)
        expected = "".join(render_call(n, a) for n, a in wanted)
        if text.endswith(expected):
            continue
        try:
            _, calls = parse_calls(text)
        except CallSyntaxError as exc:
            calls, reason = None, str(exc)
        else:
            reason = f"it reads back as {[tuple(c) for c in calls]}"
        if calls is not None and len(calls) == len(wanted) and all(
                c.name == n and same_json(a, c.arguments) for c, (n, a) in zip(calls, wanted)):
            continue  # written differently (e.g. key order) but read back the same
        raise TemplateError(
            f"line {example.line}: the base model's chat template writes the assistant's call as {text[-300:]!r}, "
            f"but the served tool parser reads FunctionGemma's grammar, which writes {expected!r} ({reason}): "
            "the adapter would learn calls nobody can read. Change this call's arguments in the data to values "
            "the template writes as the grammar does, or train on a base whose chat template is FunctionGemma's")


def prepare(examples: Sequence[Example], render: Render, encode: Callable[[str], list[int]],
            max_length: int) -> Prepared:
    """Render, check and encode every example; those over ``max_length`` tokens are counted and left out."""
    out, too_long, tokens = [], [], 0
    for ex in examples:
        try:
            segments = assistant_segments(render, ex.messages, ex.tools, trained=trained_weight)
        except TemplateError as exc:
            raise TemplateError(f"line {ex.line}, {exc}") from None
        check_rendered_calls(ex, segments)
        ids, labels = encode_segments(segments, encode)
        if len(ids) > max_length:
            too_long.append(ex.line)
            continue
        n = sum(1 for x in labels if x != IGNORE)
        if n:
            out.append((ids, labels))
            tokens += n
    return Prepared(out, too_long, tokens)


def template_render(tokenizer) -> Render:
    """A Render from a transformers tokenizer's own chat template."""
    def render(messages, tools, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    return render
