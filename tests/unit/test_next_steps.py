"""The lines printed after a deploy: the curl request reads the API key where the deploy keeps it, and works as pasted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lorafleet.deploy.credentials import KeyReader, key_reader, resolve_secrets
from lorafleet.deploy.serving.next_steps import next_commands
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data
from tests.support.fake_server import FakeConfig, running_fake_server

KEY = "sk-paste-test-Zq81xT"


def settings(key: str, port: int = 8000):
    return build_settings({**group_data("local"), "port": port, "endpoint_url": f"http://127.0.0.1:{port}/v1"},
                          Secrets(hf_token="", api_key=key))


def curl_line(key: KeyReader | None, port: int = 8000) -> str:
    [line] = [line for line in next_commands(settings(KEY, port), "@local", key) if line.startswith("curl ")]
    return line


def test_a_generated_key_is_read_from_its_file_by_absolute_path(tmp_path):
    project = tmp_path / "project"
    resolve_secrets(project, env={})  # the first deploy generates and keeps one
    key = (project / ".state" / "api-key").read_text().strip()
    reader = key_reader(project, key, env={})
    assert reader == KeyReader(f"$(cat {project}/.state/api-key)", f"read from {project}/.state/api-key")


def test_a_key_in_the_secrets_file_is_read_from_it_with_sed(tmp_path):
    (tmp_path / ".secrets.env").write_text(f"HF_TOKEN=hf_x\nVLLM_API_KEY={KEY}\n")
    reader = key_reader(tmp_path, KEY, env={"VLLM_API_KEY": KEY})  # the environment too, with the same key
    assert reader == KeyReader(f"$(sed -n 's/^VLLM_API_KEY=//p' {tmp_path}/.secrets.env)",
                               f"read from VLLM_API_KEY in {tmp_path}/.secrets.env")


@pytest.mark.parametrize("line", [f'LORAFLEET_API_KEY="{KEY}"', f"export LORAFLEET_API_KEY={KEY}",
                                  f"LORAFLEET_API_KEY={KEY}   # the box's key"])
def test_a_secrets_line_sed_would_misread_asks_for_the_variable(tmp_path, line):
    (tmp_path / ".secrets.env").write_text(line + "\n")
    reader = key_reader(tmp_path, KEY, env={})
    assert reader.shell == "$LORAFLEET_API_KEY" and "export it in this shell first" in reader.where


def test_a_key_only_in_the_deploys_environment_says_so(tmp_path):
    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "api-key").write_text("sk-an-older-key\n")  # not the key the deploy used
    reader = key_reader(tmp_path, KEY, env={"LORAFLEET_API_KEY": KEY})
    assert reader.shell == "$LORAFLEET_API_KEY" and "in no file: set it in this shell first" in reader.where
    assert key_reader(tmp_path, "", env={}) is None


def test_the_lines_never_carry_the_key(tmp_path):
    (tmp_path / ".secrets.env").write_text(f"LORAFLEET_API_KEY={KEY}\n")
    for reader in (key_reader(tmp_path, KEY, env={}), key_reader(tmp_path / "none", KEY, env={"LORAFLEET_API_KEY": KEY})):
        lines = next_commands(settings(KEY), "@local", reader)
        assert not [line for line in lines if KEY in line], lines
    assert "Authorization" not in curl_line(None)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
@pytest.mark.parametrize("where", ["generated", "secrets"])
def test_the_curl_line_works_as_pasted_into_a_new_shell(tmp_path, where):
    project = tmp_path / "project"
    project.mkdir()
    if where == "secrets":
        (project / ".secrets.env").write_text(f"HF_TOKEN=hf_x\nLORAFLEET_API_KEY={KEY}\n")
    else:
        (project / ".state").mkdir()
        (project / ".state" / "api-key").write_text(KEY + "\n")
    reader = key_reader(project, KEY, env={})
    with running_fake_server(FakeConfig(adapters=["weather"], api_key=KEY)) as url:
        port = int(url.rsplit(":", 1)[1])
        line = curl_line(reader, port)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        # A new shell: no LORAFLEET_* variables, another folder.
        pasted = subprocess.run(["env", "-i", f"PATH={Path(shutil.which('curl')).parent}:/usr/bin:/bin", "sh", "-c", line],
                                cwd=elsewhere, capture_output=True, text=True, timeout=30)
    assert pasted.returncode == 0, pasted.stderr
    answer = json.loads(pasted.stdout)
    assert answer["object"] == "chat.completion", answer
