"""Env files read back by the real compose (`docker compose config`): every value exactly as given.

No Docker engine is needed: the docker CLI's compose plugin parses the env file itself. Without the compose plugin the
test skips outside CI and fails in it.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorafleet.deploy import envfile, stack
from lorafleet.deploy.settings import Secrets, SettingsError, build_settings
from tests.support.docker_env import COMPOSE_PLUGIN, in_ci

TRICKY = ["sk-$HOME", "sk-ab #cd", "$UNSET", "${HOME}", "it's", 'say "hi"', "a b  c ", " lead", "a\\b", "a\\\\b",
          "a'\\b", "''", "#start", "x=y", "tab\there", "ünï 🔑", "`id`", "$(id)", "a;b|c&d", "%s{}[]"]


@pytest.fixture(scope="module")
def compose():
    if not COMPOSE_PLUGIN.is_file():
        if in_ci():
            pytest.fail(f"CI=true and no compose plugin at {COMPOSE_PLUGIN}: .ci/setup.sh installs it")
        pytest.skip(f"no compose plugin at {COMPOSE_PLUGIN} (.ci/setup.sh installs it)")
    return "docker"


def read_back(compose: str, tmp_path, values: list[str]) -> list[str]:
    """What compose gives a container for each value, written by envfile.line."""
    (tmp_path / "x.env").write_text("".join(envfile.line(f"V{i}", v) + "\n" for i, v in enumerate(values)))
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: scratch\n    env_file: [x.env]\n")
    # HOME and PATH are set: a value that compose interpolated ($HOME) would come back changed
    out = subprocess.run([compose, "compose", "--project-directory", str(tmp_path), "-f", str(tmp_path / "compose.yaml"),
                          "config", "--format", "json"], capture_output=True, text=True, check=True).stdout
    environment = json.loads(out)["services"]["a"]["environment"]
    # compose's output writes a literal $ as $$ (its own escape): undo it to compare values
    return [environment[f"V{i}"].replace("$$", "$") for i in range(len(values))]


def test_tricky_values_arrive_exactly(compose, tmp_path):
    assert read_back(compose, tmp_path, TRICKY) == TRICKY


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from("$#'\"\\ \t=`"),
                        max_size=24).filter(lambda v: envfile.problem(v) is None), min_size=1, max_size=40))
def test_any_value_envfile_accepts_arrives_exactly(compose, tmp_path, values):
    assert read_back(compose, tmp_path, values) == values


def test_a_plain_value_is_written_bare_so_a_generated_keys_file_keeps_its_bytes():
    assert envfile.line("VLLM_API_KEY", "sk-AbC_09-xyz") == "VLLM_API_KEY=sk-AbC_09-xyz"
    s = build_settings(_local(), Secrets(api_key="sk-$HOME #x"))
    assert "VLLM_API_KEY='sk-$HOME #x'" in stack.render_env_file(s)


@pytest.mark.parametrize("key, why", [("sk-a\nb", "line break"), ("sk-ab\\", "backslash at its end"),
                                      ("sk-a\\'b", "before a quote")])
def test_a_key_no_env_file_can_carry_is_refused_without_showing_it(key, why):
    with pytest.raises(SettingsError) as err:
        build_settings(_local(), Secrets(api_key=key))
    assert "LORAFLEET_API_KEY" in str(err.value) and why in str(err.value) and key not in str(err.value)


def _local() -> dict:
    from tests.conftest import group_data

    return group_data("local")


def test_a_token_on_two_lines_is_refused_without_showing_it():
    with pytest.raises(SettingsError) as err:
        build_settings({**_local(), "base_model_source": "hub", "base_model": "google/functiongemma-270m-it",
                        "base_model_gated": True, "adapters": []}, Secrets(api_key="k", hf_token="hf_abc\ndef"))
    assert "HF_TOKEN holds a line break" in str(err.value) and "hf_abc" not in str(err.value)


def test_the_hub_token_file_is_read_literally_by_docker_so_it_is_written_as_given():
    from lorafleet.deploy import hub

    s = build_settings(_local(), Secrets(api_key="k", hf_token="hf_$x #y 'z'"))
    assert "HF_TOKEN=hf_$x #y 'z'\n" in hub.render_hub_env_file(s)
