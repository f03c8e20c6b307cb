"""Credentials on the laptop: the secrets file as dotenv reads it, the environment over it, keys generated once (0600).

Every test works in tmp_path with an explicit `env`: never the real environment, `.secrets.env` or `.state`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from lorafleet.deploy import credentials
from lorafleet.deploy.credentials import (
    KeyReader,
    _plain_line_value,
    _write_new_key,
    api_key_file,
    box_key,
    box_key_file,
    check_secret,
    key_reader,
    laptop_config,
    read_env_file,
    resolve_secrets,
    secrets_file,
    state_dir,
)
from lorafleet.deploy.settings import Secrets, SettingsError

KEY = "sk-paste-test-Zq81xT"
GENERATED = re.compile(r"sk-[A-Za-z0-9_-]{43}")  # 32 random bytes, URL-safe base64 without padding
BOX_GENERATED = re.compile(r"sk-box-[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def no_umask():
    """With no umask, a file's mode is exactly what the code asked for (a umask of 077 would hide a wrong one)."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shell_value(expression: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """What `expression` expands to in a new bash with only PATH (and `env`), as a pasted line would see it."""
    result = subprocess.run(["bash", "-c", f'printf %s "{expression}"'], env={"PATH": os.environ["PATH"], **(env or {})},
                            cwd=cwd, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


def refusal(name: str) -> str:
    return (f"{name} holds a newline, a control character or surrounding spaces: it would be written into "
            f"an env file on the host as more than one variable; set {name} to the bare token on one line")


# read_env_file


def test_an_absent_env_file_reads_as_empty(tmp_path):
    assert read_env_file(tmp_path / "absent.env") == {}
    assert read_env_file(tmp_path) == {}  # a folder is not a file either


def test_an_env_file_reads_as_dotenv_does(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text('A="quoted value"\n'
                    "B='single $X'\n"
                    "export C=c\n"
                    "D=d  # a comment\n"
                    "E\n"  # no value: dropped
                    "F=\n"  # an empty value is a value
                    "K=a#b\n"  # no space before #: not a comment
                    "# a whole line of comment\n")
    assert read_env_file(path) == {"A": "quoted value", "B": "single $X", "C": "c", "D": "d", "F": "", "K": "a#b"}


def test_an_env_file_is_never_interpolated(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text('HOME_KEY=sk-$HOME\nH=x\nPLAIN=sk-${H}\nQUOTED="sk-${H}"\n')
    assert read_env_file(path) == {"HOME_KEY": "sk-$HOME", "H": "x", "PLAIN": "sk-${H}", "QUOTED": "sk-${H}"}


# where the files are


def test_the_default_paths_are_under_the_project(tmp_path):
    assert secrets_file(tmp_path, env={}) == tmp_path / ".secrets.env"
    assert state_dir(tmp_path, env={}) == tmp_path / ".state"
    assert api_key_file(tmp_path, env={}) == tmp_path / ".state" / "api-key"
    assert box_key_file(tmp_path, "@ssh/10.0.0.2", env={}) == tmp_path / ".state" / "box-keys" / "ssh_10.0.0.2"


def test_an_empty_override_means_the_default(tmp_path):
    env = {"LORAFLEET_SECRETS_FILE": "", "LORAFLEET_STATE_DIR": ""}
    assert secrets_file(tmp_path, env) == tmp_path / ".secrets.env"
    assert state_dir(tmp_path, env) == tmp_path / ".state"


def test_the_environment_moves_the_secrets_file_and_the_state(tmp_path):
    env = {"LORAFLEET_SECRETS_FILE": str(tmp_path / "elsewhere" / "my.env"), "LORAFLEET_STATE_DIR": str(tmp_path / "st")}
    assert secrets_file(tmp_path / "project", env) == tmp_path / "elsewhere" / "my.env"
    assert state_dir(tmp_path / "project", env) == tmp_path / "st"
    assert api_key_file(tmp_path / "project", env) == tmp_path / "st" / "api-key"
    assert box_key_file(tmp_path / "project", "@gpu-1", env) == tmp_path / "st" / "box-keys" / "gpu-1"


def test_the_environment_wins_over_the_secrets_file(tmp_path):
    (tmp_path / ".secrets.env").write_text("HF_TOKEN=hf_file\nLORAFLEET_API_KEY=sk-file\n")
    env = {"LORAFLEET_API_KEY": "sk-env", "OTHER": "o"}
    assert laptop_config(tmp_path, env) == {"HF_TOKEN": "hf_file", "LORAFLEET_API_KEY": "sk-env", "OTHER": "o"}


def test_laptop_config_reads_the_file_the_environment_names(tmp_path):
    (tmp_path / ".secrets.env").write_text("HF_TOKEN=hf_default\n")
    (tmp_path / "other.env").write_text("HF_TOKEN=hf_other\n")
    env = {"LORAFLEET_SECRETS_FILE": str(tmp_path / "other.env")}
    assert laptop_config(tmp_path, env) == {"HF_TOKEN": "hf_other", **env}
    assert laptop_config(tmp_path / "no-project", env={}) == {}


# box keys


def test_a_box_key_is_generated_once_and_kept(tmp_path):
    key = box_key(tmp_path, "@ssh/10.0.0.2", env={})
    path = tmp_path / ".state" / "box-keys" / "ssh_10.0.0.2"
    assert BOX_GENERATED.fullmatch(key), key
    assert path.read_text() == key + "\n"
    assert mode(path) == 0o600
    assert box_key(tmp_path, "@ssh/10.0.0.2", env={}) == key
    assert box_key(tmp_path, "@ssh/10.0.0.2", env={}, create=False) == key
    assert path.read_text() == key + "\n"


def test_each_box_has_its_own_key(tmp_path):
    env = {"LORAFLEET_STATE_DIR": str(tmp_path / "state")}
    first, second = box_key(tmp_path, "@ssh/a", env), box_key(tmp_path, "@ssh/b", env)  # the second in an existing folder
    assert first != second
    assert sorted(p.name for p in (tmp_path / "state" / "box-keys").iterdir()) == ["ssh_a", "ssh_b"]


def test_a_missing_box_key_is_not_created_when_asked_not_to(tmp_path):
    assert box_key(tmp_path, "@ssh/a", env={}, create=False) == ""
    assert list(tmp_path.iterdir()) == []


def test_a_box_key_file_is_read_without_its_surrounding_whitespace(tmp_path):
    path = box_key_file(tmp_path, "@ssh/a", env={})
    path.parent.mkdir(parents=True)
    path.write_text("  sk-box-by-hand\n\n")
    assert box_key(tmp_path, "@ssh/a", env={}) == "sk-box-by-hand"
    assert path.read_text() == "  sk-box-by-hand\n\n"


# _write_new_key


def test_a_new_key_file_is_made_with_its_folders_and_0600(tmp_path):
    path = tmp_path / "a" / "b" / "key"
    _write_new_key(path, "sk-one")
    assert path.read_text() == "sk-one\n"
    assert mode(path) == 0o600


def test_a_second_writer_leaves_the_first_key(tmp_path):
    path = tmp_path / "state" / "key"
    _write_new_key(path, "sk-first")
    _write_new_key(path, "sk-second")
    assert path.read_text() == "sk-first\n"
    assert [p.name for p in path.parent.iterdir()] == ["key"], "no draft is left beside it"


def test_the_key_file_never_exists_without_its_whole_key(tmp_path, monkeypatch):
    """The key is linked into place once written: a deploy that finds the file reads a whole key, never ""."""
    path = tmp_path / "state" / "key"
    seen = []
    real_link = os.link

    def link(src, dst):
        seen.append((Path(src).read_text(), Path(dst).exists()))
        real_link(src, dst)

    monkeypatch.setattr(credentials.os, "link", link)
    _write_new_key(path, "sk-whole")
    assert seen == [("sk-whole\n", False)] and path.read_text() == "sk-whole\n"


def test_a_deploy_that_loses_the_race_reads_the_winners_key(tmp_path, monkeypatch):
    """Two deploys of one run both find no key; the one that creates the file second must not replace it."""
    key_file = api_key_file(tmp_path, env={})

    def the_other_deploy_writes_first(nbytes: int) -> str:
        key_file.parent.mkdir(parents=True)
        key_file.write_text("sk-winner\n")
        return "loser"

    monkeypatch.setattr(credentials.token_source, "token_urlsafe", the_other_deploy_writes_first)
    assert resolve_secrets(tmp_path, env={}).api_key == "sk-winner"
    assert key_file.read_text() == "sk-winner\n"


# check_secret


@pytest.mark.parametrize("value", ["sk-a\nb", "sk-ab\n", "sk-a\rb", "sk-a\x07b", "sk-a\tb", "sk-a\x00b",
                                   " sk-ab", "sk-ab ", "\tsk-ab"])
def test_a_secret_that_could_inject_variables_is_refused_without_showing_it(value):
    with pytest.raises(SettingsError) as err:
        check_secret("VLLM_API_KEY", value)
    assert err.value.problems == [refusal("VLLM_API_KEY")]
    assert value.strip() not in str(err.value)


@pytest.mark.parametrize("value", ["", "sk-abc", "hf_AbC123", "sk-$HOME#x'\"\\", "sk-a b"])
def test_a_one_line_secret_is_fine(value):
    check_secret("HF_TOKEN", value)


# resolve_secrets


def test_the_lorafleet_name_wins_over_vllms(tmp_path):
    env = {"LORAFLEET_API_KEY": "sk-lorafleet", "VLLM_API_KEY": "sk-vllm"}
    assert resolve_secrets(tmp_path, env) == Secrets(hf_token="", api_key="sk-lorafleet")
    assert resolve_secrets(tmp_path, {"LORAFLEET_API_KEY": "", "VLLM_API_KEY": "sk-vllm"}).api_key == "sk-vllm"
    assert not (tmp_path / ".state").exists()  # a key was given: none generated


def test_the_environment_wins_over_the_file_for_secrets(tmp_path):
    (tmp_path / ".secrets.env").write_text("HF_TOKEN=hf_file\nLORAFLEET_API_KEY=sk-file\n")
    assert resolve_secrets(tmp_path, env={}) == Secrets(hf_token="hf_file", api_key="sk-file")
    env = {"HF_TOKEN": "hf_env", "LORAFLEET_API_KEY": "sk-env"}
    assert resolve_secrets(tmp_path, env) == Secrets(hf_token="hf_env", api_key="sk-env")
    assert not (tmp_path / ".state").exists()


def test_a_given_key_wins_over_a_generated_one(tmp_path):
    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "api-key").write_text("sk-generated-earlier\n")
    assert resolve_secrets(tmp_path, {"VLLM_API_KEY": "sk-given"}).api_key == "sk-given"


def test_with_no_key_given_one_is_generated_once_and_reused(tmp_path):
    first = resolve_secrets(tmp_path, env={"HF_TOKEN": "hf_x"})
    key_file = tmp_path / ".state" / "api-key"
    assert first.hf_token == "hf_x"
    assert GENERATED.fullmatch(first.api_key), first.api_key
    assert key_file.read_text() == first.api_key + "\n"
    assert mode(key_file) == 0o600
    assert resolve_secrets(tmp_path, env={}) == Secrets(hf_token="", api_key=first.api_key)
    assert resolve_secrets(tmp_path, env={}, create=False).api_key == first.api_key
    assert key_file.read_text() == first.api_key + "\n"


def test_the_generated_key_follows_the_state_dir(tmp_path):
    env = {"LORAFLEET_STATE_DIR": str(tmp_path / "state")}
    key = resolve_secrets(tmp_path / "project", env).api_key
    assert (tmp_path / "state" / "api-key").read_text() == key + "\n"
    assert not (tmp_path / "project").exists()


def test_a_generated_key_file_is_read_without_its_surrounding_whitespace(tmp_path):
    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "api-key").write_text("sk-by-hand\n\n")
    assert resolve_secrets(tmp_path, env={}).api_key == "sk-by-hand"


def test_no_key_is_generated_when_not_asked_for(tmp_path):
    assert resolve_secrets(tmp_path, env={"HF_TOKEN": "hf_x"}, generate_api_key=False) == Secrets(hf_token="hf_x")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_tool_uses_a_generated_key_but_never_makes_one(tmp_path):
    assert resolve_secrets(tmp_path, env={}, create=False) == Secrets()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["HF_TOKEN", "LORAFLEET_API_KEY", "VLLM_API_KEY"])
