"""FunctionGemma's call grammar (lorafleet/functiongemma.py): examples, refusals, and round trips
of generated calls through render_call, parse_calls and the streaming parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorafleet.functiongemma import END, ESCAPE, RESPONSE, START, Call, CallStream, CallSyntaxError, parse_calls, render_call
from tests.support.chat_templates import DEMO_TEMPLATE, compile_template, render


def call(body: str) -> str:
    return f"{START}call:{body}{END}"


def stream(chunks: list[str]) -> tuple[str, list[Call]]:
    """Feed chunks to a CallStream; return (joined content, calls) like parse_calls."""
    parser, events = CallStream(), []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    content = "".join(e for e in events if isinstance(e, str))
    calls = [e for e in events if isinstance(e, Call)]
    first_call = next((i for i, e in enumerate(events) if isinstance(e, Call)), len(events))
    assert all(isinstance(e, Call) for e in events[first_call:])  # content only before the first call
    return content, calls


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,name,arguments",
    [
        # Google's FunctionGemma docs
        (call("get_weather{location:<escape>London<escape>}"), "get_weather", {"location": "London"}),
        (call("set_alarm{hour:7,enabled:true,label:<escape>gym<escape>}"), "set_alarm", {"hour": 7, "enabled": True, "label": "gym"}),
        (call("get_current_temperature{location:<escape>Paris, France<escape>}"), "get_current_temperature", {"location": "Paris, France"}),
        (call("pwd{}"), "pwd", {}),
        # names with - and .
        (call("weather-api.v2.get{city:<escape>Oslo<escape>}"), "weather-api.v2.get", {"city": "Oslo"}),
        (call("a{x-y.z:1}"), "a", {"x-y.z": 1}),
    ],
)
def test_documented_calls(text, name, arguments):
    assert parse_calls(text) == ("", [(name, arguments)])


@pytest.mark.parametrize(
    "written,value",
    [
        ("<escape>London<escape>", "London"),
        ("<escape><escape>", ""),
        ("<escape>12345<escape>", "12345"),  # a string, even when it looks like a number
        ("<escape>true<escape>", "true"),
        ("<escape>{a:1},[b]:\"c\"<escape>", '{a:1},[b]:"c"'),
        ("<escape>x<end_function_call>y<escape>", "x<end_function_call>y"),
        ("<escape>Zürich 東京 😀\n<escape>", "Zürich 東京 😀\n"),
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        ("1e-05", 1e-05),
        ("2.5E+10", 2.5e10),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ("[1,<escape>a<escape>,null,[true]]", [1, "a", None, [True]]),
        ("{}", {}),
        ("{a:{b:{c:<escape>}<escape>}}}", {"a": {"b": {"c": "}"}}}),
        ("[{id:1,tags:[<escape>x<escape>]},{id:2,tags:[]}]", [{"id": 1, "tags": ["x"]}, {"id": 2, "tags": []}]),
    ],
)
def test_every_value_type(written, value):
    (_, [(_, arguments)]) = parse_calls(call(f"f{{v:{written}}}"))
    assert json.dumps(arguments["v"]) == json.dumps(value)  # types too: 1 is not 1.0, True is not 1


def test_text_before_calls_and_several_calls():
    text = "Sure, checking both.\n" + call("get_weather{city:<escape>Tokyo<escape>}") + "\n" + call("get_stock{symbol:<escape>GOOG<escape>,limit:3}") + "\n"
    assert parse_calls(text) == (
        "Sure, checking both.\n",
        [("get_weather", {"city": "Tokyo"}), ("get_stock", {"symbol": "GOOG", "limit": 3})],
    )


def test_text_without_a_call_is_all_content():
    assert parse_calls("I am the base model. {a:1} <escape>") == ("I am the base model. {a:1} <escape>", [])


@pytest.mark.parametrize(
    "text,reason",
    [
        (call("f{a:London}"), "bare word 'London'"),
        (call("f{a:<escape>London}"), "unfinished call"),
        (call("f{a:1"), "expected ',' or '}'"),
        (START + "call:f{a:1}", "unfinished call"),
        (START + "call:f{a:1", "unfinished call"),
        (START + "call:f", "unfinished call"),
        (call("f{a:1,b:2,}"), "expected a key"),
        (call("f{a:1}}"), "expected '<end_function_call>'"),
        (call("f{a:1,a:2}"), "duplicate key 'a'"),
        (call("f{a: 1}"), "expected a value"),
        (call("f {a:1}"), "expected '{'"),
        (call("{a:1}"), "expected a function name"),
        (call("my fn{a:1}"), "expected '{'"),
        (call("f{a:01}"), "'01' is not a JSON number"),
        (call("f{a:1.}"), "'1.' is not a JSON number"),
        (call("f{a:--1}"), "'--1' is not a JSON number"),
        (call("f{a:1e999}"), "too large"),
        (call("f{a:NaN}"), "bare word 'NaN'"),
        (call("f{a:True}"), "bare word 'True'"),
        (call("f{a:[1,2}"), "expected ',' or ']'"),
        (call("f{a:\"x\"}"), "expected a value"),
        (call("f{a:<escape>x<escape><escape>}"), "expected ',' or '}'"),
        (START + "get_weather{}" + END, "expected 'call:'"),
        (call("f{}") + " and more text", "text after a call"),
        (call("f{a:" + "[" * 80 + "]" * 80 + "}"), "nested deeper than"),
    ],
)
def test_bad_calls_raise_call_syntax_error(text, reason):
    with pytest.raises(CallSyntaxError, match=reason.replace("[", r"\[").replace("{", r"\{").replace("}", r"\}")) as caught:
        parse_calls("before " + text)
    assert 0 <= caught.value.offset <= len(caught.value.text)
    with pytest.raises(CallSyntaxError, match="FunctionGemma call"):  # the stream refuses it too
        stream(["before ", text])


@pytest.mark.parametrize(
    "name,arguments,problem",
    [
        ("get weather", {}, "function name 'get weather'"),
        ("", {}, "function name ''"),
        ("f", {"a b": 1}, "key 'a b'"),
        ("f", {"a": {"b:c": 1}}, "key 'b:c'"),
        ("f", {"a": "x<escape>y"}, "contains <escape>"),
        ("f", {"a": float("nan")}, "no JSON form"),
        ("f", {"a": [float("inf")]}, "no JSON form"),
        ("f", {"a": {1, 2}}, "not JSON-like"),
    ],
)
def test_render_refuses_what_the_grammar_cannot_carry(name, arguments, problem):
    with pytest.raises(ValueError, match=problem):
        render_call(name, arguments)


def test_render_writes_what_the_real_template_writes():
    # keys sorted case-insensitively at every level (the template's dictsort), null as Python's None
    assert render_call("set_alarm", {"hour": 7, "enabled": True, "label": "gym", "sound": None}) == call(
        "set_alarm{enabled:true,hour:7,label:<escape>gym<escape>,sound:None}"
    )
    assert render_call("f", {"z": {"b": 1, "A": None, "a2": [0.5, "s"]}, "Y": 1e-05}) == call(
        "f{Y:1e-05,z:{A:None,a2:[0.5,<escape>s<escape>],b:1}}"
    )


def test_what_the_model_writes_after_its_calls_and_response_marker_is_dropped():
    # measured on Gemma 3 270M at real size, served without <start_function_response> as a stop token
    text = ("<start_function_call>call:set_timer{label:<escape>tea<escape>,minutes:3}<end_function_call>"
            "<start_function_response>tea:set:call:set_timer{label")
    expected = ("", [("set_timer", {"label": "tea", "minutes": 3})])
    assert parse_calls(text) == expected
    assert stream(list(text)) == expected and stream([text]) == expected
    assert parse_calls(text[: text.index(RESPONSE) + 19]) == expected, "a marker cut by the token budget ends them too"
    with pytest.raises(CallSyntaxError, match="unfinished call"):  # "<start_function_" may be a call cut short
        parse_calls(text[: text.index(RESPONSE) + 16])
    assert parse_calls("No call. " + RESPONSE) == ("No call. " + RESPONSE, []), "before any call it is content"


@pytest.mark.parametrize("word", ["None", "null"])
def test_null_is_read_as_the_real_model_writes_it_and_as_json_writes_it(word):
    text = call(f"set_alarm{{hour:7,sound:{word}}}")
    assert parse_calls(text) == ("", [("set_alarm", {"hour": 7, "sound": None})])
    assert stream([text[:-30], text[-30:]]) == ("", [("set_alarm", {"hour": 7, "sound": None})])


def test_stream_gives_content_early_and_holds_back_a_possible_start():
    parser = CallStream()
    assert parser.feed("Hello <b>") == ["Hello <b>"]
    assert parser.feed(" <start_fun") == [" "]
    assert parser.pending == "<start_fun"
    assert parser.feed("ction_call>call:f{a:") == []
    assert parser.feed("1}<end_function_call>") == [Call("f", {"a": 1})]
    assert parser.close() == []


def test_stream_reads_an_end_marker_inside_a_string_and_one_split_across_chunks():
    text = call("f{s:<escape>a<end_function_call>b<escape>}")
    parser = CallStream()
    assert parser.feed(text[:-5]) == []  # the first END is inside the string
    assert parser.feed(text[-5:]) == [Call("f", {"s": "a<end_function_call>b"})]


def test_stream_gives_held_back_text_at_close():
    parser = CallStream()
    assert parser.feed("a <") == ["a "]
    assert parser.close() == ["<"]


def test_stream_reports_an_error_after_the_calls_before_it():
    parser = CallStream()
    assert parser.feed(call("f{}") + "junk" + END) == [Call("f", {})]
    with pytest.raises(CallSyntaxError, match="text after a call"):
        parser.close()


def test_stream_pending_is_the_raw_text_after_an_error():
    parser = CallStream()
    assert parser.feed("hi ") == ["hi "]
    with pytest.raises(CallSyntaxError):
        parser.feed(call("f{a:London}"))
    assert parser.pending == call("f{a:London}")


# --- generated calls ---------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True)
PIECES = st.sampled_from(
    ["{", "}", "[", "]", ",", ":", '"', "'", "\\", "<", ">", "<escape", "escape>", "<escape<", START, END,
     "null", "true", "1e5", "-", " ", "\n", "\t", "é", "中文", "😀", "\u200b"]
)
STRINGS = st.lists(st.one_of(st.text(max_size=8), PIECES), max_size=6).map("".join).filter(lambda s: ESCAPE not in s)
SCALARS = st.one_of(
    STRINGS, st.booleans(), st.none(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4), max_leaves=24
)
ARGUMENTS = st.dictionaries(NAMES, VALUES, max_size=5)
CALLS = st.tuples(NAMES, ARGUMENTS)
CONTENT = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(["<", "<start_", "<start_function_call", END, "{", "call:"])), max_size=4).map("".join).filter(lambda s: START not in s)


def same(a, b) -> bool:
    """Equal with types: 1 != 1.0 != True (nested key order aside)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=400, deadline=None)
