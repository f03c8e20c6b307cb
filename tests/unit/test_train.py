"""lorafleet train, the parts without torch: JSONL validation, masking with the chat template, the calls the
template writes, options vLLM can serve, defaults, the card; and that none of it imports torch."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorafleet.deploy.layout import DEMO_TRAINER
from lorafleet.functiongemma import render_call
from lorafleet.train import card, cli, lora, sample
from lorafleet.train.data import DataError, load_examples, parse_example, write_jsonl
from lorafleet.train.lora import CALL_STOP, IGNORE, LoraOptions, TemplateError, check_options
from lorafleet.train.prepare import check_rendered_calls, prepare
from tests.support.chat_templates import DEMO_TEMPLATE, compile_template

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def template():
    return compile_template(DEMO_TEMPLATE.read_text())  # FunctionGemma's format (test_chat_template.py proves it)


@pytest.fixture(scope="module")
def render(template):
    def render(messages, tools, add_generation_prompt):  # as transformers' apply_chat_template renders it
        return template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                               bos_token="<bos>")
    return render


def chars(text: str) -> list[int]:
    """A toy tokenizer: one token per character, so labels map back to text exactly."""
    return [ord(c) for c in text]


def trained_text(ids: list[int], labels: list[int]) -> str:
    return "".join(chr(t) for t, lab in zip(ids, labels) if lab != IGNORE)


def example(*messages, tools=(WEATHER,), line=1, final=False):
    problems, ex = parse_example({"messages": list(messages), "tools": list(tools)}, line, final)
    assert not problems, problems
    return ex


def call(name="get_weather", arguments=None, as_string=False):
    arguments = {"city": "Oslo"} if arguments is None else arguments
    return {"type": "function", "function": {"name": name,
                                             "arguments": json.dumps(arguments) if as_string else arguments}}


USER = {"role": "user", "content": "weather in Oslo?"}


# --- the JSONL file -----------------------------------------------------------------------------


def test_the_shapes_users_send_are_taken_null_arguments_unnamed_results_and_object_results(render):
    # an OpenAI agent loop's log: the result carries tool_call_id only; Google's form: results as objects
    ex = example(USER, {"role": "assistant", "tool_calls": [{**call(arguments={"city": "Oslo", "unit": None}), "id": "c7"}]},
                 {"role": "tool", "tool_call_id": "c7", "content": {"temp": 3, "sunny": False, "note": None}},
                 {"role": "assistant", "content": "It is 3 degrees."})
    assert ex.messages[2]["name"] == "get_weather"  # named after the call it answers, as the server names it
    [(ids, labels)] = prepare([ex], render, chars, 10_000).examples
    full = "".join(map(chr, ids))
    assert "call:get_weather{city:<escape>Oslo<escape>,unit:None}" in full
    assert "response:get_weather{note:None,sunny:false,temp:3}" in full
    assert trained_text(ids, labels).startswith(render_call("get_weather", {"city": "Oslo", "unit": None}))
    google = example(USER, {"role": "assistant", "tool_calls": [call()]},
                     {"role": "tool", "content": [{"name": "get_weather", "response": {"temp": 3}}]},
                     {"role": "assistant", "content": "3."})
    assert "response:get_weather{temp:3}" in "".join(map(chr, prepare([google], render, chars, 10_000).examples[0][0]))
    # the API takes a result as text: the eval sends an object result as JSON
    assert example(*ex.messages, final=True).prompt_messages()[2]["content"] == '{"temp": 3, "sunny": false, "note": null}'


@pytest.mark.parametrize("result,message", [
    ({"role": "tool", "content": "3 degrees"}, "needs 'tool_call_id'"),
    ({"role": "tool", "tool_call_id": "nope", "content": "3 degrees"}, "tool_call_id 'nope' answers no call"),
    ({"role": "tool", "name": "get_weather", "content": 3}, "a list of text parts, an object, or a list of objects"),
])
def test_a_result_the_template_cannot_name_is_refused_saying_what_to_add(result, message):
    problems, _ = parse_example({"messages": [USER, {"role": "assistant", "tool_calls": [{**call(), "id": "c1"}]}, result,
                                              {"role": "assistant", "content": "ok"}], "tools": [WEATHER]}, 4)
    assert any(message in p and p.startswith("line 4") for p in problems), problems


def test_arguments_as_json_string_or_object_become_the_same_object():
    a = example(USER, {"role": "assistant", "tool_calls": [call(as_string=True)]})
    b = example(USER, {"role": "assistant", "tool_calls": [call()]})
    assert a.messages == b.messages
    assert a.expected_calls == [("get_weather", {"city": "Oslo"})]
    # for the API, arguments go back to a JSON string
    history = example(USER, {"role": "assistant", "tool_calls": [call()]},
                      {"role": "tool", "name": "get_weather", "content": "3 degrees"},
                      {"role": "assistant", "content": "Cold."}, final=True)
    sent = history.prompt_messages()
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    assert history.expected_calls == [] and sent[-1]["role"] == "tool"


BAD_LINES = [
    ("not json", "line 3: not valid JSON"),
    ("[1, 2]", "line 3: each line must be a JSON object"),
    ('{"tools": []}', "'messages' must be a non-empty list"),
    ('{"messages": [{"role": "human", "content": "hi"}]}', "role 'human' is not one of"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"mesages": [], "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "unknown key 'mesages' (did you mean 'messages'?)"),
    ('{"functions": [], "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "'functions' is OpenAI's legacy format"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}', "needs 'content' or 'tool_calls'"),
    ('{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}',
     "'content' must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}',
     "'weight' is 0 or 1"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", '
     '"function": {"name": "get_weather", "arguments": "{\\"city\\": "}}]}], "tools": [TOOL]}',
     "the arguments of get_weather are not valid JSON"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", '
     '"function": {"name": "get_weather", "arguments": "[1]"}}]}], "tools": [TOOL]}',
     "must be a JSON object, not list"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", '
     '"function": {"name": "send_mail", "arguments": {}}}]}], "tools": [TOOL]}',
     "calls send_mail, which is not in the example's tools (get_weather)"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", '
     '"function": {"name": "get_weather", "arguments": {}}}]}]}', "the example has no 'tools'"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", '
     '"function": {"name": "get_weather", "arguments": {"city": "a<escape>b"}}}]}], "tools": [TOOL]}',
     "cannot be written in FunctionGemma's grammar"),
    ('{"messages": [{"role": "user", "content": "x", "tool_calls": []}, {"role": "assistant", "content": "y"}]}',
     "only assistant messages carry 'tool_calls'"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": [{"x": 1}]}',
     "tools[0] must be"),
]


@pytest.mark.parametrize("raw,message", BAD_LINES)
def test_bad_lines_are_refused_naming_the_line_and_the_fix(tmp_path, raw, message):
    path = tmp_path / "data.jsonl"
    good = json.dumps({"messages": [USER, {"role": "assistant", "content": "Sunny."}]})
    path.write_text(good + "\n\n" + raw.replace("TOOL", json.dumps(WEATHER)) + "\n")
    with pytest.raises(DataError) as exc:
        load_examples(path)
    assert str(path) in str(exc.value) and "line 3" in str(exc.value)
    assert message in str(exc.value), str(exc.value)


def test_every_problem_is_reported_at_once_up_to_a_limit(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("nope\n" * 50)
    with pytest.raises(DataError) as exc:
        load_examples(path)
    assert len(exc.value.problems) == 20 and "... and 30 more" in str(exc.value)


def test_missing_and_empty_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="the file is empty"):
        load_examples(tmp_path / "empty.jsonl")


def test_eval_files_need_the_expected_answer_last(tmp_path):
    path = tmp_path / "heldout.jsonl"
    write_jsonl(path, [{"messages": [USER, {"role": "assistant", "content": "Sunny."}, USER]}])
    assert load_examples(path)  # fine for training
    with pytest.raises(DataError, match="the last message must be the assistant's answer"):
        load_examples(path, require_final_assistant=True)


# --- masking: only the assistant's turns are learnt ------------------------------------------------


def test_a_call_is_learnt_as_the_grammar_writes_it_plus_the_stop(render):
    ex = example({"role": "developer", "content": "Be brief."}, USER,
                 {"role": "assistant", "tool_calls": [call(arguments={"city": "Oslo", "days": 3})]})
    [(ids, labels)] = prepare([ex], render, chars, 10_000).examples
    assert trained_text(ids, labels) == render_call("get_weather", {"city": "Oslo", "days": 3}) + CALL_STOP
    prompt = "".join(chr(t) for t, lab in zip(ids, labels) if lab == IGNORE)
    assert prompt == render(ex.messages[:-1], ex.tools, True), "everything before the answer is masked"
    assert labels[: len(prompt)] == [IGNORE] * len(prompt)


def test_every_assistant_turn_is_learnt_and_tool_responses_are_not(render):
    ex = example(USER, {"role": "assistant", "tool_calls": [call()]},
                 {"role": "tool", "name": "get_weather", "content": "3 degrees"},
                 {"role": "assistant", "content": "It is 3 degrees."})
    [(ids, labels)] = prepare([ex], render, chars, 10_000).examples
    # the template writes the stop itself before the response: learnt once, the response is masked
    assert trained_text(ids, labels) == (render_call("get_weather", {"city": "Oslo"}) + CALL_STOP
                                         + "It is 3 degrees.<end_of_turn>\n")
    full = render(ex.messages, ex.tools, False)
    assert "".join(map(chr, ids)) == full


def test_an_assistant_turn_with_weight_0_is_context_only(render):
    ex = example(USER, {"role": "assistant", "content": "Which city?", "weight": 0},
                 USER, {"role": "assistant", "content": "Oslo: 3 degrees."})
    [(ids, labels)] = prepare([ex], render, chars, 10_000).examples
    assert trained_text(ids, labels) == "Oslo: 3 degrees.<end_of_turn>\n"


def test_examples_over_max_length_are_left_out_and_counted(render):
    short = example(USER, {"role": "assistant", "content": "ok"}, line=1, tools=())
    long = example({"role": "user", "content": "x" * 500}, {"role": "assistant", "content": "ok"}, line=2, tools=())
    prepared = prepare([short, long], render, chars, 300)
    assert len(prepared.examples) == 1 and prepared.too_long == [2]
    assert prepared.trained_tokens == len("ok<end_of_turn>\n")


values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(lambda s: "<escape>" not in s),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True),
                                                                 inner, max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(arguments=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True), values, max_size=4))
def test_the_template_writes_typed_arguments_exactly_as_render_call(render, arguments):
    ex = example(USER, {"role": "assistant", "tool_calls": [call(arguments=arguments)]})
    [(ids, labels)] = prepare([ex], render, chars, 100_000).examples
    assert trained_text(ids, labels) == render_call("get_weather", arguments) + CALL_STOP


def test_a_template_that_writes_calls_another_way_is_refused(render):
    def json_calls(messages, tools, gen):  # a template that writes calls as JSON: nothing could parse them
        if messages and messages[-1].get("tool_calls"):
            return render(messages[:-1], tools, True) + json.dumps(messages[-1]["tool_calls"][0]["function"])
        return render(messages, tools, gen)

    ex = example(USER, {"role": "assistant", "tool_calls": [call()]}, line=7)
    with pytest.raises(TemplateError, match="line 7: the base model's chat template writes the assistant's call as"):
        prepare([ex], json_calls, chars, 10_000)


def test_a_call_written_with_another_key_order_still_reads_back_the_same(render):
    ex = example(USER, {"role": "assistant", "tool_calls": [call(arguments={"b": 1, "a": "x"})]})
    segments = [lora.Segment("<bos>...", False),
                lora.Segment(render_call("get_weather", {"a": "x", "b": 1}) + CALL_STOP, True, 1)]
    check_rendered_calls(ex, segments)  # no error: the served parser reads the same call


def test_a_template_that_rewrites_earlier_turns_is_refused():
    def unstable(messages, tools, gen):  # e.g. a template that drops earlier answers
        return "|".join(m["role"] for m in messages[-1:]) + ("|model" if gen else "")

    ex = example(USER, {"role": "assistant", "content": "a"}, USER, {"role": "assistant", "content": "b"})
    with pytest.raises(TemplateError, match="line 1, message 1: the chat template does not render .* growing prefix"):
        prepare([ex], unstable, chars, 10_000)


# --- options vLLM can serve -----------------------------------------------------------------------


def parse(*argv: str, tmp_path=None) -> argparse.Namespace:
    out = ["--out", str(tmp_path / "adapter")] if tmp_path else ["--out", "/nonexistent/adapter"]
    return cli.build_parser().parse_args(["data.jsonl", "--base", "google/functiongemma-270m-it", *out, *argv])


def test_defaults_are_functiongemma_s_usual_ones():
    args = parse()
    o = cli.options(args)
    assert (o.rank, o.alpha, o.dropout, o.max_lora_rank) == (16, 32, 0.05, 32)
    assert o.targets == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert (args.lr, args.epochs, args.batch_size, args.seed) == (2e-4, 3.0, 8, 0)
    assert cli.problems(args) == [] and check_options(LoraOptions()) == []


@pytest.mark.parametrize("argv,message", [
    (["--rank", "12"], "--rank 12: not one of vLLM's LoRA ranks"),
    (["--rank", "64"], "--rank 64 is above --max-lora-rank 32"),
    (["--rank", "64", "--max-lora-rank", "64"], None),
    (["--max-lora-rank", "24"], "--max-lora-rank 24: vLLM's --max-lora-rank takes only"),
    (["--targets", "q_proj,lm_head"], "--targets lm_head: vLLM cannot serve adapters that change lm_head"),
    (["--targets", "embed_tokens"], "--targets embed_tokens"),
    (["--targets", ","], "--targets is empty"),
    (["--modules-to-save", "lm_head"], "--modules-to-save lm_head: vLLM cannot serve"),
    (["--alpha", "0"], "--alpha 0: must be positive"),
    (["--dropout", "1"], "--dropout 1.0"),
    (["--lr", "0"], "--lr 0.0: must be positive"),
    (["--epochs", "0"], "--epochs 0.0"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_what_vllm_cannot_serve_is_refused_naming_the_option(argv, message):
    found = cli.problems(parse(*argv))
    if message is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(message), found


def test_an_existing_adapter_is_not_overwritten_by_default(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    [problem] = cli.problems(parse(tmp_path=tmp_path))
    assert "--out" in problem and "--overwrite" in problem
    assert cli.problems(parse("--overwrite", tmp_path=tmp_path)) == []


def test_refusals_stop_the_command_before_any_data_or_torch(capsys):
    assert cli.main(["missing.jsonl", "--base", "b", "--out", "/nonexistent/x", "--rank", "12"]) == 2
    assert "lorafleet train: --rank 12" in capsys.readouterr().err


def test_bad_data_stops_the_command_before_torch(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would fail
    (tmp_path / "data.jsonl").write_text("{}\n")
    assert cli.main([str(tmp_path / "data.jsonl"), "--base", "b", "--out", str(tmp_path / "a")]) == 2
    assert "line 1: 'messages' must be a non-empty list" in capsys.readouterr().err


def test_without_torch_the_command_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    write_jsonl(tmp_path / "data.jsonl", sample.dataset(4, seed=0))
    assert cli.main([str(tmp_path / "data.jsonl"), "--base", "google/functiongemma-270m-it",
                     "--out", str(tmp_path / "a")]) == 2
    assert "pip install 'lorafleet[train]'" in capsys.readouterr().err


def test_the_base_name_comes_from_the_hub_id_or_the_demo_build(tmp_path):
    assert cli.base_name_for("google/functiongemma-270m-it", None) == "google/functiongemma-270m-it"
    assert cli.base_name_for(str(tmp_path), "mine/base") == "mine/base"
    (tmp_path / "demo" / "base").mkdir(parents=True)
    (tmp_path / "demo" / "demo.json").write_text('{"base_name": "lorafleet/functiongemma-demo"}')
    assert cli.base_name_for(str(tmp_path / "demo" / "base"), None) == "lorafleet/functiongemma-demo"
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "config.json").write_text('{"_name_or_path": "google/functiongemma-270m-it"}')
    assert cli.base_name_for(str(tmp_path / "copy"), None) == "google/functiongemma-270m-it"
    (tmp_path / "copy" / "config.json").write_text('{"_name_or_path": "/tmp/x"}')
    assert cli.base_name_for(str(tmp_path / "copy"), None) is None


def test_steps_cover_every_example_of_every_epoch():
    assert lora.steps_for(240, 16, 1) == 15
    assert lora.steps_for(241, 16, 1) == 16
    assert lora.steps_for(10, 8, 2.5) == 5
    assert lora.steps_for(1, 8, 0.01) == 1


# --- the card -----------------------------------------------------------------------------------


def test_the_card_records_how_the_adapter_was_made_and_reads_back(tmp_path):
    record = {"base_model": "google/functiongemma-270m-it", "base": "google/functiongemma-270m-it", "rank": 16,
              "alpha": 32, "dropout": 0.05, "targets": ["q_proj"], "lr": 2e-4, "epochs": 3.0, "batch_size": 8,
              "seed": 0, "data": "train.jsonl", "data_sha256": "ab" * 32, "examples": 10, "trained_tokens": 99,
              "steps": 4, "final_loss": 0.1234, "device": "cpu", "seconds": 1.5, "versions": {"torch": "2.13.0"},
              "eval": {"data": "heldout.jsonl", "examples": 4, "call_accuracy": 0.75, "name_accuracy": 1.0,
                       "no_call_accuracy": None}}
    text = card.render_card("timer", record)
    for needle in ("base_model: google/functiongemma-270m-it", "| rank / alpha / dropout | 16 / 32 / 0.05 |",
                   "| seed | 0 |", "ab" * 32, "| steps | 4 |", "0.1234", "whole call 75.0%"):
        assert needle in text
    (tmp_path / "README.md").write_text(text)
    assert card.read_record(tmp_path) == record
    assert card.read_record(tmp_path / "absent") is None


def test_the_sample_dataset_is_seeded_valid_and_mixed(tmp_path):
    assert sample.dataset(20, seed=3) == sample.dataset(20, seed=3) != sample.dataset(20, seed=4)
    write_jsonl(tmp_path / "s.jsonl", sample.dataset(200, seed=0))
    examples = load_examples(tmp_path / "s.jsonl", require_final_assistant=True)
    calls = [ex.expected_calls for ex in examples]
    assert 100 < sum(1 for c in calls if c) < 190, "most ask for a timer, some are small talk"
    assert all(c == [] or (c[0][0] == "set_timer" and isinstance(c[0][1]["minutes"], int)) for c in calls)


# --- no torch at import ---------------------------------------------------------------------------


def test_nothing_here_imports_torch():
    code = ("import sys; import lorafleet.train.cli, lorafleet.train.data, lorafleet.train.lora, "
            "lorafleet.train.prepare, lorafleet.train.card, lorafleet.train.sample, lorafleet.tools.eval, "
            "lorafleet.tools.cli; heavy = {'torch', 'transformers', 'peft'} & set(sys.modules); "
            "print(sorted(heavy)); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lora_module_is_standalone_for_the_demo_builder():
    text = (DEMO_TRAINER).read_text()
    assert not re.search(r"^\s*(from|import) lorafleet", text, re.MULTILINE)



def test_the_container_command_mounts_paths_as_they_are_and_the_package_read_only(tmp_path):
    from lorafleet.train.container import PACKAGE_DIR, docker_command

    (tmp_path / "data").mkdir()
    (tmp_path / "base").mkdir()
    cmd = docker_command("img:1", tmp_path / "data" / "t.jsonl", tmp_path / "base", tmp_path / "out" / "a",
                         ["--rank", "8"], cidfile=tmp_path / "cid")
    assert cmd[:3] == ["docker", "run", "--rm"] and ["--network", "none"] == cmd[3:5]
    pairs = {cmd[i + 1] for i, x in enumerate(cmd) if x == "-v"}
    assert pairs == {f"{PACKAGE_DIR}:/opt/lorafleet-src/lorafleet:ro", f"{tmp_path / 'data'}:{tmp_path / 'data'}:ro",
                     f"{tmp_path / 'base'}:{tmp_path / 'base'}:ro", f"{tmp_path / 'out'}:{tmp_path / 'out'}"}
    assert cmd[cmd.index("img:1"):] == ["img:1", "-m", "lorafleet.train", str(tmp_path / "data" / "t.jsonl"), "--base",
                                        str(tmp_path / "base"), "--out", str(tmp_path / "out" / "a"), "--rank", "8"]
    hub = docker_command("img:1", tmp_path / "data" / "t.jsonl", "google/functiongemma-270m-it", tmp_path / "a",
                         gpus=True, network=True)
    assert "--network" not in hub and ["--gpus", "all"] == hub[hub.index("--gpus"):hub.index("--gpus") + 2]
    assert "HF_TOKEN" in hub and "google/functiongemma-270m-it" in hub