def test_a_bad_secret_in_the_environment_is_refused_before_any_key_is_made(tmp_path, name):
    with pytest.raises(SettingsError) as err:
        resolve_secrets(tmp_path, env={name: "sk-one\nINJECTED=1"})
    assert err.value.problems == [refusal(name)]
    assert "INJECTED" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_secret_in_the_file_is_refused(tmp_path):
    (tmp_path / ".secrets.env").write_text('HF_TOKEN="hf_one\\nINJECTED=1"\n')  # dotenv turns \n into a newline
    with pytest.raises(SettingsError) as err:
        resolve_secrets(tmp_path, env={})
    assert err.value.problems == [refusal("HF_TOKEN")]


# key_reader


def test_no_key_has_no_reader(tmp_path):
    (tmp_path / ".secrets.env").write_text("LORAFLEET_API_KEY=\n")
    assert key_reader(tmp_path, "", env={}) is None


@pytest.mark.parametrize("name", ["LORAFLEET_API_KEY", "VLLM_API_KEY"])
def test_a_plain_line_in_the_secrets_file_is_read_with_sed(tmp_path, name):
    project = tmp_path / "my project"  # a space in the path: the line quotes it
    project.mkdir()
    secrets = project / ".secrets.env"
    secrets.write_text(f"HF_TOKEN=hf_x\n{name}={KEY}\n")
    reader = key_reader(project, KEY, env={})
    assert reader == KeyReader(f"$(sed -n 's/^{name}=//p' '{secrets}')", f"read from {name} in {secrets}")
    assert shell_value(reader.shell, cwd=tmp_path) == KEY


