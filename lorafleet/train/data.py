"""OpenAI fine-tuning JSONL: read, validate, and normalise for the chat template and for the API.

One example per line: ``{"messages": [...], "tools": [...]}``. Assistant turns may carry
``tool_calls`` whose ``function.arguments`` is a JSON string (OpenAI's format) or an object
(Google's FunctionGemma guide); both become an object here, the form the chat template renders.
Every problem names the file, the line and the fix; all of them are reported at once.

Standard library and :mod:`lorafleet.functiongemma` only: the eval tool and the unit tests
import it without torch.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.functiongemma import ToolResultError, name_tool_results, render_call

ROLES = ("system", "developer", "user", "assistant", "tool")
EXAMPLE_KEYS = ("messages", "tools", "parallel_tool_calls")
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "weight", "refusal")
MAX_PROBLEMS = 20  # a broken file can have thousands: the first ones say enough


class DataError(ValueError):
    """The JSONL file has problems; ``problems`` lists them, each with its line."""

    def __init__(self, path: str, problems: list[str], total: int | None = None):
        self.path, self.problems = path, problems
        total = len(problems) if total is None else total
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(f"{path}: {total} problem(s):\n  " + "\n  ".join(problems) + more)


@dataclass(frozen=True)
class Example:
    """One conversation: messages with tool-call arguments as objects, the tools, its line in the file."""

    line: int
    messages: list[dict]
    tools: list[dict] | None

    @property
    def final(self) -> dict | None:
        """The last message if it is the assistant's: what an eval expects."""
        return self.messages[-1] if self.messages and self.messages[-1].get("role") == "assistant" else None

    @property
    def expected_calls(self) -> list[tuple[str, dict]]:
        """The calls of the final assistant turn as (name, arguments); empty when it answers in text."""
        final = self.final or {}
        return [(c["function"]["name"], c["function"]["arguments"]) for c in final.get("tool_calls") or []]

    def prompt_messages(self) -> list[dict]:
        """The messages before the final assistant turn, as the OpenAI API takes them (arguments as strings)."""
        messages = self.messages[:-1] if self.final else self.messages
        return [api_message(m) for m in messages]


def api_message(m: dict) -> dict:
    """A message in the API's form: tool-call arguments as JSON strings, no training-only keys."""
    out = {k: v for k, v in m.items() if k != "weight"}
    if m.get("role") == "tool" and not isinstance(m.get("content"), (str, type(None))):
        out["content"] = json.dumps(m["content"], ensure_ascii=False)  # the API takes a result as text only
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c.get("id") or f"call_{i}", "type": "function",
             "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])}}
            for i, c in enumerate(m["tool_calls"])]
    return out


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values with their types: bool, int, float, str, null, list and object differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b


