"""The fleet: boxes and router from the inventory, the router's generated configuration and compose project."""

from __future__ import annotations

import collections
import subprocess

import pytest
import yaml

from lorafleet.deploy.engine import EngineView
from lorafleet.deploy.fleet import deployment_id, fleet_of, render_router_config, router_config
from lorafleet.deploy.router import plan
from lorafleet.deploy.settings import Secrets, SettingsError, build_settings

USER_KEY = "sk-user-key-for-the-router"


def box(data: dict, name: str, adapters=("weather", "sql", "email"), **overrides):
    entries = [{"name": n, "demo": True} for n in adapters]
    return build_settings({**data, "adapters": entries, **overrides},
                          Secrets(api_key=f"key-of-{name}"), check_sources=False)


def make(local_data, **router_overrides):
    b = box(local_data, "box-b", adapters=("weather", "sql"), endpoint_host="box-b.tailnet")
    a = box(local_data, "box-a", **router_overrides)  # the router runs on box-a
    return fleet_of([("box-a", ["gpu", "router"], a), ("box-b", ["gpu"], b)], router_key=USER_KEY)


def test_no_router_group_is_one_box_as_before(local_data):
    assert fleet_of([("box-a", ["gpu"], box(local_data, "box-a"))], router_key=USER_KEY) is None


def test_boxes_models_and_where_the_router_reaches_them(local_data):
    fleet = make(local_data)
    assert [b.name for b in fleet.boxes] == ["box-a", "box-b"] and fleet.router == "box-a"
    assert fleet.models == ("functiongemma-demo", "weather", "sql", "email")
    assert fleet.box("box-b").url == "http://box-b.tailnet:8000/v1"
    assert fleet.box("box-a").url == "http://box-a:8000/v1"  # no endpoint_host: the host name (its tailnet name)
    assert [b.name for b in fleet.serving("email")] == ["box-a"] and fleet.only_on("box-a") == ("email",)


def test_a_request_for_an_adapter_only_reaches_boxes_that_serve_it(local_data):
    fleet = make(local_data)
    config = router_config(fleet)
    by_model = collections.defaultdict(set)
    for d in config["model_list"]:
        by_model[d["model_name"]].add(d["litellm_params"]["api_base"])
        assert d["litellm_params"]["model"] == f"hosted_vllm/{d['model_name']}"
    assert {d["model_info"]["id"] for d in config["model_list"]} == {
        deployment_id(b.name, m) for b in fleet.boxes for m in b.models}
    assert by_model["email"] == {"http://box-a:8000/v1"}
    assert by_model["sql"] == {"http://box-a:8000/v1", "http://box-b.tailnet:8000/v1"}


def test_each_box_is_called_with_its_own_key_and_the_router_with_the_users(local_data):
    fleet = make(local_data)
    config = router_config(fleet)
    keys = {d["litellm_params"]["api_base"]: d["litellm_params"]["api_key"] for d in config["model_list"]}
    assert keys == {"http://box-a:8000/v1": "key-of-box-a", "http://box-b.tailnet:8000/v1": "key-of-box-b"}
    assert config["general_settings"]["master_key"] == USER_KEY
    assert USER_KEY not in keys.values()


def test_one_home_box_per_adapter_gets_the_weight(local_data):
    fleet = make(local_data, router_home_weight=7)
    for model in ("weather", "sql"):
        weights = {d["model_info"]["id"]: d["litellm_params"]["weight"]
                   for d in router_config(fleet)["model_list"] if d["model_name"] == model}
        assert sorted(weights.values()) == [1, 7]
        assert weights[deployment_id(fleet.home(model), model)] == 7
    # Stable: the same inventory gives the same homes, run after run.
    assert [fleet.home(m) for m in ("weather", "sql")] == [make(local_data).home(m) for m in ("weather", "sql")]


def test_homes_spread_over_the_boxes(local_data):
    names = tuple(f"adapter-{i}" for i in range(40))
    a = box(local_data, "box-a", adapters=names)
    b = box(local_data, "box-b", adapters=names, endpoint_host="box-b.tailnet")
    fleet = fleet_of([("box-a", ["router"], a), ("box-b", [], b)], router_key=USER_KEY)
    homes = collections.Counter(fleet.home(n) for n in names)
    assert set(homes) == {"box-a", "box-b"} and min(homes.values()) >= 12, homes  # not all adapters on one box


def test_a_drained_box_has_no_deployment_left(local_data):
    fleet = make(local_data)
    drained = router_config(fleet, frozenset({"box-b"}))
    assert all("box-b" not in d["litellm_params"]["api_base"] for d in drained["model_list"])
    assert {d["model_name"] for d in drained["model_list"]} == set(fleet.box("box-a").models)
    assert plan.expected(fleet, frozenset({"box-b"})) == [d["model_info"]["id"] for d in drained["model_list"]]


def test_the_router_never_logs_bodies_or_keys_and_fails_over_at_once(local_data):
    fleet = make(local_data)
    config = yaml.safe_load(render_router_config(fleet))
    assert config["litellm_settings"]["turn_off_message_logging"] is True
    assert config["litellm_settings"]["redact_user_api_key_info"] is True
    assert config["router_settings"]["allowed_fails"] == 0 and config["router_settings"]["num_retries"] >= 1
    assert config["general_settings"]["health_check_interval"] == 10