def test_the_file_named_by_the_environment_is_read_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "keys.env").write_text(f"VLLM_API_KEY={KEY}\n")
    monkeypatch.chdir(tmp_path)
    reader = key_reader(tmp_path / "project", KEY, env={"LORAFLEET_SECRETS_FILE": "conf/keys.env"})
    assert reader.shell == f"$(sed -n 's/^VLLM_API_KEY=//p' {tmp_path}/conf/keys.env)"
    assert shell_value(reader.shell, cwd=tmp_path / "conf") == KEY


def test_a_key_in_the_file_under_another_name_is_not_the_one_used(tmp_path):
    (tmp_path / ".secrets.env").write_text(f"LORAFLEET_API_KEY=sk-another\nVLLM_API_KEY={KEY}\n")
    reader = key_reader(tmp_path, KEY, env={})
    assert reader.shell == f"$(sed -n 's/^VLLM_API_KEY=//p' {tmp_path}/.secrets.env)"


@pytest.mark.parametrize("line", [f'VLLM_API_KEY="{KEY}"', f"export VLLM_API_KEY={KEY}", f"VLLM_API_KEY={KEY}  # mine"])
def test_a_key_sed_would_misread_is_asked_for_by_name(tmp_path, line):
    (tmp_path / ".secrets.env").write_text(line + "\n")
    reader = key_reader(tmp_path, KEY, env={})
    assert reader == KeyReader("$VLLM_API_KEY", f"VLLM_API_KEY in {tmp_path}/.secrets.env: export it in this shell first")
    assert shell_value(reader.shell, env={"VLLM_API_KEY": KEY}) == KEY


