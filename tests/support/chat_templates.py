"""Render a chat template as transformers does, and generate conversations to render.

`render` compiles a template the way transformers 5.19 does (`_cached_compile_jinja_template`: an
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loopcontrols, `raise_exception`,
and its own `tojson`), so a unit test renders without transformers. Where transformers is importable
(the serving image), `render_with_transformers` uses it directly.

`conversations(seed, count)` generates what the differential fixtures hold: typed declarations,
calls with every value type (null included), tool results as text, objects and lists, several calls
and turns, whitespace at the edges, and conversations the real template refuses.

    # in the serving image, with the real template at hand (never committed):
    python3 -m tests.support.chat_templates REAL.jinja tests/fixtures/functiongemma/differential.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

BOS = "<bos>"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "functiongemma"
DEMO_TEMPLATE = Path(__file__).resolve().parents[2] / "files" / "models" / "chat_template.jinja"


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def render(template: jinja2.Template, case: dict) -> dict:
    """{"text": rendering} or {"error": the refusal's message}."""
    try:
        return {"text": template.render(messages=case["messages"], tools=case.get("tools"),
                                        add_generation_prompt=case.get("add_generation_prompt", False), bos_token=BOS)}
    except jinja2.exceptions.TemplateError as error:
        return {"error": str(error)}


def render_with_transformers(source: str, case: dict) -> dict:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[case["messages"]], tools=case.get("tools"), chat_template=source,
            add_generation_prompt=case.get("add_generation_prompt", False), bos_token=BOS)
        return {"text": rendered[0]}
    except jinja2.exceptions.TemplateError as error:
        return {"error": str(error)}


# ---------------------------------------------------------------------------------------------
# Generated conversations
# ---------------------------------------------------------------------------------------------
WORDS = "weather city Paris Tokyo query rows alarm gym email ops report note, then! é 中文 😀".split()
KEYS = ["city", "Query", "limit", "unit", "when", "tags", "options", "a_b", "x-y", "v2.1", "Zeta", "alpha"]
TYPES = ["string", "integer", "number", "boolean", "array", "object"]


def _text(rng: random.Random) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))
    return rng.choice(["", " ", "\n", "  \t"]) + words + rng.choice(["", " ", "\n\n", " \t"])


def _value(rng: random.Random, depth: int = 0):
    kind = rng.choice(["str", "int", "float", "bool", "null", "list", "dict"] if depth < 2 else ["str", "int", "null"])
    if kind == "str":
        return _text(rng)
    if kind == "int":
        return rng.choice([0, -3, 7, 12345, 10**12])
    if kind == "float":
        return rng.choice([0.5, -2.25, 1e-05, 3.0, 1.5e20])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _arguments(rng: random.Random) -> dict:
    return {key: _value(rng) for key in rng.sample(KEYS, rng.randint(0, 4))}


def _schema(rng: random.Random, depth: int = 0) -> dict:
    kind = rng.choice(TYPES if depth < 2 else TYPES[:4])
    schema: dict = {"type": kind}
    if rng.random() < 0.85:
        schema["description"] = _text(rng)
    if kind == "string" and rng.random() < 0.4:
        schema["enum"] = rng.sample(["celsius", "fahrenheit", "asc", "desc"], 2)
    if kind == "array" and rng.random() < 0.7:
        schema["items"] = _schema(rng, depth + 1) if rng.random() < 0.7 else {"type": ["string", "null"]}
    if kind == "object" and rng.random() < 0.7:
        schema["properties"] = {k: _schema(rng, depth + 1) for k in rng.sample(KEYS, rng.randint(0, 3))}
        if schema["properties"] and rng.random() < 0.5:
            schema["required"] = rng.sample(list(schema["properties"]), 1)
    return schema


