"""The demo model's chat template renders what FunctionGemma's own renders, byte for byte.

Proof against the real thing, not against our picture of it:
- tests/fixtures/functiongemma/published.json: renderings Google published in its gemma-cookbook
  notebooks (each case names its source), reproduced exactly;
- tests/fixtures/functiongemma/differential.jsonl: generated conversations (tests/support/chat_templates.py)
  rendered by google/functiongemma-270m-it's chat template with transformers 5.19 (the copy TRL keeps,
  trl/chat_templates/functiongemma.jinja at 5507e82, whose renderings match those notebooks); the real
  template itself is not in this repository. Ours must give the same text, or the same refusal.
"""

from __future__ import annotations

import json

import pytest

from lorafleet.deploy.layout import DEMO_FILES
from lorafleet.functiongemma import parse_calls, render_call
from tests.support.chat_templates import DEMO_TEMPLATE, FIXTURES, compile_template, conversations, render

PUBLISHED = json.loads((FIXTURES / "published.json").read_text(encoding="utf-8"))
DIFFERENTIAL = [json.loads(line) for line in (FIXTURES / "differential.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def template():
    return compile_template(DEMO_TEMPLATE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", PUBLISHED, ids=[c["why"][:60] for c in PUBLISHED])
def test_published_renderings_are_reproduced_exactly(template, case):
    assert render(template, case)["text"] + case.get("generated", "") == case["published"], case["source"]


def test_the_differential_set_covers_what_users_send():
    refused = [c for c in DIFFERENTIAL if "error" in c["real"]]
    assert len(DIFFERENTIAL) >= 100 and 10 <= len(refused) < len(DIFFERENTIAL) // 2
    text = "".join(c["real"].get("text", "") for c in DIFFERENTIAL)
    for written in ("None", "true", "false", "1e-05", "<start_function_response>response:", "{value:<escape>",
                    "<start_of_image>", ",enum:[", ",items:{", ",properties:{", "<end_function_call><start_function_call>"):
        assert written in text, written
    assert any("'name' must be provided" in c["real"]["error"] for c in refused)


@pytest.mark.parametrize("index", range(len(DIFFERENTIAL)))
def test_generated_conversations_render_as_the_real_template_renders_them(template, index):
    case = DIFFERENTIAL[index]
    assert render(template, case) == case["real"]


def test_the_fixtures_are_the_generator_s_output():
    # the differential set is reproducible: regenerate it with the command in tests/support/chat_templates.py
    regenerated = conversations(20261204, len(DIFFERENTIAL))
    assert [{k: c[k] for k in ("messages", "tools", "add_generation_prompt")} for c in DIFFERENTIAL] == regenerated


def test_the_demo_model_ships_this_template():
    assert DEMO_FILES["chat_template.jinja"] == DEMO_TEMPLATE


def test_an_openai_tool_result_without_name_is_refused_as_the_real_template_refuses_it(template):
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                      "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "3 degrees"}]
    assert render(template, {"messages": messages}) == {"error": "Invalid tool response: 'name' must be provided."}
    messages[-1]["name"] = "get_weather"  # what the server's middleware adds (lorafleet.functiongemma.name_tool_results)
    assert render(template, {"messages": messages})["text"].endswith(
        "<start_function_call>call:get_weather{city:<escape>Oslo<escape>}<end_function_call>"
        "<start_function_response>response:get_weather{value:<escape>3 degrees<escape>}<end_function_response>")


def test_a_call_the_template_writes_is_what_render_call_writes_and_parse_calls_reads(template):
    arguments = {"sound": None, "Hour": 7, "volume": 0.5, "enabled": True, "days": ["mon"], "snooze": {"z": 1, "A": None}}
    message = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "set_alarm", "arguments": arguments}}]}
    text = render(template, {"messages": [message]})["text"]
    written = text.removeprefix("<bos><start_of_turn>model\n").removesuffix("<start_function_response>")
    assert written == render_call("set_alarm", arguments)
    assert "sound:None" in written and written.index("enabled") < written.index("Hour") < written.index("sound")
    assert parse_calls(written) == ("", [("set_alarm", arguments)])
