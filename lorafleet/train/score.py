"""Scoring of function calls (pure): one answer against the expected calls, and a model's figures over all.

`lorafleet eval` scores the served endpoint's answers with it, `lorafleet train` its own held-out
answers: one definition of "right" for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from lorafleet.train.data import same_json


def _same_calls(expected: Sequence[tuple[str, dict]], got: Sequence[tuple[str, Any]], with_args: bool) -> bool:
    if len(expected) != len(got):
        return False
    left = list(got)
    for name, args in expected:
        for i, (g_name, g_args) in enumerate(left):
            if g_name == name and (not with_args or same_json(args, g_args)):
                del left[i]
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class Outcome:
    """One example's result for one model."""

    line: int
    wants_call: bool
    name_right: bool = False
    call_right: bool = False
    no_call_right: bool = False
    error: str | None = None
    answer: str = ""  # what the model did, for --show-failures


def score(line: int, expected: Sequence[tuple[str, dict]], got: Sequence[tuple[str, Any]] | None,
          content: str | None = "", error: str | None = None) -> Outcome:
    """Score one answer: ``got`` is the calls made as (name, parsed arguments); None with ``error`` if it failed."""
    wants = bool(expected)
    if got is None:
        return Outcome(line, wants, error=error or "no answer")
    answer = "; ".join(f"{n}({json.dumps(a, ensure_ascii=False)})" for n, a in got) if got else (content or "")[:120]
    if not wants:
        return Outcome(line, False, no_call_right=not got, answer=answer)
    return Outcome(line, True, name_right=_same_calls(expected, got, False),
                   call_right=_same_calls(expected, got, True), answer=answer)


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(outcomes: Sequence[Outcome]) -> dict:
    """The figures of one model over all examples (accuracies are None when nothing was asked)."""
    call = [o for o in outcomes if o.wants_call]
    text = [o for o in outcomes if not o.wants_call]
    n_name, n_call = sum(o.name_right for o in call), sum(o.call_right for o in call)
    n_none = sum(o.no_call_right for o in text)
    return {
        "examples": len(outcomes),
        "call_examples": len(call),
        "no_call_examples": len(text),
        "name_right": n_name,
        "call_right": n_call,
        "no_call_right": n_none,
        "errors": sum(o.error is not None for o in outcomes),
        "name_accuracy": ratio(n_name, len(call)),
        "call_accuracy": ratio(n_call, len(call)),
        "no_call_accuracy": ratio(n_none, len(text)),
        "accuracy": ratio(n_call + n_none, len(outcomes)),
    }
