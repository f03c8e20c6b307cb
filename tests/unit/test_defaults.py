"""Defaults live in group_data/all.py: the settings schema and the bootstrap agree with it."""

from __future__ import annotations

import re

from lorafleet.deploy import layout
from lorafleet.deploy.settings import OPTIONAL, Secrets, build_settings, setting_names
from tests.conftest import group_data


def test_all_py_names_every_setting_and_nothing_else():
    data = group_data()
    assert sorted(data) == sorted(setting_names())


def test_only_optional_settings_may_be_left_unset_in_all_py():
    unset = {k for k, v in group_data().items() if v is None}
    assert unset <= set(OPTIONAL), f"None in all.py for a required setting: {unset - set(OPTIONAL)}"


def test_every_setting_has_a_comment_in_all_py():
    text = (layout.GROUP_DATA_DIR / "all.py").read_text()
    for name in setting_names():
        line = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
        assert "#" in line or name in ("adapters", "generate_api_key"), f"{name} has no comment in all.py"


def test_bootstrap_defaults_are_the_deploys(gpu_data):
    script = layout.BOOTSTRAP.read_text()

    def default(var: str) -> str:
        return re.search(rf"^{var}=(\S+)$", script, re.M).group(1)

    s = build_settings(gpu_data, Secrets(hf_token="hf_x", api_key="k"))
    assert default("MODELS_ROOT") == s.models_root
    assert default("ADAPTERS_ROOT") == s.adapters_root
    assert default("CACHE_ROOT") == s.cache_root
    assert default("STACK_DIR") == s.stack_dir
    assert re.search(r"CONTAINER=\$\{LORAFLEET_GATEWAY_CONTAINER:-(\S+)\}", script).group(1) == s.gateway_container
    assert default("TS_NAME") == "function-gemma-server"
