"""Prove a serving image runs what the deploy ships, before vLLM is recreated on it.

The plugins import vLLM's internals, which move between releases. The deploy runs this script in a
throwaway container of the new image (`docker run --rm --network none --entrypoint python3`, the
serve files read-only at /lorafleet and the storage roots read-only where vLLM's container has them)
whenever a server change swaps the image (lorafleet/deploy/decide.py), before anything touches the
running server:

    python3 /lorafleet/check_image.py --image IMAGE --model DIR [--tool-parser-plugin FILE]
        [--tool-call-parser NAME] [--middleware MODULE.OBJECT]... [--chat-template FILE_OR_TEXT]

Each plugin is imported as `vllm serve` imports it: the tool parser plugin from its file (and the
parser it names must then be registered with vLLM's ToolParserManager), each middleware by its
dotted name with this folder on the path, as entrypoint.py puts it. The chat template vLLM serves
(the tokenizer's, from the base model's folder) must render a tool declaration, a call and a named
tool result through transformers' apply_chat_template. One line per check; any failure names the
plugin, the error and the image, and the script exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# Where vLLM (0.32) keeps the registry that --tool-call-parser is looked up in.
TOOL_PARSER_MANAGER = "vllm.tool_parsers.abstract_tool_parser"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city."}},
                   "required": ["city"]}}}]
# As vLLM hands a conversation to the template: a call's arguments decoded, the result named (the middleware's work).
RESULT = "3 degrees in Oslo"
MESSAGES = [
    {"role": "developer", "content": "You are a model that can do function calling with the following functions"},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": RESULT},
]


class CheckFailed(Exception):
    """What a check found wrong, in words."""


def error_text(error: BaseException, source: str | None = None) -> str:
    """`Type: message`, and the line of `source` (a shipped file) that raised it, where the traceback passes there."""
    text = f"{type(error).__name__}: {error}"
    if source:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == source]
        if frames:
            text += f" (line {frames[-1].lineno} of {os.path.basename(source)}: {(frames[-1].line or '').strip()})"
    return text


def check_tool_parser(plugin: str | None, parser: str | None) -> str:
    """Import the plugin file as vLLM does (module named after the file), then find `parser` in its registry."""
    if plugin:
        path = os.path.abspath(plugin)
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"no Python module at {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except BaseException as error:  # noqa: BLE001 - whatever stops the import stops vLLM too
            raise CheckFailed(f"does not import: {error_text(error, path)}") from None
    if not parser:
        return "imports"
    try:
        manager = importlib.import_module(TOOL_PARSER_MANAGER).ToolParserManager
    except BaseException as error:  # noqa: BLE001
        raise CheckFailed(f"vLLM's ToolParserManager is not in {TOOL_PARSER_MANAGER}: {error_text(error)}") from None
    try:
        manager.get_tool_parser(parser)
    except KeyError:
        raise CheckFailed(f"imports, but no tool parser {parser!r} is registered with vLLM's ToolParserManager") from None
    except BaseException as error:  # noqa: BLE001 - a lazily registered parser of vLLM's own that does not import
        raise CheckFailed(f"the tool parser {parser!r} does not load: {error_text(error)}") from None
    return f"registers {parser}" if plugin else f"vLLM has the tool parser {parser}"


async def _no_app(scope, receive, send):  # what the middleware wraps here: it is built, never called
    return None


def check_middleware(qualname: str) -> str:
    """Import `MODULE.OBJECT` as vLLM's --middleware does; a class must build around an app, as Starlette builds it."""
    module_path, _, object_name = qualname.rpartition(".")
    try:
        imported = getattr(importlib.import_module(module_path), object_name)
    except BaseException as error:  # noqa: BLE001
        source = os.path.join(HERE, module_path.replace(".", "/") + ".py")
        raise CheckFailed(f"does not import: {error_text(error, source)}") from None
    if inspect.isclass(imported):
        try:
            imported(_no_app)
        except BaseException as error:  # noqa: BLE001
            raise CheckFailed(f"imports, but does not build around an app: {error_text(error)}") from None
        return "imports (a class, as vLLM adds it)"
    if inspect.iscoroutinefunction(imported):
        return "imports (a coroutine function)"
    raise CheckFailed("imports, but is neither a class nor a coroutine function: vLLM refuses it")


def check_chat_template(model: str, chat_template: str | None) -> str:
    """The served template renders a declaration, a call and a named tool result, through transformers."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        text = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=True,
                                             **({"chat_template": _template(chat_template)} if chat_template else {}))
    except BaseException as error:  # noqa: BLE001
        raise CheckFailed(f"does not render a tool conversation: {error_text(error)}") from None
    missing = [what for what, mark in (("the function's name", "get_weather"), ("the tool result", RESULT))
               if mark not in text]
    if missing:
        raise CheckFailed(f"renders a tool conversation without {' and '.join(missing)}: {text[:300]!r}")
    return "renders a tool declaration, a call and a named result"


def _template(value: str) -> str:
    """--chat-template as vLLM reads it: a file's text, or the template itself."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="the image this runs in (named in every message)")
    ap.add_argument("--model", required=True, help="the base model's folder, whose tokenizer has the chat template")
    ap.add_argument("--tool-parser-plugin")
    ap.add_argument("--tool-call-parser")
    ap.add_argument("--middleware", action="append", default=[])
    ap.add_argument("--chat-template")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    # vLLM imports --middleware by module name from the PYTHONPATH entrypoint.py sets: this folder first.
    sys.path.insert(0, HERE)
    checks = []
    if a.tool_parser_plugin or a.tool_call_parser:
        what = f"tool parser plugin {a.tool_parser_plugin}" if a.tool_parser_plugin else f"tool parser {a.tool_call_parser}"
        checks.append((what, lambda: check_tool_parser(a.tool_parser_plugin, a.tool_call_parser)))
    for qualname in a.middleware:
        checks.append((f"middleware {qualname}", lambda q=qualname: check_middleware(q)))
    checks.append((f"chat template of {a.model}", lambda: check_chat_template(a.model, a.chat_template)))
    failed = []
    for what, check in checks:
        try:
            print(f"lorafleet: ok: {what}: {check()}", flush=True)
        except CheckFailed as problem:
            failed.append(what)
            print(f"lorafleet: FAILED in {a.image}: {what}: {problem}", flush=True)
    if failed:
        print(f"lorafleet: the image {a.image} cannot serve what this deploy ships ({'; '.join(failed)}). The running "
              "server was not touched. Fix: set the image back to the one that serves now, or update the plugin "
              "(files/serving/) to this image's vLLM.", flush=True)
        return 1
    print(f"lorafleet: the image {a.image} imports every plugin and renders the chat template", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
