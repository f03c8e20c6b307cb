"""FunctionGemma's function calls: render one, parse a model's output, parse a stream of chunks.

Standard library only: vLLM's tool parser plugin (deploy/serving/functiongemma_tool_parser.py)
loads this file inside the serving container.  The grammar is what FunctionGemma's chat template
writes for a tool call (the real one, and files/models/chat_template.jinja, which renders as it does):

    output  = content { ws call } ws [ "<start_function_response>" rest ]
              content: any text before the first call; rest: any text, dropped
    call    = "<start_function_call>" "call:" name object "<end_function_call>"
    object  = "{" [ name ":" value { "," name ":" value } ] "}"
    value   = string | number | "true" | "false" | "None" | "null" | list | object
    list    = "[" [ value { "," value } ] "]"
    string  = "<escape>" any text without "<escape>" "<escape>"
    number  = a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?  (as Python prints it: 1e-05)
    name    = one or more of A-Z a-z 0-9 _ - .
    ws      = whitespace, dropped (only between and after calls)

The model ends its calls with ``<start_function_response>`` (where the template writes the
responses): what follows it is the model imagining a response, and is dropped.  A server that
stops on that token never sends it; one that does not (a base whose tokenizer splits it into text,
a generation config without it) still gives the calls.
Null is written ``None`` (the template prints Python's value); ``null`` is read too.  Keys are
written sorted, case-insensitively (the template's ``dictsort``), at every level.  Nothing else is
accepted: no spaces inside a call, no bare words, no text after a call.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

START = "<start_function_call>"
END = "<end_function_call>"
RESPONSE = "<start_function_response>"  # after the calls: the turn waits for their responses
ESCAPE = "<escape>"
MAX_DEPTH = 64  # lists and objects nested deeper are refused, never a RecursionError

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_NUMBER_CHARS = re.compile(r"[-+.0-9eE]+")  # a number ends at the first other character
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z]+")
_WORDS = {"true": True, "false": False, "None": None, "null": None}
_WHITESPACE = re.compile(r"\s*")


class Call(NamedTuple):
    """One function call: its name and its arguments as JSON-like Python values."""

    name: str
    arguments: dict[str, Any]


class CallSyntaxError(ValueError):
    """The text holds a function call the grammar does not allow (or an unfinished one)."""

    def __init__(self, reason: str, text: str, offset: int):
        self.reason, self.text, self.offset = reason, text, offset
        before, after = text[max(0, offset - 40) : offset], text[offset : offset + 40]
        super().__init__(f"FunctionGemma call: {reason} at offset {offset}: {before!r} >>> {after!r}")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_call(name: str, arguments: dict[str, Any]) -> str:
    """The call as the chat template writes it: ``<start_function_call>call:NAME{k:v,...}<end_function_call>``.

    Keys are sorted case-insensitively at every level and null is ``None``, as FunctionGemma's
    template writes them.  Raises ValueError for what the grammar cannot carry: a name or key
    outside ``A-Z a-z 0-9 _ - .``, a string containing ``<escape>``, a NaN or infinity.
    """
    return f"{START}call:{_checked_name(name, 'function name')}{_render_object(arguments)}{END}"


def _checked_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} cannot be written in a FunctionGemma call: use letters, digits, _ - .")
    return name


def _render_object(obj: dict[str, Any]) -> str:
    items = sorted(obj.items(), key=lambda item: str(item[0]).lower())
    return "{" + ",".join(f"{_checked_name(k, 'key')}:{_render_value(v)}" for k, v in items) + "}"


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        if ESCAPE in value:
            raise ValueError(f"string {value!r} contains {ESCAPE}, which would end it early")
        return ESCAPE + value + ESCAPE
    if isinstance(value, bool):  # before int: True is an int too
        return "true" if value else "false"
    if value is None:
        return "None"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"number {value!r} has no JSON form")
        return repr(value)  # what Jinja prints (str): the shortest text that reads back as the same float
    if isinstance(value, dict):
        return _render_object(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render_value(v) for v in value) + "]"
    raise ValueError(f"value {value!r} of type {type(value).__name__} is not JSON-like")


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class _Incomplete(Exception):
    """The text ends inside a call: more text may still complete it."""


class _Reader:
    """Recursive descent over ``text`` from ``pos``; raises _Incomplete at a premature end."""

    def __init__(self, text: str, pos: int = 0, whole: bool = False):
        self.text, self.pos, self.depth = text, pos, 0
        self.whole = whole  # the text is all there is: a cut-off RESPONSE at its end is one (unless it may be a call)
        self.ended = False  # RESPONSE came after the calls: nothing after it is read

    def error(self, reason: str, offset: int | None = None) -> CallSyntaxError:
        return CallSyntaxError(reason, self.text, self.pos if offset is None else offset)

    def peek(self) -> str:
        if self.pos >= len(self.text):
            raise _Incomplete
        return self.text[self.pos]

    def literal(self, expected: str) -> None:
        if self.text.startswith(expected, self.pos):
            self.pos += len(expected)
            return
        rest = self.text[self.pos :]
        if len(rest) < len(expected) and expected.startswith(rest):
            raise _Incomplete
        raise self.error(f"expected {expected!r}")

    def token(self, pattern: re.Pattern[str], what: str) -> str:
        """A run of ``pattern``'s characters, which cannot be known complete at the end of the text."""
        match = pattern.match(self.text, self.pos)
        if match is None:
            self.peek()
            raise self.error(f"expected {what}")
        if match.end() == len(self.text):
            raise _Incomplete
        self.pos = match.end()
        return match.group()

    def next_call(self) -> Call | None:
        """The call after optional whitespace, or None if only whitespace (or RESPONSE and anything) is left."""
        self.pos = _WHITESPACE.match(self.text, self.pos).end()
        if self.pos == len(self.text):
            return None
        rest = self.text[self.pos :]
        if rest.startswith(RESPONSE) or (self.whole and RESPONSE.startswith(rest) and not START.startswith(rest)):
            self.ended = True
            return None
        if len(rest) < len(RESPONSE) and RESPONSE.startswith(rest) and not START.startswith(rest):
            raise _Incomplete
        rest = self.text[self.pos : self.pos + len(START)]
        if not START.startswith(rest):
            raise self.error(f"text after a call: only whitespace, another {START} or {RESPONSE} may follow {END}")
        self.literal(START)
        self.literal("call:")
        name = self.token(_NAME, "a function name (letters, digits, _ - .)")
        arguments = self.mapping()
        self.literal(END)
        return Call(name, arguments)

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"lists and objects nested deeper than {MAX_DEPTH}")

    def mapping(self) -> dict[str, Any]:
        self.nested()
        self.literal("{")
        result: dict[str, Any] = {}
        if self.peek() != "}":
            while True:
                at = self.pos
                key = self.token(_NAME, "a key (letters, digits, _ - .)")
                if key in result:
                    raise self.error(f"duplicate key {key!r}", at)
                self.literal(":")
                result[key] = self.value()
                if self.peek() != ",":
                    break
                self.pos += 1
        if self.peek() != "}":
            raise self.error("expected ',' or '}' after a value")
        self.pos += 1
        self.depth -= 1
        return result

    def sequence(self) -> list[Any]:
        self.nested()
        self.literal("[")
        result: list[Any] = []
        if self.peek() != "]":
            while True:
                result.append(self.value())
                if self.peek() != ",":
                    break
                self.pos += 1
        if self.peek() != "]":
            raise self.error("expected ',' or ']' after a value")
        self.pos += 1
        self.depth -= 1
        return result

    def value(self) -> Any:
        first = self.peek()
        if first == "<":
            self.literal(ESCAPE)
            end = self.text.find(ESCAPE, self.pos)
            if end < 0:
                raise _Incomplete
            text, self.pos = self.text[self.pos : end], end + len(ESCAPE)
            return text
        if first == "{":
            return self.mapping()
        if first == "[":
            return self.sequence()
        if first == "-" or "0" <= first <= "9":
            at = self.pos
            number = self.token(_NUMBER_CHARS, "a number")
            if not _NUMBER.fullmatch(number):
                raise self.error(f"{number!r} is not a JSON number", at)
            if not any(c in number for c in ".eE"):
                return int(number)
            if not math.isfinite(result := float(number)):
                raise self.error(f"{number!r} is too large for a float", at)
            return result
        if _WORD.match(first):
            at = self.pos
            word = self.token(_WORD, "a value")
            if word not in _WORDS:
                raise self.error(f"bare word {word!r}: strings are written {ESCAPE}text{ESCAPE}", at)
            return _WORDS[word]
        raise self.error(f"expected a value: {ESCAPE}string{ESCAPE}, number, true, false, None, [list] or {{object}}")