def test_a_key_on_two_plain_lines_is_asked_for_by_name(tmp_path):
    (tmp_path / ".secrets.env").write_text(f"LORAFLEET_API_KEY={KEY}\nLORAFLEET_API_KEY={KEY}\n")
    assert key_reader(tmp_path, KEY, env={}).shell == "$LORAFLEET_API_KEY"  # sed would print it twice


def test_a_generated_key_is_read_from_its_file_with_cat(tmp_path):
    project = tmp_path / "my project"
    key = resolve_secrets(project, env={}).api_key
    key_file = project / ".state" / "api-key"
    reader = key_reader(project, key, env={})
    assert reader == KeyReader(f"$(cat '{key_file}')", f"read from {key_file}")
    assert shell_value(reader.shell, cwd=tmp_path) == key


def test_a_key_file_is_matched_on_the_whole_key(tmp_path):
    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "api-key").write_text("sk-ends-in-X\n")
    assert key_reader(tmp_path, "sk-ends-in-X", env={}).shell == f"$(cat {tmp_path}/.state/api-key)"
    assert key_reader(tmp_path, "sk-ends-in", env={}).shell == "$LORAFLEET_API_KEY"


@pytest.mark.parametrize("env, name", [({}, "LORAFLEET_API_KEY"), ({"VLLM_API_KEY": KEY}, "VLLM_API_KEY"),
                                       ({"LORAFLEET_API_KEY": "sk-other", "VLLM_API_KEY": KEY}, "VLLM_API_KEY"),
                                       ({"LORAFLEET_API_KEY": KEY, "VLLM_API_KEY": KEY}, "LORAFLEET_API_KEY")])
