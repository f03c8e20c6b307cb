"""The FunctionGemma tool parser plugin inside the real serving image, driven by vLLM's own classes.

The plugin and its grammar are mounted read-only where the deploy puts them (/lorafleet), into a
throwaway `docker run --rm --network none` container of the CPU serving image; a script there
loads the plugin as `vllm serve --tool-parser-plugin` does and runs each case through vLLM's
ParserManager, adjust_request, parse (non-streaming) and parse_delta (streaming).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lorafleet.deploy import local_base, stack
from lorafleet.deploy.settings import Secrets, build_settings
from lorafleet.functiongemma import END, START, parse_calls, render_call
from tests.conftest import group_data
from tests.support.docker_env import ensure_serving_image, local_base_image
from tests.support.parser_cases import OURS, corpus, run_in_serving_image

# The demo model's real tokenizer, where a deploy or the e2e scenario built it.
DEMO_TOKENIZER = Path(group_data("local")["models_root"]) / "lorafleet-demo" / "base"


def call(body: str) -> str:
    return f"{START}call:{body}{END}"


def chars(text: str) -> list[str]:
    return list(text)


def random_chunks(text: str, seed: int) -> list[str]:
    rng, chunks = random.Random(seed), []
    while text:
        size = rng.randint(1, 9)
        chunks.append(text[:size])
        text = text[size:]
    return chunks


GOOD = [
    ("Google's example", call("get_weather{location:<escape>London<escape>}")),
    ("every value type", "Setting it.\n" + render_call("set_alarm", {
        "hour": 7, "enabled": True, "label": "gym", "snooze": None, "volume": 0.75, "days": ["mon", "fri"],
        "repeat": {"every": 2, "unit": "week", "until": {"year": 2027, "exact": False}}, "delta": -1.5e-07})),
    ("names with - and .", render_call("weather-api.v2", {"x-y.z": [{"a": 1}, {"b": [True, None]}]})),
    ("a string holding the end marker", render_call("f", {"s": "a}<end_function_call>b{[,:\"]}", "t": "东京 😀"})),
    ("calls with whitespace between", render_call("a", {}) + "\n" + render_call("b", {"n": 12345, "s": "12345"}) + "\n"),
    # a server that does not stop on <start_function_response> (seen at real size): what follows is dropped
    ("calls, then an imagined response", render_call("set_timer", {"label": "tea", "minutes": 3})
     + "<start_function_response>tea:set:call:set_timer{label"),
]
AS_CONTENT = [  # what the grammar refuses (or holds back) comes back whole as content
    ("plain text", "I am the lorafleet demo base model. {a:1} <escape>"),
    ("text ending in a possible call start", "Compare 1 <"),
    ("a bare word", "Sure. " + call("f{city:London}")),
    ("an unfinished call", "Sure. " + render_call("f", {"a": [1, 2]})[:-7]),
    ("text after a call", render_call("f", {}) + " done"),
]
# A stream cannot take back a call it has given out: after it, refused text streams as content.
STREAMED_BEFORE_AN_ERROR = {"text after a call"}


def case(text: str, chunks, **extra) -> dict:
    return {"text": text, "chunks": chunks, **extra}


@pytest.fixture(scope="module")
def serving_image(local_data_module) -> str:
    """The local target's serving image, built here when no deploy built it before (as a deploy would)."""
    settings = build_settings(local_data_module, Secrets(hf_token="hf_e2e_plugin", api_key="e2e-plugin"))
    return ensure_serving_image(stack.serving_image(local_base.resolved(settings, local_base_image())))


@pytest.fixture(scope="module")
def local_data_module():
    return group_data("local")


@pytest.fixture(scope="module")
def checked(serving_image):
    """Every case, run once in one container: (cases, results, container log)."""
    cases = []
    for title, text in GOOD + AS_CONTENT:
        for chunks in (chars(text), random_chunks(text, len(cases))):
            cases.append(case(text, chunks, title=title))
    for generated in corpus(seed=7, per_kind=3):
        cases.append(case(generated["text"], generated["chunks"], title=generated["kind"]))
    tokenizer = DEMO_TOKENIZER if (DEMO_TOKENIZER / "tokenizer.json").is_file() else None
    if tokenizer is not None:  # the demo model's real tokenizer cuts the stream as vLLM would
        cases += [case(c["text"], "tokenizer", title=c["title"] + " (tokenizer)") for c in cases[: 2 * len(GOOD + AS_CONTENT) : 2]]
    cases.append(case(call("f{a:1}"), chars(call("f{a:1}")), title="tool_choice none", tool_choice="none"))
    results, log = run_in_serving_image(serving_image, cases, [OURS], tokenizer_dir=tokenizer)
    return cases, [r[OURS] for r in results], log


def arguments(calls: list[dict]) -> list[tuple[str, str]]:
    return [(c["name"], json.dumps(json.loads(c["arguments"]), sort_keys=True)) for c in calls]


def test_the_plugin_loads_and_parses_every_case_without_raising(checked):
    cases, results, log = checked
    failed = [(c["title"], r["error"]) for c, r in zip(cases, results) if "error" in r]
    assert not failed, log[-3000:]


def test_non_streaming_returns_what_the_grammar_reads(checked):
    for c, r in zip(*checked[:2]):
        if c.get("tool_choice") == "none":
            continue
        try:
            content, calls = parse_calls(c["text"])
        except ValueError:
            content, calls = c["text"], []
        assert r["skip_special_tokens"] is False, c["title"]
        assert r["content"] == (content or None), c["title"]
        assert arguments(r["tool_calls"]) == [(n, json.dumps(a, sort_keys=True)) for n, a in calls], c["title"]
        assert all(tc["id"] for tc in r["tool_calls"]), c["title"]


def test_streaming_joins_to_the_non_streaming_result(checked):
    for c, r in zip(*checked[:2]):
        if c["title"].removesuffix(" (tokenizer)") in STREAMED_BEFORE_AN_ERROR:
            continue
        stream = r["stream"]
        assert stream["content"] == r["content"], (c["title"], stream["chunks"])
        assert arguments(stream["tool_calls"]) == arguments(r["tool_calls"]), c["title"]
        assert len(stream["ids"]) == len(set(stream["ids"])) == len(r["tool_calls"]), c["title"]  # one id per call


def test_refused_output_is_content_and_a_warning_names_the_request(checked):
    cases, results, log = checked
    for number, (c, r) in enumerate(zip(cases, results)):
        if c["title"] in ("a bare word", "an unfinished call", "text after a call"):
            assert (r["content"], r["tool_calls"]) == (c["text"], []), c["title"]
            assert f"request check-{number}: tool call returned as content" in log, c["title"]


def test_tool_choice_none_keeps_the_call_text_and_special_tokens_skipped(checked):
    (c, r), = [(c, r) for c, r in zip(*checked[:2]) if c.get("tool_choice") == "none"]
    assert (r["skip_special_tokens"], r["content"], r["tool_calls"]) == (True, c["text"], [])
    assert (r["stream"]["content"], r["stream"]["tool_calls"]) == (c["text"], [])


def test_a_stream_keeps_a_call_given_out_before_an_error(checked):
    for c, r in zip(*checked[:2]):
        if c["title"].removesuffix(" (tokenizer)") in STREAMED_BEFORE_AN_ERROR:
            assert (r["content"], r["tool_calls"]) == (c["text"], [])
            assert arguments(r["stream"]["tool_calls"]) == [("f", "{}")]
            assert r["stream"]["content"] == " done"
