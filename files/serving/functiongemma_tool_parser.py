"""vLLM tool parser for FunctionGemma that reads the whole call grammar (lorafleet.functiongemma).

Loaded by vLLM 0.32 with ``--tool-parser-plugin /lorafleet/functiongemma_tool_parser.py
--tool-call-parser lorafleet_functiongemma``.  vLLM's built-in ``functiongemma`` parser reads
calls with regexes: bare numbers, booleans, null, lists and objects are dropped, a nested ``}``
cuts the arguments and names with ``-`` or ``.`` never match.  This one parses the grammar.

Non-streaming: OpenAI ``tool_calls`` with JSON ``arguments``; text before the first call is the
content.  Output the grammar refuses is returned whole as content, with a warning naming the
request.  Streaming: content as soon as it cannot start a call, and each call in one delta
(id, name, full arguments) when it closes; a grammar error turns the rest of the stream into
content.  Joined deltas equal the non-streaming result, except that calls streamed before a
grammar error stay streamed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.logger import init_logger
from vllm.renderers.chat_utils import make_tool_call_id
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager


def _load_grammar():
    """lorafleet.functiongemma from the package, or from the copy beside this file (in the container)."""
    try:
        from lorafleet import functiongemma

        return functiongemma
    except ImportError:
        path = Path(__file__).with_name("functiongemma.py")
        spec = importlib.util.spec_from_file_location("lorafleet_functiongemma_grammar", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{path} is missing: ship it beside {Path(__file__).name}") from None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # NamedTuple and dataclass machinery look modules up here
        spec.loader.exec_module(module)
        return module


grammar = _load_grammar()
logger = init_logger("vllm.lorafleet.functiongemma_tool_parser")  # under "vllm": its log handler and format


@ToolParserManager.register_module("lorafleet_functiongemma")
class LorafleetFunctionGemmaToolParser(ToolParser):
    """FunctionGemma's ``<start_function_call>call:NAME{k:v,...}<end_function_call>`` into OpenAI tool calls."""

    # vLLM calls finish_streaming() at the end of a stream only for parsers that say this (so text
    # held back as a possible call start is not lost); it then passes each delta on its own, and
    # delta_text is all this parser reads.
    engine_based_streaming = True

    def __init__(self, tokenizer: Any, tools: list | None = None):
        super().__init__(tokenizer, tools)
        self._stream = grammar.CallStream()
        self._raw = False  # after a grammar error, the rest of the stream is content
        self._request_id = "?"

    def adjust_request(self, request):
        request = super().adjust_request(request)
        if request.tools and request.tool_choice != "none":
            # the call markers must reach the parser even where the tokenizer marks them special
            request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        as_content = ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        if getattr(request, "tool_choice", None) == "none" or grammar.START not in model_output:
            return as_content
        try:
            content, calls = grammar.parse_calls(model_output)
            tool_calls = [
                ToolCall(type="function", function=FunctionCall(name=call.name, arguments=_json(call.arguments)))
                for call in calls
            ]
        except grammar.CallSyntaxError as error:
            logger.warning("request %s: tool call returned as content: %s", _request_id(request), error)
            _report_failure()
            return as_content
        except Exception:  # never fail a request over its tool calls
            logger.exception("request %s: tool call parsing failed; returned as content", _request_id(request))
            _report_failure()
            return as_content
        return ExtractedToolCallInformation(tools_called=True, tool_calls=tool_calls, content=content or None)

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request,
    ) -> DeltaMessage | None:
        self._request_id = _request_id(request)
        if self._raw or getattr(request, "tool_choice", None) == "none":
            return DeltaMessage(content=delta_text) if delta_text else None
        return self._advance(self._stream.feed, delta_text)

    def finish_streaming(self) -> DeltaMessage | None:
        """The end of the stream: content held back, or an unfinished call as content."""
        if self._raw:
            return None
        return self._advance(self._stream.close)

    def _advance(self, step, *args) -> DeltaMessage | None:
        try:
            events = step(*args)
        except grammar.CallSyntaxError as error:
            logger.warning("request %s: tool call streamed as content: %s", self._request_id, error)
            return self._give_up()
        except Exception:
            logger.exception("request %s: tool call parsing failed; streamed as content", self._request_id)
            return self._give_up()
        content = "".join(e for e in events if isinstance(e, str))
        tool_calls = [self._tool_call_delta(e) for e in events if isinstance(e, grammar.Call)]
        if not content and not tool_calls:
            return None
        return DeltaMessage(content=content or None, tool_calls=tool_calls)

    def _give_up(self) -> DeltaMessage | None:
        _report_failure()
        self._raw = True
        pending, self._stream.pending = self._stream.pending, ""
        return DeltaMessage(content=pending) if pending else None

    def _tool_call_delta(self, call) -> DeltaToolCall:
        arguments = _json(call.arguments)
        self.current_tool_id = len(self.prev_tool_call_arr)
        # what vLLM's get_remaining_unstreamed_args() compares: everything is streamed already
        self.prev_tool_call_arr.append({"name": call.name, "arguments": call.arguments})
        self.streamed_args_for_tool.append(arguments)
        return DeltaToolCall(
            index=self.current_tool_id,
            id=make_tool_call_id(),
            type="function",
            function=DeltaFunctionCall(name=call.name, arguments=arguments),
        )


def _json(arguments: dict) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def _report_failure() -> None:
    """Count the failure against the request being served, where the metrics middleware runs (lorafleet_metrics.py)."""
    metrics = sys.modules.get("lorafleet_metrics")  # the name vLLM's --middleware imports it by
    if metrics is not None:
        metrics.tool_call_failed()


def _request_id(request) -> str:
    return str(getattr(request, "request_id", None) or "?")
