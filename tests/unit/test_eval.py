"""lorafleet eval: typed comparison, scoring of each answer, the figures, the table, and the command in
process against the fake OpenAI server (base answers in text, adapters call tools[0])."""

from __future__ import annotations

import json

import pytest

from lorafleet.tools import cli
from lorafleet.tools.eval import table
from lorafleet.train.data import same_json, write_jsonl
from lorafleet.train.score import score, summarise
from tests.support.fake_server import FakeConfig, running_fake_server

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("a,b,same", [
    (7, 7, True), (7, 7.0, False), (True, 1, False), (False, 0, False), (None, 0, False), ("5", 5, False),
    (0.5, 0.5, True), ([1, "a"], [1, "a"], True), ([1, "a"], ["a", 1], False),
    ({"a": 1, "b": [True]}, {"b": [True], "a": 1}, True), ({"a": 1}, {"a": 1, "b": None}, False),
    ({"a": {"b": 1}}, {"a": {"b": 1.0}}, False),
])
def test_arguments_are_compared_as_json_with_their_types(a, b, same):
    assert same_json(a, b) is same


EXPECTED = [("get_weather", {"city": "Oslo", "days": 3})]


@pytest.mark.parametrize("expected,got,name,whole,no_call", [
    (EXPECTED, [("get_weather", {"days": 3, "city": "Oslo"})], True, True, False),
    (EXPECTED, [("get_weather", {"city": "Oslo", "days": "3"})], True, False, False),
    (EXPECTED, [("get_weather", {"city": "Oslo"})], True, False, False),
    (EXPECTED, [("get_time", {"city": "Oslo", "days": 3})], False, False, False),
    (EXPECTED, [], False, False, False),
    (EXPECTED, [EXPECTED[0], EXPECTED[0]], False, False, False),
    ([("a", {}), ("b", {"x": 1})], [("b", {"x": 1}), ("a", {})], True, True, False),  # parallel calls: any order
    ([("a", {}), ("b", {"x": 1})], [("b", {"x": 2}), ("a", {})], True, False, False),
    ([], [], False, False, True),
    ([], [("get_weather", {"city": "Oslo"})], False, False, False),
])
def test_each_answer_is_scored(expected, got, name, whole, no_call):
    o = score(1, expected, got, "")
    assert (o.wants_call, o.name_right, o.call_right, o.no_call_right) == (bool(expected), name, whole, no_call)


def test_figures_count_call_and_text_examples_apart():
    outcomes = [score(1, EXPECTED, [EXPECTED[0]]), score(2, EXPECTED, [("get_weather", {})]),
                score(3, EXPECTED, None, error="timeout"), score(4, [], []), score(5, [], [EXPECTED[0]])]
    s = summarise(outcomes)
    assert s == {"examples": 5, "call_examples": 3, "no_call_examples": 2, "name_right": 2, "call_right": 1,
                 "no_call_right": 1, "errors": 1, "name_accuracy": 0.6667, "call_accuracy": 0.3333,
                 "no_call_accuracy": 0.5, "accuracy": 0.4}
    only_calls = summarise([score(1, EXPECTED, [EXPECTED[0]])])
    assert only_calls["no_call_accuracy"] is None and only_calls["call_accuracy"] == 1.0


def test_the_table_puts_models_side_by_side():
    a = summarise([score(1, EXPECTED, []), score(2, [], [])])
    b = summarise([score(1, EXPECTED, [EXPECTED[0]]), score(2, [], [])])
    text = table({"functiongemma-demo": a, "timer": b})
    lines = text.splitlines()
    assert "functiongemma-demo" in lines[0] and "timer" in lines[0]
    whole = next(line for line in lines if line.startswith("whole call right"))
    assert "0.0% (0/1)" in whole and "100.0% (1/1)" in whole


@pytest.fixture
def heldout(tmp_path):
    def ask(city):
        return {"role": "user", "content": f"weather in {city}?"}

    rows = [
        # the fake adapter calls tools[0] with {"city": "London"}
        {"messages": [ask("London"), {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}]}],
         "tools": [WEATHER]},
        {"messages": [ask("Paris"), {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}],
         "tools": [WEATHER]},
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi!"}],
         "tools": [WEATHER]},
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi!"}]},
    ]
    path = tmp_path / "heldout.jsonl"
    write_jsonl(path, rows)
    return str(path)


def test_eval_compares_base_and_adapter_through_the_openai_client(heldout, capsys):
    with running_fake_server(FakeConfig(adapters=["weather"], api_key="k-1")) as url:
        code = cli.main(["eval", heldout, "--model", "fake-functiongemma", "--model", "weather",
                         "--url", url, "--api-key", "k-1", "--json"])
    assert code == 0
    models = json.loads(capsys.readouterr().out)["models"]
    base, adapter = models["fake-functiongemma"], models["weather"]
    assert (base["name_right"], base["call_right"], base["no_call_right"]) == (0, 0, 2)
    # the adapter calls get_weather(city=London) whenever tools are declared
    assert (adapter["name_right"], adapter["call_right"], adapter["no_call_right"]) == (2, 1, 1)
    assert adapter["call_accuracy"] == 0.5 and adapter["errors"] == 0


def test_eval_prints_a_table_and_counts_failed_requests(heldout, capsys):
    with running_fake_server(FakeConfig(adapters=["weather", "sql"], broken={"sql"})) as url:
        code = cli.main(["eval", heldout, "--model", "weather", "--model", "sql", "--url", url,
                         "--show-failures", "5"])
    out = capsys.readouterr()
    assert code == 1
    assert "whole call right" in out.out and "weather" in out.out and "sql" in out.out
    assert "request errors" in out.out and "weather line 2: answered 'get_weather({\"city\": \"London\"})'" in out.out


def test_eval_exits_2_when_nothing_answers_or_the_data_is_bad(heldout, tmp_path, capsys):
    with running_fake_server(FakeConfig()) as url:
        assert cli.main(["eval", heldout, "--model", "no-such-model", "--url", url]) == 2
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
        assert cli.main(["eval", str(bad), "--model", "weather", "--url", url]) == 2
    assert "no assistant message" in capsys.readouterr().err