@pytest.mark.parametrize("key", ["", "plain-key-without-prefix"])
def test_a_router_key_litellm_refuses_is_an_error_with_the_fix(local_data, key):
    with pytest.raises(SettingsError, match=r"does not start with 'sk-'.*LORAFLEET_API_KEY=sk-"):
        fleet_of([("box-a", ["gpu", "router"], box(local_data, "box-a"))], router_key=key)


def test_two_routers_or_no_box_or_two_bases_are_errors(local_data):
    r = box(local_data, "a")
    with pytest.raises(SettingsError, match="one router"):
        fleet_of([("a", ["router"], r), ("b", ["router"], box(local_data, "b"))], router_key=USER_KEY)
    only_router = build_settings({**local_data, "serve_models": False}, Secrets(api_key="k"), check_sources=False)
    with pytest.raises(SettingsError, match="no box"):
        fleet_of([("r", ["router"], only_router)], router_key=USER_KEY)
    other = box(local_data, "b", served_model_name="another-base", endpoint_host="b")
    with pytest.raises(SettingsError, match="different base models"):
        fleet_of([("a", ["router"], r), ("b", [], other)], router_key=USER_KEY)
    twin = box(local_data, "b", endpoint_host="a")
    with pytest.raises(SettingsError, match="two boxes are reached at http://a:8000/v1"):
        fleet_of([("a", ["router"], r), ("b", [], twin)], router_key=USER_KEY)


def test_a_router_only_host_is_no_box_and_needs_no_model_settings(local_data):
    only_router = build_settings({**local_data, "serve_models": False, "base_model_source": "hub", "adapters": [],
                                  "base_model": "google/functiongemma-270m-it", "base_model_gated": True},
                                 Secrets(api_key="k"))  # no HF_TOKEN: a router-only host downloads nothing
    fleet = fleet_of([("small", ["router"], only_router), ("box-a", ["gpu"], box(local_data, "box-a"))], router_key=USER_KEY)
    assert [b.name for b in fleet.boxes] == ["box-a"] and fleet.router == "small"


def test_router_endpoint_as_the_laptop_reaches_it(local_data):
    assert make(local_data, router_network_mode="gateway").endpoint == "http://lorafleet-router:4000/v1"
    assert make(local_data, router_network_mode="publish", router_port=4100).endpoint == "http://127.0.0.1:4100/v1"
    assert make(local_data, router_endpoint_url="http://10.0.0.9:4000/v1").endpoint == "http://10.0.0.9:4000/v1"


def test_router_compose_joins_its_gateway_or_publishes_and_holds_no_secret(local_data):
    fleet = make(local_data, router_network_mode="gateway")
    s = fleet.router_settings
    text = plan.compose(s)
    service = yaml.safe_load(text)["services"]["router"]
    assert service["network_mode"] == "container:lorafleet-router-gateway" and "ports" not in service
    assert service["volumes"] == [f"{s.stack_dir}/router/run:/router:ro"]
    assert "--run_gunicorn" in service["command"] and service["image"] == plan.image(s)
    assert USER_KEY not in text and "key-of-box" not in text
    published = yaml.safe_load(plan.compose(make(local_data, router_network_mode="publish").router_settings))
    assert published["services"]["router"]["ports"] == ["127.0.0.1:4000:4000"]
    # On Docker Desktop the engine binds its own path of the folder (the gateway's mount says which).
    desktop = EngineView(((s.stack_dir, "/run/desktop/mnt/host/wsl/stack"),))
    assert yaml.safe_load(plan.compose(s, desktop))["services"]["router"]["volumes"] == [
        "/run/desktop/mnt/host/wsl/stack/router/run:/router:ro"]


def test_router_image_tag_follows_its_inputs(local_data):
    s = make(local_data).router_settings
    other = build_settings({**local_data, "cpu_base_image": "python:3.11-bookworm"}, Secrets(api_key="k"), check_sources=False)
    assert plan.image(s).startswith("lorafleet/router:") and plan.image(s) != plan.image(other)


# A stand-in for the docker CLI (a hung LiteLLM startup cannot be had on demand): it records each
# call and fails `compose up` as many times as asked. The command under test is the real one, in bash.
FAKE_DOCKER = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *" up "*) n=$(grep -c ' up ' "$CALLS"); [ "$n" -gt "$FAIL_UPS" ] || { echo 'container router is unhealthy' >&2; exit 1; } ;;
  logs*) echo "log line of the router" ;;
esac
"""


@pytest.mark.parametrize(("fail_ups", "status", "ups"), [(0, 0, 1), (1, 0, 2), (2, 1, 2)])
def test_fake_docker_a_router_that_does_not_start_shows_its_stacks_and_is_recreated_once(
        local_data, tmp_path, fail_ups, status, ups):
    fleet = make(local_data)
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    env = {"PATH": f"{docker.parent}:/usr/bin:/bin", "CALLS": str(calls), "FAIL_UPS": str(fail_ups)}
    result = subprocess.run(["bash", "-c", plan.start_command(fleet.router_settings, fleet)],
                            env=env, capture_output=True, text=True, timeout=30)
    lines = calls.read_text().splitlines()
    assert result.returncode == status, result.stderr
    assert sum(" up " in line for line in lines) == ups
    if fail_ups:
        assert any(line.endswith("ctl.py stacks") for line in lines)
        assert any(line.startswith("logs --since 20") for line in lines)  # only what followed the signal
        assert "recreating it once" in result.stderr
        assert "--force-recreate" in [line for line in lines if " up " in line][-1]
        assert sum("ctl.py wait" in line for line in lines) == ups - fail_ups
    else:
        assert not any("stacks" in line or line.startswith("logs") for line in lines)