def _tool(rng: random.Random, name: str) -> dict:
    function: dict = {"name": name}
    if rng.random() < 0.9:
        function["description"] = _text(rng)
    shape = rng.random()
    if shape < 0.7:
        properties = {k: _schema(rng) for k in rng.sample(KEYS, rng.randint(0, 4))}
        function["parameters"] = {"type": "object", "properties": properties,
                                  "required": rng.sample(list(properties), rng.randint(0, len(properties)))}
    elif shape < 0.8:
        function["parameters"] = {"type": "object", "properties": {}}
    elif shape < 0.9:
        function["parameters"] = {"properties": {"q": {"type": "string"}}}  # no type: the real template leaves it open
    return {"type": "function", "function": function}


def _tool_message(rng: random.Random, name: str, call_id: str) -> dict:
    shape = rng.random()
    message: dict = {"role": "tool", "tool_call_id": call_id}
    if shape < 0.45:
        message.update(name=name, content=_text(rng) or "ok")
    elif shape < 0.6:
        message["content"] = {"name": name, "response": _arguments(rng)}
    elif shape < 0.7:
        message.update(name=name, content=_arguments(rng) or {"ok": True})
    elif shape < 0.8:
        message["content"] = [{"name": name, "response": _arguments(rng)}]
    elif shape < 0.85:
        message.update(name=name, content="")
    elif shape < 0.91:
        message["content"] = _text(rng) or "ok"  # no name: the real template refuses it
    elif shape < 0.93:
        message.update(name=name, content=rng.choice([42, ["not a mapping"]]))  # refused too
    else:
        message.update(name=" " + name + " ", content=_text(rng) or "ok")
    return message


def conversation(rng: random.Random) -> dict:
    names = ["get_weather", "run_sql", "set_alarm", "send-email", "ns.lookup"]
    tools = [_tool(rng, n) for n in rng.sample(names, rng.randint(0, 3))]
    messages: list[dict] = []
    opening = rng.random()
    if opening < 0.35:
        messages.append({"role": "developer", "content": "You are a model that can do function calling with the following functions"})
    elif opening < 0.5:
        messages.append({"role": "system", "content": _text(rng)})
    elif opening < 0.55:
        messages.append({"role": "system", "content": [{"type": "text", "text": _text(rng)}, {"type": "text", "text": " more "}]})
    for turn in range(rng.randint(1, 3)):
        user = rng.random()
        if user < 0.8:
            messages.append({"role": "user", "content": _text(rng)})
        elif user < 0.95:
            messages.append({"role": "user", "content": [{"type": "text", "text": _text(rng)}, {"type": "image"}]})
        else:
            messages.append({"role": "user"})
        if rng.random() < 0.6:
            calls = [{"id": f"call_{turn}_{i}", "type": "function",
                      "function": {"name": rng.choice(names), "arguments": _arguments(rng)}}
                     for i in range(rng.randint(1, 3))]
            if rng.random() < 0.05:  # arguments still as JSON text (vLLM parses them first; training data may not)
                calls[0]["function"]["arguments"] = json.dumps(calls[0]["function"]["arguments"])
            content = rng.choice([None, "", _text(rng)])
            assistant = {"role": "assistant", "tool_calls": calls}
            if content is not None or rng.random() < 0.5:
                assistant["content"] = content
            messages.append(assistant)
            if rng.random() < 0.85:
                messages += [_tool_message(rng, c["function"]["name"], c["id"]) for c in calls]
                if rng.random() < 0.8:
                    messages.append({"role": "assistant", "content": _text(rng)})
        elif rng.random() < 0.7:
            messages.append({"role": "assistant", "content": _text(rng)})
    return {"messages": messages, "tools": tools or None, "add_generation_prompt": rng.random() < 0.7}


def conversations(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [conversation(rng) for _ in range(count)]


def main(argv: list[str]) -> int:
    real_path, out_path = argv[:2]
    seed, count = (int(argv[2]), int(argv[3])) if len(argv) > 3 else (20261204, 300)
    real, ours = Path(real_path).read_text(), DEMO_TEMPLATE.read_text()
    same, lines = 0, []
    for case in conversations(seed, count):
        expected = render_with_transformers(real, case)
        same += render_with_transformers(ours, case) == expected
        lines.append(json.dumps({**case, "real": expected}, ensure_ascii=False))
    Path(out_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{same} of {count} conversations render identically (transformers, the real template and ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
