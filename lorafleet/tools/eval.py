"""``lorafleet eval``: held-out examples through the served endpoint, scored call by call.

    lorafleet eval HELDOUT.jsonl --model NAME [--model NAME2] [--url ... --api-key ...] [--json]

Each example of the OpenAI fine-tuning JSONL (the format ``lorafleet train`` reads) is sent
without its final assistant turn, with its tools, through the official ``openai`` client, at
temperature 0; the server's tool parser turns the model's calls into ``tool_calls``. The final
assistant turn is what is expected:

- **function name**: of the examples that want a call, those whose calls have the right names;
- **whole call**: of those, the ones with the right names and every argument right, compared as
  parsed JSON with types (``7`` is not ``7.0``, ``true`` is not ``1``, ``"5"`` is not ``5``);
- **no call**: of the examples answered in text, those where the model made no call.

Several calls in one answer are compared as a set (their order does not matter). One column per
model, so a base and an adapter (or two versions of one) sit side by side. ``--json`` prints the
same figures for scripts. The scoring is pure (:func:`score`, :func:`summarise`) and also scores
the offline eval of ``lorafleet train --eval``.

Exit codes: 0 every request was answered; 1 some requests failed (counted as errors);
2 the data is invalid or no request got an answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from lorafleet.train.data import DataError, Example, load_examples
from lorafleet.train.score import Outcome, score, summarise

ROWS = [  # (label, right key, total key, accuracy key)
    ("function name right", "name_right", "call_examples", "name_accuracy"),
    ("whole call right", "call_right", "call_examples", "call_accuracy"),
    ("no call when none wanted", "no_call_right", "no_call_examples", "no_call_accuracy"),
    ("all examples right", None, "examples", "accuracy"),
]


def table(results: dict[str, dict]) -> str:
    """The figures of each model side by side, one column per model."""
    def cell(s: dict, right: str | None, total: str, acc: str) -> str:
        if s[acc] is None:
            return "-"
        n = s[right] if right else s["call_right"] + s["no_call_right"]
        return f"{s[acc] * 100:5.1f}% ({n}/{s[total]})"

    names = list(results)
    rows = [["", *names]]
    for label, right, total, acc in ROWS:
        rows.append([label, *(cell(results[m], right, total, acc) for m in names)])
    rows.append(["request errors", *(str(results[m]["errors"]) for m in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Asking the server
# --------------------------------------------------------------------------------------------


def ask(client, model: str, example: Example, max_tokens: int) -> Outcome:
    """Send one example to ``model`` and score its answer."""
    try:
        response = client.chat.completions.create(
            model=model, messages=example.prompt_messages(), tools=example.tools or None,
            temperature=0, max_tokens=max_tokens)
    except Exception as exc:  # noqa: BLE001 - every failure is an error of this example, named in the output
        return score(example.line, example.expected_calls, None, error=f"{type(exc).__name__}: {exc}"[:300])
    message = response.choices[0].message
    got = []
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = {"<unparsable arguments>": call.function.arguments}
        got.append((call.function.name, arguments))
    return score(example.line, example.expected_calls, got, message.content)


def evaluate(endpoint_url: str, api_key: str | None, models: Sequence[str], examples: Sequence[Example],
             concurrency: int = 8, max_tokens: int = 256, timeout: float = 120.0) -> dict[str, list[Outcome]]:
    """Every example through every model; returns each model's outcomes in the examples' order."""
    import openai

    client = openai.OpenAI(base_url=endpoint_url, api_key=api_key or "EMPTY", max_retries=1, timeout=timeout)
    results = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for model in models:
            results[model] = list(pool.map(lambda ex: ask(client, model, ex, max_tokens), examples))
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="HELDOUT.jsonl", help="held-out examples, OpenAI fine-tuning JSONL; the last "
                   "message of each is the assistant's expected answer")
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="served model to evaluate (the base or an adapter); repeat to compare side by side")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=256, help="answer length limit (default 256)")
    p.add_argument("--limit", type=int, help="only the first N examples")
    p.add_argument("--show-failures", type=int, default=0, metavar="N",
                   help="print up to N wrong answers per model, with their line in the file")


def run(endpoint, args: argparse.Namespace) -> int:
    """The ``lorafleet eval`` command; ``endpoint`` is a resolved :class:`lorafleet.tools.endpoint.Endpoint`."""
    try:
        examples = load_examples(args.data, require_final_assistant=True)
    except DataError as exc:
        print(f"lorafleet eval: {exc}", file=sys.stderr)
        return 2
    examples = examples[: args.limit] if args.limit else examples
    t0 = time.monotonic()
    outcomes = evaluate(endpoint.endpoint_url, endpoint.api_key, args.model, examples,
                        concurrency=args.concurrency, max_tokens=args.max_tokens)
    results = {m: summarise(o) for m, o in outcomes.items()}
    seconds = time.monotonic() - t0
    if args.json:
        print(json.dumps({"data": args.data, "endpoint": endpoint.endpoint_url, "seconds": round(seconds, 1),
                          "models": results}, indent=2))
    else:
        print(f"{len(examples)} held-out examples from {args.data} at {endpoint.endpoint_url} ({seconds:.1f} s)\n")
        print(table(results))
        for model, model_outcomes in outcomes.items():
            wrong = [o for o in model_outcomes if o.error or not (o.call_right or o.no_call_right)]
            for o in wrong[: args.show_failures]:
                print(f"  {model} line {o.line}: " + (f"error {o.error}" if o.error else f"answered {o.answer!r}"))
        errors = sorted({o.error for o in outcomes[args.model[0]] if o.error})
        if errors:
            print(f"\nfirst error: {errors[0]}", file=sys.stderr)
    if all(s["errors"] == s["examples"] for s in results.values()):
        return 2
    return 1 if any(s["errors"] for s in results.values()) else 0
