"""Endpoint resolution: flag > env > .secrets.env, then the generated key file, in the project root > default.

The server URL is the root; the endpoint is the server URL plus /v1. --url and LORAFLEET_URL take either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lorafleet.tools.endpoint import DEFAULT_URL, find_project_root, normalize_url, resolve_endpoint


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root with deploy.py and a key file, and a nested folder to start from."""
    (tmp_path / "deploy.py").write_text("# marker\n")
    state = tmp_path / ".state"
    state.mkdir()
    key = state / "api-key"
    key.write_text("file-key\n")
    os.chmod(key, 0o600)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    return nested


def test_defaults_without_anything(tmp_path: Path) -> None:
    ep = resolve_endpoint(env={}, cwd=tmp_path)
    assert ep.server_url == DEFAULT_URL
    assert ep.endpoint_url == DEFAULT_URL + "/v1"
    assert ep.api_key is None
    assert (ep.url_source, ep.key_source) == ("default", "none")
    assert ep.headers() == {}


def test_key_file_found_by_walking_up(project: Path) -> None:
    ep = resolve_endpoint(env={}, cwd=project)
    assert ep.api_key == "file-key"
    assert ep.key_source.endswith(".state/api-key")
    assert find_project_root(project) == project.parent.parent


def test_env_beats_key_file(project: Path) -> None:
    ep = resolve_endpoint(env={"LORAFLEET_API_KEY": "env-key", "LORAFLEET_URL": "http://h:9/"}, cwd=project)
    assert (ep.api_key, ep.key_source) == ("env-key", "env LORAFLEET_API_KEY")
    assert (ep.server_url, ep.url_source) == ("http://h:9", "env LORAFLEET_URL")


def test_vllm_api_key_is_accepted_after_lorafleet_key(project: Path) -> None:
    assert resolve_endpoint(env={"VLLM_API_KEY": "v"}, cwd=project).api_key == "v"
    both = resolve_endpoint(env={"VLLM_API_KEY": "v", "LORAFLEET_API_KEY": "l"}, cwd=project)
    assert both.api_key == "l"


def test_flags_beat_everything(project: Path) -> None:
    env = {"LORAFLEET_API_KEY": "env-key", "LORAFLEET_URL": "http://env:1"}
    ep = resolve_endpoint(url="flag:2", api_key="flag-key", env=env, cwd=project)
    assert (ep.server_url, ep.api_key) == ("http://flag:2", "flag-key")
    assert (ep.url_source, ep.key_source) == ("--url", "--api-key")


def test_empty_key_file_means_no_key(project: Path) -> None:
    (project.parent.parent / ".state" / "api-key").write_text("\n")
    assert resolve_endpoint(env={}, cwd=project).api_key is None


def test_key_never_shown(project: Path) -> None:
    ep = resolve_endpoint(api_key="s3cret-value", env={}, cwd=project)
    assert "s3cret-value" not in repr(ep)
    assert "s3cret-value" not in str(ep)
    assert "s3cret-value" not in ep.describe()
    assert ep.headers() == {"Authorization": "Bearer s3cret-value"}


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("http://h:8000/", "http://h:8000"),
        ("http://h:8000/v1", "http://h:8000"),
        ("h:8000", "http://h:8000"),
        (" https://x.ts.net/v1/ ", "https://x.ts.net"),
    ],
)
def test_normalize_url(raw: str, want: str) -> None:
    assert normalize_url(raw) == want


@pytest.mark.parametrize("given", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "h:8000/v1/"])
def test_server_url_or_endpoint_name_the_same_server(given: str) -> None:
    ep = resolve_endpoint(url=given, env={})
    assert (ep.server_url, ep.endpoint_url) == ("http://h:8000", "http://h:8000/v1")
    assert resolve_endpoint(env={"LORAFLEET_URL": given}).endpoint_url == "http://h:8000/v1"


def test_the_key_in_secrets_env_beats_the_generated_file(project: Path) -> None:
    (project.parent.parent / ".secrets.env").write_text("LORAFLEET_API_KEY=secrets-env-key\n")
    ep = resolve_endpoint(env={}, cwd=project)
    assert ep.api_key == "secrets-env-key" and ep.key_source.endswith(".secrets.env")


def test_the_key_file_follows_lorafleet_state_dir_like_the_deploy(project: Path, tmp_path: Path) -> None:
    state = tmp_path / "elsewhere"
    state.mkdir()
    (state / "api-key").write_text("state-dir-key\n")
    assert resolve_endpoint(env={"LORAFLEET_STATE_DIR": str(state)}, cwd=project).api_key == "state-dir-key"
