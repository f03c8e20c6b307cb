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