@given(CALLS)
def test_render_then_parse_is_the_identity(generated):
    name, arguments = generated
    (content, [(parsed_name, parsed)]) = parse_calls(render_call(name, arguments))
    assert (content, parsed_name) == ("", name)
    assert same(parsed, arguments)
    assert list(parsed) == sorted(arguments, key=str.lower)  # written sorted, as the template writes them
    assert render_call(parsed_name, parsed) == render_call(name, arguments)  # and back


IMAGINED = ["", RESPONSE, RESPONSE + "response:f{value:<escape>x<escape>}" + END + "<start_function_call>call:g{a", " " + RESPONSE + "{"]


@settings(max_examples=300, deadline=None)
@given(CONTENT, st.lists(CALLS, min_size=0, max_size=3), st.sampled_from(["", "\n", " \n "]),
       st.sampled_from(IMAGINED), st.data())
def test_stream_in_random_chunks_equals_parse_calls(content, calls, gap, imagined, data):
    # a model whose server does not stop on <start_function_response> goes on imagining the response
    text = content + gap.join(render_call(n, a) for n, a in calls) + (gap + imagined if calls else "")
    expected = parse_calls(text)
    assert expected[0] == (content if calls else text)
    assert [n for n, _ in expected[1]] == [n for n, _ in calls]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    content_streamed, calls_streamed = stream(chunks)
    assert content_streamed == expected[0]
    assert [n for n, _ in calls_streamed] == [n for n, _ in expected[1]]
    assert all(same(a, b) for (_, a), (_, b) in zip(calls_streamed, expected[1]))