def test_a_key_in_no_file_is_named_by_the_variable_that_held_it(tmp_path, env, name):
    reader = key_reader(tmp_path, KEY, env=env)
    assert reader == KeyReader(f"${name}", f"{name} from the deploy's environment, in no file: set it in this shell first")


def test_a_key_reader_is_a_value(tmp_path):
    reader = key_reader(tmp_path, KEY, env={})
    assert reader in {KeyReader("$LORAFLEET_API_KEY", reader.where)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        reader.shell = "$(cat /elsewhere)"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("éß€"), min_size=1, max_size=24))
def test_whatever_form_the_reader_takes_the_shell_reads_the_key(tmp_path, key):
    """A key check_secret accepts, as a raw line of the secrets file: the line read by sed, or the variable asked for."""
    assume(key == key.strip())
    (tmp_path / ".secrets.env").write_text(f"HF_TOKEN=hf_x\nLORAFLEET_API_KEY={key}\n", encoding="utf-8")
    reader = key_reader(tmp_path, key, env={})
    read_by_sed = reader.shell.startswith("$(sed ")
    event("read by sed" if read_by_sed else "asked for by name")
    exported = {} if read_by_sed else {"LORAFLEET_API_KEY": key}
    assert shell_value(reader.shell, env=exported) == key


# _plain_line_value


def test_one_plain_line_gives_its_value(tmp_path):
    path = tmp_path / "s.env"
    path.write_text("HF_TOKEN=hf_x\nVLLM_API_KEY=sk-a=b \n# VLLM_API_KEY=commented\nLORAFLEET_API_KEY=\n")
    assert _plain_line_value(path, "VLLM_API_KEY") == "sk-a=b "  # the rest of the line, as sed prints it
    assert _plain_line_value(path, "HF_TOKEN") == "hf_x"
    assert _plain_line_value(path, "LORAFLEET_API_KEY") == ""


def test_no_line_or_two_lines_give_none(tmp_path):
    path = tmp_path / "s.env"
    path.write_text("export VLLM_API_KEY=sk-a\nXVLLM_API_KEY=sk-b\nHF_TOKEN=a\nHF_TOKEN=b\n")
    assert _plain_line_value(path, "VLLM_API_KEY") is None
    assert _plain_line_value(path, "HF_TOKEN") is None
    assert _plain_line_value(path, "LORAFLEET_API_KEY") is None
