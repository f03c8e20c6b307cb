"""What the serving step lands on a host, written out whole against golden files.

For each profile and a few settings that change the output, tests/fixtures/plans/<case>.txt holds the
compose file, the image check's command, the start commands and the adapter manifest. Hashes of
inputs (image tags, the server hash label) are written as <hash>: they move with any shipped file,
and tests/unit/test_plans.py checks what moves them. After a deliberate change, write them anew with
LORAFLEET_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorafleet.deploy.engine import EngineView
from lorafleet.deploy.serving import plan
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data
from tests.support.golden import matches_golden

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
SECRETS = Secrets(hf_token="hf_golden", api_key="sk-golden")
ADAPTERS = [{"name": "sql", "hub": "acme/sql-lora", "revision": "0" * 40},
            {"name": "weather", "hub": "acme/weather-lora", "revision": "1" * 40}]

CASES = {
    "gpu": ("gpu", {}),
    "local": ("local", {}),
    "gpu-builtin-parser-no-tools-bf16": ("gpu", {"tool_call_parser": "functiongemma", "enable_tool_calling": False,
                                                 "dtype": "bfloat16", "wsl_pin_memory": False}),
    "gpu-no-caching-user-args": ("gpu", {"enable_prefix_caching": False, "enable_chunked_prefill": False,
                                         "extra_vllm_args": ["--seed", "0", "--middleware=my.Mw", "--chat-template",
                                                             "/t/$x.jinja"],
                                         "vllm_env": {"MY_VAR": "a$b"}, "adapters": ADAPTERS}),
    "local-publish-float32": ("local", {"network_mode": "publish", "dtype": "float32", "cpu_kvcache_space_gib": 3}),
}
DESKTOP = "gpu-docker-desktop"  # the gpu case through an engine that sees the roots elsewhere


def masked(text: str) -> str:
    return re.sub(r"\b[0-9a-f]{12,64}\b", "<hash>", text)


def written(case: str) -> str:
    groups, overrides = CASES[case if case != DESKTOP else "gpu"]
    s = build_settings({**group_data(groups), **overrides}, SECRETS, check_sources=False)
    engine = EngineView(((s.models_root, "/run/desktop/mnt/host/d/models"), ("/mnt/e", "/run/desktop/mnt/host/e"),
                         (s.cache_root, "/run/desktop/mnt/host/d/cache"), (s.stack_dir, "/run/desktop/wsl/stack"))) \
        if case == DESKTOP else plan.SAME_PATHS
    versions = {a.name: f"v{i}" for i, a in enumerate(s.adapters)}
    parts = [
        ("compose.yaml", plan.render_compose(s, engine)),
        ("image check", plan.image_check_command(s, engine) + "\n"),
        ("start", plan.start_with_rollback_command(s) + "\n"),
        ("start, recreating", plan.start_with_rollback_command(s, force_recreate=True) + "\n"),
        ("adapters.json", plan.render_manifest(s, versions)),
    ]
    return masked("".join(f"## {name}\n{body}" for name, body in parts))


@pytest.mark.parametrize("case", [*CASES, DESKTOP])
def test_what_lands_on_the_host_reads_as_the_golden_file_says(case):
    golden = GOLDEN / f"{case}.txt"
    text = written(case)
    matches_golden(golden, text)
    assert "sk-golden" not in text and "hf_golden" not in text


def router_written(network_mode: str) -> str:
    from lorafleet.deploy.fleet import endpoint_url, fleet_of
    from lorafleet.deploy.router import config, plan as router

    def box(name: str, adapters: tuple[str, ...], **overrides):
        data = {**group_data("local"), "adapters": [{"name": n, "demo": True} for n in adapters], **overrides}
        return build_settings(data, Secrets(api_key=f"sk-key-of-{name}"), check_sources=False)

    a = box("box-a", ("weather", "sql", "email"), router_network_mode=network_mode, router_port=4100)
    b = box("box-b", ("weather", "sql"), endpoint_host="box-b.tailnet")
    fleet = fleet_of([("box-a", ["gpu", "router"], a), ("box-b", ["gpu"], b)], router_key="sk-user-router-key")
    s = fleet.router_settings
    parts = [
        ("compose.yaml", router.compose(s)),
        ("build", router.build_command(s) + "\n"),
        ("start", router.start_command(s) + "\n"),
        ("reload", router.reload_command(s) + "\n"),
        ("haproxy.cfg", config.render(fleet)),
        ("haproxy.cfg, box-b drained", config.render(fleet, frozenset({"box-b"}))),
        ("haproxy.cfg, box-a drained", config.render(fleet, frozenset({"box-a"}))),
        ("endpoints", f"{endpoint_url(a, 'box-a')} {endpoint_url(b, 'box-b')} {fleet.endpoint}\n"),
    ]
    return masked("".join(f"## {name}\n{body}" for name, body in parts))


@pytest.mark.parametrize("network_mode", ["gateway", "publish"])
def test_what_the_router_runs_reads_as_the_golden_file_says(network_mode):
    golden = GOLDEN / f"router-{network_mode}.txt"
    text = router_written(network_mode)
    matches_golden(golden, text)
    commands = text.split("## config.yaml")[0]  # the config is the 0600 file that holds the keys, by design
    assert "sk-key-of-box" not in commands and "sk-user-router-key" not in commands


def test_a_plugin_flag_left_without_its_value_is_passed_on_empty():
    """check_image.py then names the flag; vLLM itself would refuse the command line."""
    s = build_settings({**group_data("gpu"), "extra_vllm_args": ["--chat-template"]}, SECRETS, check_sources=False)
    assert plan.plugin_args(s)[-2:] == ["--chat-template", ""]
    s = build_settings({**group_data("gpu"), "extra_vllm_args": ["--chat-template", "/t.jinja"]}, SECRETS,
                       check_sources=False)
    assert plan.plugin_args(s)[-2:] == ["--chat-template", "/t.jinja"]