@settings(max_examples=200, deadline=None)
@given(st.lists(CALLS, min_size=1, max_size=3), st.integers(1, 40), st.data())
def test_a_stream_cut_short_is_an_unfinished_call(calls, drop, data):
    text = "".join(render_call(n, a) for n, a in calls)
    cut = text[: max(len(text) - drop, 0)]
    with pytest.raises(CallSyntaxError, match="unfinished call|expected"):
        parse_calls(cut if START in cut else START)
    with pytest.raises(CallSyntaxError):
        stream([cut if START in cut else START])


# --- the chat template renders calls as render_call does ---------------------------------------


@pytest.fixture(scope="module")
def template():
    return compile_template(DEMO_TEMPLATE.read_text())


def template_call(template, name: str, arguments: dict) -> str:
    """The tool call of an assistant turn as the demo model's chat template renders it."""
    message = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}
    rendered = render(template, {"messages": [message]})["text"]
    return rendered.removeprefix("<bos><start_of_turn>model\n").removesuffix("<start_function_response>")


@pytest.mark.parametrize(
    "name,arguments",
    [
        ("get_weather", {"location": "London"}),
        ("set_alarm", {"hour": 7, "enabled": True, "label": "gym"}),
        ("f", {"z": {"b": 1, "A": None, "a2": [0.5, "s", -1e-07, 1e16]}, "y": [{"k": False}, []], "e": {}}),
    ],
)
def test_chat_template_writes_what_render_call_writes(template, name, arguments):
    assert template_call(template, name, arguments) == render_call(name, arguments)


@settings(max_examples=200, deadline=None)
@given(CALLS)
def test_chat_template_writes_generated_calls_as_render_call_does(template, generated):
    name, arguments = generated
    assert template_call(template, name, arguments) == render_call(name, arguments)
