"""FunctionGemma calls to parse, and vLLM's parsers to parse them with, inside the real serving image.

`corpus` generates seeded calls of every value type and edge case, written with `render_call` as the
chat template writes them; `run_in_serving_image` runs vLLM's built-in parser or the project's plugin
over them in a throwaway container, through the classes `vllm serve` uses. The plugin test
(tests/e2e/test_tool_parser_plugin.py) and the benchmark (benchmarks/parser_compare.py) share them.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
import subprocess
import tempfile
from pathlib import Path

from lorafleet.deploy import layout
from lorafleet.functiongemma import END, ESCAPE, START, render_call

PLUGIN = layout.SERVE_FILES["functiongemma_tool_parser.py"]
GRAMMAR = layout.SERVE_FILES["functiongemma.py"]
BUILTIN, OURS = "functiongemma", "lorafleet_functiongemma"

# Runs inside the serving image; /lorafleet holds the two plugin files as in the deployed container.
CONTAINER_SCRIPT = r'''
import json, os, sys, time
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.parser_manager import ParserManager
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

ToolParserManager.import_tool_parser("/lorafleet/functiongemma_tool_parser.py")
with open("/check/job.json", encoding="utf-8") as f:
    job = json.load(f)
tokenizer = None
if os.path.isdir("/tokenizer"):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained("/tokenizer")
TOOLS = [{"type": "function", "function": {"name": "any", "parameters": {"type": "object", "properties": {}}}}]


def chunks_of(case):
    if case["chunks"] != "tokenizer":
        return case["chunks"]
    text = case["text"]
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ends = sorted({end for _, end in offsets if end > 0} | {len(text)})
    return [text[a:b] for a, b in zip([0] + ends[:-1], ends) if b > a]


def run(parser_name, case, number):
    parser_cls = ParserManager.get_parser(
        tool_parser_name=parser_name, enable_auto_tools=True, model_name="lorafleet-check", tokenizer=tokenizer)
    request = ChatCompletionRequest(
        model="lorafleet-check", messages=[{"role": "user", "content": "hi"}], tools=TOOLS,
        tool_choice=case.get("tool_choice", "auto"), request_id=f"check-{number}")
    parser = parser_cls(tokenizer, request.tools)
    request = parser.adjust_request(request)
    started = time.perf_counter_ns()
    _, content, calls = parser.parse(case["text"], request, enable_auto_tools=True)
    parse_ns = time.perf_counter_ns() - started
    result = {
        "skip_special_tokens": request.skip_special_tokens, "content": content,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls or []],
        "parse_ns": parse_ns,
    }
    parser = parser_cls(tokenizer, request.tools)
    chunks = chunks_of(case)
    content, streamed, ids, stream_ns = None, {}, [], 0
    for i, chunk in enumerate(chunks):
        started = time.perf_counter_ns()
        delta = parser.parse_delta(chunk, [], request, prompt_token_ids=[2], finished=i == len(chunks) - 1)
        stream_ns += time.perf_counter_ns() - started
        if delta is None:
            continue
        if delta.content:
            content = (content or "") + delta.content
        for tc in delta.tool_calls:
            call = streamed.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                ids.append(tc.id)
                call["id"] = tc.id
            function = tc.function.model_dump() if hasattr(tc.function, "model_dump") else (tc.function or {})
            if function.get("name"):
                call["name"] = (call["name"] or "") + function["name"]
            call["arguments"] += function.get("arguments") or ""
    result["stream"] = {"content": content, "tool_calls": [streamed[k] for k in sorted(streamed)],
                        "ids": ids, "chunks": len(chunks), "ns": stream_ns}
    return result


results = []
for number, case in enumerate(job["cases"]):
    row = {}
    for name in job["parsers"]:
        try:
            row[name] = run(name, case, number)
        except Exception as error:  # a parser that raises scores nothing for the case
            row[name] = {"error": repr(error)}
    results.append(row)
print("RESULT " + json.dumps(results))
'''


def newest_serving_image() -> str | None:
    """The newest `lorafleet/vllm-cpu:*` image on this engine (docker lists the newest first)."""
    listed = subprocess.run(["docker", "images", "lorafleet/vllm-cpu", "--format", "{{.Repository}}:{{.Tag}}"],
                            capture_output=True, text=True, check=False).stdout.split()
    return next((tag for tag in listed if not tag.endswith(":<none>")), None)


def run_in_serving_image(image: str, cases: list[dict], parsers: list[str], tokenizer_dir: Path | None = None,
                         timeout: float = 600) -> tuple[list[dict], str]:
    """Run CONTAINER_SCRIPT over `cases` in a throwaway container; return its results and its log."""
    with tempfile.TemporaryDirectory(prefix="lorafleet-parser-") as tmp:
        os.chmod(tmp, 0o755)
        (Path(tmp) / "job.json").write_text(json.dumps({"cases": cases, "parsers": parsers}), encoding="utf-8")
        (Path(tmp) / "driver.py").write_text(CONTAINER_SCRIPT, encoding="utf-8")
        cidfile = Path(tmp) / "cid"
        command = ["docker", "run", "--rm", "--network", "none", "--cidfile", str(cidfile),
                   "-v", f"{PLUGIN}:/lorafleet/functiongemma_tool_parser.py:ro",
                   "-v", f"{GRAMMAR}:/lorafleet/functiongemma.py:ro", "-v", f"{tmp}:/check:ro"]
        if tokenizer_dir is not None:
            command += ["-v", f"{tokenizer_dir}:/tokenizer:ro"]
        command += ["--entrypoint", "python3", image, "/check/driver.py"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        finally:
            if cidfile.exists() and (cid := cidfile.read_text().strip()):  # gone already unless it timed out
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
    log = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the check in {image} failed ({done.returncode}):\n{log[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT ")), log


# --- the corpus ------------------------------------------------------------------------------

WORDS = "London Paris weather gym alarm report sales query Tokyo invoice".split()
TRICKY = ['{', '}', '[', ']', ',', ':', '"', "'", '\\', '<', '>', '<escape', END, START, '}' + END, ' ', '\n', 'é', '東京', '😀']


KINDS = ["string", "string with {}[],:\" etc.", "string of digits/true/null", "integer", "float", "boolean", "null",
         "list", "list of objects", "nested object", "mixed arguments", "name with - or .", "no arguments",
         "two or three calls"]


def token_like_chunks(text: str, rng: random.Random) -> list[str]:
    """Cut as a tokenizer would: each control token whole, other text in pieces of 1-4 characters."""
    chunks = []
    for part in re.split(f"({re.escape(START)}|{re.escape(END)}|{re.escape(ESCAPE)})", text):
        if part in (START, END, ESCAPE):
            chunks.append(part)
            continue
        while part:
            size = rng.randint(1, 4)
            chunks.append(part[:size])
            part = part[size:]
    return chunks


def corpus(seed: int = 0, per_kind: int = 30) -> list[dict]:
    """Seeded cases, each {kind, text, calls: [[name, arguments], ...], chunks}, `per_kind` of each kind."""
    rng = random.Random(seed)
    name = lambda: rng.choice(["get", "set", "run", "find"]) + "_" + rng.choice(WORDS).lower()  # noqa: E731
    key = lambda: rng.choice(["city", "count", "limit", "label", "unit", "tags", "filter", "id", "x"]) + str(rng.randint(0, 99))  # noqa: E731
    word = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))  # noqa: E731
    scalar = lambda: rng.choice([word(), rng.randint(-1000, 10**6), round(rng.uniform(-100, 100), 3), rng.choice([True, False]), None])  # noqa: E731

    def nested(depth: int) -> dict:
        return {key(): nested(depth - 1) if depth > 1 and rng.random() < 0.5 else scalar() for _ in range(rng.randint(1, 3))}

    def one(kind: str) -> list[tuple[str, dict]]:
        k = key()
        if kind == "string":
            return [(name(), {k: word()})]
        if kind == "string with {}[],:\" etc.":
            return [(name(), {k: "".join(rng.choice(TRICKY + list(string.ascii_letters)) for _ in range(rng.randint(1, 12)))})]
        if kind == "string of digits/true/null":
            return [(name(), {k: rng.choice([str(rng.randint(0, 99999)), "true", "null", "3.5", "[1]", "{}"])})]
        if kind == "integer":
            return [(name(), {k: rng.choice([rng.randint(-10**6, 10**6), 0, 7, -1, 2**63 + rng.randint(0, 9)])})]
        if kind == "float":
            return [(name(), {k: rng.choice([rng.uniform(-1e3, 1e3), rng.uniform(0, 1) * 10 ** rng.randint(-12, 20), -0.5])})]
        if kind == "boolean":
            return [(name(), {k: rng.choice([True, False])})]
        if kind == "null":
            return [(name(), {k: None})]
        if kind == "list":
            return [(name(), {k: [scalar() for _ in range(rng.randint(0, 4))]})]
        if kind == "list of objects":
            return [(name(), {k: [nested(1) for _ in range(rng.randint(1, 3))]})]
        if kind == "nested object":
            return [(name(), {k: nested(3)})]
        if kind == "mixed arguments":
            return [(name(), {"s": word(), "i": rng.randint(0, 99), "f": 0.25, "b": False, "n": None, "l": [1, "a"], "o": nested(2)})]
        if kind == "name with - or .":
            return [(rng.choice(["weather-api", "db.query", "v2.get-user", "a.b-c_d"]), {k: word()})]
        if kind == "no arguments":
            return [(name(), {})]
        if kind == "two or three calls":
            return [(name(), {k: word()}) for _ in range(rng.randint(2, 3))]
        raise ValueError(kind)

    cases = []
    for kind in KINDS:
        for _ in range(per_kind):
            calls = one(kind)
            before = rng.choice(["", "", "Sure. ", "Let me check that.\n"])
            text = before + "".join(render_call(n, a) for n, a in calls)
            cases.append({"kind": kind, "text": text, "content": before or None, "calls": calls,
                          "chunks": token_like_chunks(text, rng)})
    return cases