def parse_calls(text: str) -> tuple[str, list[Call]]:
    """Split a model's output into the content before the first call and the calls.

    Raises CallSyntaxError if anything from the first ``<start_function_call>`` on is not
    calls and whitespace as the grammar says (an unfinished call included).
    """
    start = text.find(START)
    if start < 0:
        return text, []
    return text[:start], _read_calls(text, start)


def _read_calls(text: str, start: int) -> list[Call]:
    reader, calls = _Reader(text, start, whole=True), []
    try:
        while (call := reader.next_call()) is not None:
            calls.append(call)
    except _Incomplete:
        raise CallSyntaxError(f"unfinished call: the text ends before its {END}", text, text.rfind(START)) from None
    return calls


class CallStream:
    """Incremental ``parse_calls``: feed chunks, get content and calls as soon as they are certain.

    ``feed`` returns events: ``str`` for content (given out as soon as it cannot be the start
    of a call) and ``Call`` for each call once its ``<end_function_call>`` arrives.  The events
    of a whole stream equal ``parse_calls`` of the whole text: joined content strings, then the
    calls.  A grammar error raises CallSyntaxError from ``feed`` or ``close``, after every event
    before it has been given out; ``pending`` is then the raw text not given out.
    """

    def __init__(self) -> None:
        self.pending = ""  # received and not yet given out
        self._in_calls = False  # the first call has started: no more content
        self._scanned = 0  # pending[:_scanned] holds no END that could complete a call
        self._error: CallSyntaxError | None = None
        self._ended = False  # RESPONSE came after the calls: the rest of the stream is dropped

    def feed(self, chunk: str) -> list[str | Call]:
        """Take the next chunk; return the content and calls it makes certain."""
        self._raise_pending_error()
        if self._ended:
            return []
        self.pending += chunk
        events: list[str | Call] = []
        if not self._in_calls:
            start = self.pending.find(START)
            if start < 0:
                cut = len(self.pending) - _partial_suffix(self.pending, START)
                if cut:
                    events.append(self.pending[:cut])
                    self.pending = self.pending[cut:]
                return events
            if start:
                events.append(self.pending[:start])
            self.pending, self._in_calls = self.pending[start:], True
        try:
            # a call can only be complete once an END has arrived past what was scanned, and the calls
            # end once RESPONSE follows one
            while (self.pending.find(END, max(0, self._scanned - len(END) + 1)) >= 0
                   or self.pending.lstrip().startswith(RESPONSE)):
                reader = _Reader(self.pending)
                try:
                    call = reader.next_call()
                except _Incomplete:  # that END was inside a string
                    self._scanned = len(self.pending)
                    break
                if call is None:
                    self._ended, self.pending = reader.ended, "" if reader.ended else self.pending
                    break
                events.append(call)
                self.pending, self._scanned = self.pending[reader.pos :], 0
        except CallSyntaxError as error:
            if not events:
                raise
            self._error = error
        return events

    def close(self) -> list[str | Call]:
        """End of the stream: the content held back, or CallSyntaxError for an unfinished call."""
        self._raise_pending_error()
        if self._ended:
            return []
        if not self._in_calls:
            events: list[str | Call] = [self.pending] if self.pending else []
            self.pending = ""
            return events
        calls: list[str | Call] = list(_read_calls(self.pending, 0))  # usually only whitespace is left
        self.pending = ""
        return calls

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


