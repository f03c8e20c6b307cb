"""lorafleet/tools/check.py against the fake server: output and exit codes, alone and as ``lorafleet check``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.tools.cli import main as cli_main
from tests.support.fake_server import FakeConfig, running_fake_server
from tests.support.modules import load_file

SCRIPT = Path(__file__).resolve().parents[2] / "lorafleet" / "tools" / "check.py"


def run_check(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_script_is_standalone_with_inline_metadata() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("# /// script\n")
    metadata = text.split("# ///")[1]
    assert "dependencies" in metadata and "openai" in metadata
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "lorafleet" not in imported


def test_all_models_answer_exit_0() -> None:
    with running_fake_server(FakeConfig(adapters=["weather", "sql"], api_key="k")) as url:
        proc = run_check("--url", url, "--api-key", "k")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for model in ("fake-functiongemma", "weather", "sql"):
        assert model in out
    assert 'get_weather(location="London")' in out  # adapters answer with a parsed tool call
    assert "3 of 3 answered" in out


def test_env_resolution_and_one_failure_exit_1() -> None:
    with running_fake_server(FakeConfig(adapters=["weather", "sql"], broken={"sql"})) as url:
        proc = run_check(env_extra={"LORAFLEET_URL": url})
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "HTTP 500" in proc.stdout
    assert "failed: sql" in proc.stdout


def test_wrong_key_exit_2() -> None:
    with running_fake_server(FakeConfig(api_key="right")) as url:
        proc = run_check("--url", url, env_extra={"LORAFLEET_API_KEY": "wrong"})
    assert proc.returncode == 2
    assert "401" in proc.stderr and "wrong" not in proc.stderr


def test_unreachable_exit_2() -> None:
    proc = run_check("--url", "http://127.0.0.1:9", "--timeout", "3")
    assert proc.returncode == 2
    assert "cannot list models" in proc.stderr


def test_server_without_tool_parser_still_checks() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"], tool_parser=False)) as url:
        proc = run_check("--url", url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "server has no tool parser" in proc.stdout


def test_lorafleet_check_runs_in_process_with_the_resolved_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess as subprocess_module

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("lorafleet check must not start a process")

    monkeypatch.setattr(subprocess_module, "Popen", no_child)
    monkeypatch.setenv("LORAFLEET_API_KEY", "key-ZQX-3")  # the key found as every lorafleet command finds it
    with running_fake_server(FakeConfig(adapters=["weather"], api_key="key-ZQX-3")) as url:
        rc = cli_main(["check", "--url", url + "/v1", "--timeout", "30"])  # the endpoint form works too
        wrong = cli_main(["check", "--url", url, "--api-key", "wrong-ZQX-4"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "2 of 2 answered" in out.out and 'get_weather(location="London")' in out.out
    assert wrong == 2 and "401" in out.err
    assert "ZQX" not in out.out + out.err


def test_a_call_the_token_budget_cuts_fails_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    # The adapter's call takes 60 tokens: a 48-token budget (the old default) ends the answer inside it.
    with running_fake_server(FakeConfig(adapters=["weather", "alarm"], call_tokens=60)) as url:
        cut = cli_main(["check", "--url", url, "--max-tokens", "48"])
        cut_out = capsys.readouterr().out
        whole = cli_main(["check", "--url", url])  # the default budget
        whole_out = capsys.readouterr().out
    assert cut == 1, cut_out
    row = next(line for line in cut_out.splitlines() if line.startswith("alarm "))
    assert " CUT " in row and "cut by the 48-token budget: raise --max-tokens" in row
    assert "('<start_function_call>call:get_weather...')" in row, "the cut text is shown, not passed off as an answer"
    assert "failed: weather, alarm" in cut_out
    assert " ok " in next(line for line in cut_out.splitlines() if line.startswith("fake-functiongemma "))
    assert whole == 0 and "3 of 3 answered" in whole_out and whole_out.count('get_weather(location="London")') == 2


@pytest.mark.parametrize(("text", "reason", "cut"), [
    ("<start_function_call>call:set_alarm{hour:7,vo", "length", True),
    ("<start_function_call>call:f{}<end_function_call>", "length", False),  # whole, then the budget ran out
    ("<start_function_call>call:f{}<end_function_call><start_function_call>call:g{", "length", True),
    ("<start_function_call>call:set_alarm{hour:7,vo", "stop", False),  # the model stopped itself: not the budget
    ("I am the demo base model, and I talk for a long", "length", False),  # long text is an answer
    (None, "length", False),
])
def test_cut_call(text: str | None, reason: str, cut: bool) -> None:
    from lorafleet.tools.check import cut_call

    assert cut_call(text, reason) is cut


def test_the_default_budget_fits_every_demo_adapters_call() -> None:
    from lorafleet.deploy.layout import DEMO_BUILDER
    from lorafleet.functiongemma import END, ESCAPE, START
    from lorafleet.tools.check import DEFAULT_MAX_TOKENS

    demo = load_file("build_demo_model", DEMO_BUILDER)  # stdlib only at import time
    calls = {name: demo.adapter_spec(name)["call_text"] for name in demo.KNOWN_ADAPTERS}
    assert "alarm" in calls

    def most_tokens(text: str) -> int:
        # Each control token is one token; every other token covers at least one byte (byte-level BPE, as
        # the demo's; SentencePiece with byte fallback, as FunctionGemma's); one more for the stop token.
        rest = text
        controls = sum(rest.count(marker) for marker in (START, END, ESCAPE))
        for marker in (START, END, ESCAPE):
            rest = rest.replace(marker, "")
        return controls + len(rest.encode()) + 1

    longest = max(calls, key=lambda name: most_tokens(calls[name]))
    assert longest == "alarm" and most_tokens(calls["alarm"]) <= 130
    assert all(most_tokens(text) <= DEFAULT_MAX_TOKENS for text in calls.values()), {
        name: most_tokens(text) for name, text in calls.items()}
