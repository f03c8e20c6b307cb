"""cpu_base_image = "local": group data stays data; the image step resolves the host's own base image."""

from __future__ import annotations

import ast

from lorafleet.deploy import local_base
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import ROOT

SECRETS = Secrets(api_key="k")


def test_group_data_runs_no_command_when_it_is_loaded():
    tree = ast.parse((ROOT / "group_data" / "local.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call))]


def test_local_resolves_to_the_env_then_the_hosts_base_then_the_slim_image(local_data, monkeypatch):
    settings = build_settings(local_data, SECRETS)
    assert settings.cpu_base_image == "local"
    monkeypatch.delenv(local_base.ENV, raising=False)
    assert local_base.resolved(settings, None).cpu_base_image == "python:3.11-slim"
    assert local_base.resolved(settings, "lorafleet/base:bookworm-abc").cpu_base_image == "lorafleet/base:bookworm-abc"
    monkeypatch.setenv(local_base.ENV, "mine/base:1")
    assert local_base.resolved(settings, "lorafleet/base:bookworm-abc").cpu_base_image == "mine/base:1"


def test_a_concrete_base_is_left_as_it_is(local_data):
    settings = build_settings({**local_data, "cpu_base_image": "python:3.11-bookworm"}, SECRETS)
    assert local_base.resolved(settings, "lorafleet/base:x") is settings


def test_the_newest_labelled_base_is_taken_and_untagged_ones_never():
    assert local_base.newest(["lorafleet/base:<none>", "lorafleet/base:b", "lorafleet/base:a"]) == "lorafleet/base:b"
    assert local_base.newest(["", "  "]) is None


def test_anything_but_local_or_a_tagged_reference_is_refused(local_data):
    import pytest

    from lorafleet.deploy.settings import SettingsError

    with pytest.raises(SettingsError, match="cpu_base_image='python' is not allowed.*or 'local'"):
        build_settings({**local_data, "cpu_base_image": "python"}, SECRETS)