# ---------------------------------------------------------------------------------------------
# Tool results
# ---------------------------------------------------------------------------------------------


class ToolResultError(ValueError):
    """A tool message FunctionGemma's template cannot render and no call names: ``index`` is its place."""

    def __init__(self, index: int, reason: str):
        self.index, self.reason = index, reason
        super().__init__(f"messages[{index}]: {reason}")


def _carries_names(content: Any) -> bool:
    """Results given as {"name", "response"} objects name their function themselves."""
    def named(item: Any) -> bool:
        return isinstance(item, dict) and "name" in item and "response" in item
    return named(content) or (isinstance(content, list) and bool(content) and all(map(named, content)))


def name_tool_results(messages: list[Any]) -> list[Any] | None:
    """``messages`` with each unnamed tool result named after the call it answers, or None if none needs it.

    FunctionGemma's template writes a result as ``response:NAME{...}`` and refuses a tool message
    without ``name``; an OpenAI client sends only ``tool_call_id``.  The name is the function of
    the earlier assistant call with that ``id``.  Raises ToolResultError for a result that answers
    no call.  The messages given are not changed: those named are copies.
    """
    calls: dict[str, str] = {}
    named: list[Any] | None = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        if m.get("role") == "assistant":
            for call in m.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(call.get("id"), str) and isinstance(function.get("name"), str):
                    calls[call["id"]] = function["name"]
            continue
        if m.get("role") != "tool" or isinstance(m.get("name"), str) or _carries_names(m.get("content")):
            continue
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str):
            raise ToolResultError(i, "a tool result needs 'tool_call_id' (the id of the call it answers) or 'name' "
                                     "(the function's name): FunctionGemma's template writes the function's name")
        if call_id not in calls:
            known = ", ".join(repr(k) for k in calls) or "none"
            raise ToolResultError(i, f"tool_call_id {call_id!r} answers no call of an earlier assistant message "
                                     f"(their ids: {known}): send the id of the call this result answers")
        if named is None:
            named = list(messages)
        named[i] = {**m, "name": calls[call_id]}
    return named