def fingerprint(path: str | Path) -> str:
    """sha256 of the file's bytes: the data fingerprint recorded in the adapter's card."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unknown(keys, allowed, where: str) -> list[str]:
    problems = []
    for k in keys:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (allowed: {', '.join(allowed)})"
            problems.append(f"{where}: unknown key {k!r}{hint}")
    return problems


def _check_tools(tools: Any, where: str) -> tuple[list[str], set[str]]:
    if tools is None:
        return [], set()
    if not isinstance(tools, list):
        return [f"{where}: 'tools' must be a list of {{\"type\": \"function\", \"function\": {{...}}}}"], set()
    problems, names = [], set()
    for j, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            problems.append(f"{where}: tools[{j}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                            "\"parameters\": {...}}}}")
            continue
        if tool.get("type", "function") != "function":
            problems.append(f"{where}: tools[{j}] has type {tool.get('type')!r}; only \"function\" tools exist")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            problems.append(f"{where}: tools[{j}] ({fn['name']}): 'parameters' must be a JSON schema object")
        names.add(fn["name"])
    return problems, names


def _normalise_call(call: Any, where: str, declared: set[str], have_tools: bool) -> tuple[list[str], dict | None]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return [f"{where}: a tool call must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                "\"arguments\": ...}}}}"], None
    name, args = fn["name"], fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as exc:
            return [f"{where}: the arguments of {name} are not valid JSON ({exc}): {fn['arguments'][:80]!r}"], None
    if not isinstance(args, dict):
        return [f"{where}: the arguments of {name} must be a JSON object, not {type(args).__name__}"], None
    problems = []
    if not have_tools:
        problems.append(f"{where}: calls {name}, but the example has no 'tools': declare the function the model "
                        "may call, as in a request")
    elif name not in declared:
        problems.append(f"{where}: calls {name}, which is not in the example's tools ({', '.join(sorted(declared))})")
    try:
        render_call(name, args)
    except ValueError as exc:
        problems.append(f"{where}: the call to {name} cannot be written in FunctionGemma's grammar: {exc}")
    out = {**call, "type": "function", "function": {"name": name, "arguments": args}}
    return problems, out


def _content_ok(content: Any, role: str) -> bool:
    if content is None or isinstance(content, str):
        return True
    if role == "tool":  # a result as an object, or a list of {"name", "response"} objects (Google's form)
        return isinstance(content, dict) or (isinstance(content, list) and all(isinstance(p, dict) for p in content))
    return isinstance(content, list) and all(
        isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
        for p in content)


def parse_example(obj: Any, line: int, require_final_assistant: bool = False) -> tuple[list[str], Example | None]:
    """Validate one decoded line; returns (problems, the normalised example or None)."""
    at = f"line {line}"
    if not isinstance(obj, dict):
        return [f"{at}: each line must be a JSON object {{\"messages\": [...], \"tools\": [...]}}"], None
    problems = _unknown([k for k in obj if k != "functions"], EXAMPLE_KEYS, at)
    if "functions" in obj:
        problems.append(f"{at}: 'functions' is OpenAI's legacy format: declare them as 'tools' "
                        "([{\"type\": \"function\", \"function\": {...}}])")
    tool_problems, declared = _check_tools(obj.get("tools"), at)
    problems += tool_problems
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + [f"{at}: 'messages' must be a non-empty list"], None
    out_messages = []
    have_tools = bool(obj.get("tools"))
    for i, m in enumerate(messages):
        where = f"{at}, messages[{i}]"
        if not isinstance(m, dict):
            problems.append(f"{where}: a message must be an object with 'role' and 'content'")
            continue
        problems += _unknown(m.keys(), MESSAGE_KEYS + ("function_call",), where)
        role = m.get("role")
        if role not in ROLES:
            problems.append(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
            continue
        if "function_call" in m:
            problems.append(f"{where}: 'function_call' is OpenAI's legacy format: use 'tool_calls'")
        if not _content_ok(m.get("content"), role):
            problems.append(f"{where}: 'content' must be a string, null, or a list of text parts"
                            + (", an object, or a list of objects" if role == "tool" else ""))
        m = copy.deepcopy(m)
        if "weight" in m and (role != "assistant" or m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
            problems.append(f"{where}: 'weight' is 0 or 1, on assistant messages only")
        if m.get("tool_calls") is not None:
            if role != "assistant":
                problems.append(f"{where}: only assistant messages carry 'tool_calls'")
            elif not isinstance(m["tool_calls"], list):
                problems.append(f"{where}: 'tool_calls' must be a list")
            else:
                calls = []
                for k, call in enumerate(m["tool_calls"]):
                    call_problems, norm = _normalise_call(call, f"{where}.tool_calls[{k}]", declared, have_tools)
                    problems += call_problems
                    calls.append(norm)
                m["tool_calls"] = calls
        elif role == "assistant" and m.get("content") in (None, "", []):
            problems.append(f"{where}: an assistant message needs 'content' or 'tool_calls'")
        out_messages.append(m)
    try:
        out_messages = name_tool_results(out_messages) or out_messages  # as the server names them for the template
    except ToolResultError as exc:
        problems.append(f"{at}, {exc}")
    assistants = [m for m in out_messages if m.get("role") == "assistant"]
    if not assistants:
        problems.append(f"{at}: no assistant message: nothing to learn or to expect")
    elif require_final_assistant and out_messages[-1].get("role") != "assistant":
        problems.append(f"{at}: the last message must be the assistant's answer that the eval expects")
    if problems:
        return problems, None
    return [], Example(line, out_messages, obj.get("tools") or None)


def load_examples(path: str | Path, require_final_assistant: bool = False) -> list[Example]:
    """Every example of a JSONL file; raises DataError listing the problems (blank lines are skipped)."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, ["no such file: give the path of an OpenAI fine-tuning JSONL file"]) from None
    except UnicodeDecodeError as exc:
        raise DataError(path, [f"not UTF-8 text ({exc})"]) from None
    problems: list[str] = []
    examples: list[Example] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            problems.append(f"line {n}: not valid JSON ({exc})")
            continue
        line_problems, example = parse_example(obj, n, require_final_assistant)
        problems += line_problems
        if example:
            examples.append(example)
    if not problems and not examples:
        problems.append("no examples: the file is empty")
    if problems:
        raise DataError(path, problems[:MAX_PROBLEMS], len(problems))
    return examples


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` one JSON object a line (UTF-8, non-ASCII kept)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
