"""The fleet as the inventory declares it: each way it can be wrong refused at once with what to fix,
and the names and addresses the router uses."""

from __future__ import annotations

import pytest

from lorafleet.deploy.fleet import ROUTER_TS_HOSTNAME, box_url, endpoint_url, fleet_of, slug
from lorafleet.deploy.settings import Secrets, SettingsError, build_settings
from tests.unit.test_fleet import USER_KEY, box


def refusal(hosts, key=USER_KEY) -> list[str]:
    with pytest.raises(SettingsError) as refused:
        fleet_of(hosts, router_key=key)
    return refused.value.problems


def test_two_routers_no_box_two_bases_and_a_shared_address_are_each_named(local_data):
    a = box(local_data, "box-a", serve_models=False)
    b = box(local_data, "box-b", serve_models=False)
    assert refusal([("box-a", ["router"], a), ("box-b", ["router"], b)]) == [
        "the `router` group lists 2 hosts (box-a, box-b): the fleet has one router; list one host in it",
        "the inventory has a router but no box: at least one host needs serve_models = True"]
    c = box(local_data, "box-c", served_model_name="other-base", endpoint_host="gpu.tailnet")
    d = box(local_data, "box-d", endpoint_host="gpu.tailnet")
    assert refusal([("box-c", ["gpu", "router"], c), ("box-d", ["gpu"], d)]) == [
        "the boxes serve different base models (functiongemma-demo, other-base): behind one router the base is one "
        "model name; give every box the same served_model_name",
        "two boxes are reached at http://gpu.tailnet:8000/v1: give each its own endpoint_host"]


def test_a_fleet_without_a_router_key_names_the_fix(local_data):
    [problem] = refusal([("box-a", ["gpu", "router"], box(local_data, "box-a"))], key="")
    assert problem == ("the fleet's router has no API key, and it never serves without one: set LORAFLEET_API_KEY "
                       "in .secrets.env, or set generate_api_key = True so the deploy generates one")


def test_any_router_key_is_taken_as_it_is(local_data):
    """HAProxy compares a digest of the header: no key form is refused (LiteLLM took only `sk-` keys)."""
    fleet = fleet_of([("box-a", ["gpu", "router"], box(local_data, "box-a"))], router_key="plain key with ' and $")
    assert fleet.router_settings.secrets.api_key == "plain key with ' and $"


def test_a_box_is_reached_by_its_tailnet_name_or_its_host_name():
    assert slug("@ssh/10.0.0.2") == "ssh_10.0.0.2" and slug("box a/b") == "box_a_b"
    assert box_url("@ssh/gpu-box", _local(endpoint_host="")) == "http://gpu-box:8000/v1"
    assert box_url("gpu-box", _local(endpoint_host="box.tailnet", port=8010)) == "http://box.tailnet:8010/v1"


@pytest.mark.parametrize("overrides, host, expected", [
    ({"network_mode": "gateway", "endpoint_host": ""}, "@ssh/gpu-box", "http://gpu-box:8000/v1"),
    ({"network_mode": "gateway", "endpoint_host": "box.tailnet"}, "gpu-box", "http://box.tailnet:8000/v1"),
    ({"network_mode": "publish", "publish_address": "0.0.0.0", "publish_beyond_loopback": True}, "gpu-box",
     "http://127.0.0.1:8000/v1"),
    ({"network_mode": "publish", "publish_address": "100.64.0.7", "publish_beyond_loopback": True, "port": 9000},
     "gpu-box", "http://100.64.0.7:9000/v1"),
    ({"endpoint_url": "https://gpu.example/v1"}, "gpu-box", "https://gpu.example/v1"),
    ({"network_mode": "gateway", "endpoint_host": ""}, "@ssh/", "http://127.0.0.1:8000/v1"),
])
def test_the_endpoint_the_laptop_calls(overrides, host, expected):
    assert endpoint_url(_local(**overrides), host) == expected


def _local(**overrides):
    from tests.conftest import group_data

    return build_settings({**group_data("local"), **overrides}, Secrets(api_key="k"), check_sources=False)


@pytest.mark.parametrize("overrides, expected", [
    ({"router_network_mode": "gateway", "router_port": 4000}, f"http://{ROUTER_TS_HOSTNAME}:4000/v1"),
    ({"router_network_mode": "publish", "publish_address": "0.0.0.0", "publish_beyond_loopback": True,
      "router_port": 4001}, "http://127.0.0.1:4001/v1"),
    ({"router_network_mode": "publish", "publish_address": "::", "publish_beyond_loopback": True},
     "http://127.0.0.1:4000/v1"),
    ({"router_network_mode": "publish", "publish_address": "100.64.0.7", "publish_beyond_loopback": True},
     "http://100.64.0.7:4000/v1"),
    ({"router_endpoint_url": "https://router.example/v1"}, "https://router.example/v1"),
])
def test_the_fleets_one_endpoint(local_data, overrides, expected):
    a = box(local_data, "box-a", **{"router_port": 4000, **overrides})
    assert fleet_of([("box-a", ["gpu", "router"], a)], router_key=USER_KEY).endpoint == expected


def test_what_only_one_box_serves_and_each_adapters_home(local_data):
    a = box(local_data, "box-a", adapters=("weather", "sql", "email"))
    b = box(local_data, "box-b", adapters=("weather", "sql"), endpoint_host="box-b.tailnet")
    fleet = fleet_of([("box-a", ["gpu", "router"], a), ("box-b", ["gpu"], b)], router_key=USER_KEY)
    assert fleet.only_on("box-a") == ("email",) and fleet.only_on("box-b") == ()
    assert fleet.home("email") == "box-a" and {fleet.home(m) for m in ("weather", "sql")} <= {"box-a", "box-b"}
    assert fleet.box("box-b").url == "http://box-b.tailnet:8000/v1" and fleet.box("nope") is None
    assert fleet.models == ("functiongemma-demo", "weather", "sql", "email")
    assert endpoint_url(a, "box-a").endswith(":8000/v1")


def test_the_fleet_and_the_serving_decision_cannot_change_once_made(local_data):
    """Every step of a deploy reads the same fleet, facts and decision: none can change them on the way."""
    from dataclasses import FrozenInstanceError

    from lorafleet.deploy.decide import Decision, ServingFacts

    a = box(local_data, "box-a")
    fleet = fleet_of([("box-a", ["gpu", "router"], a)], router_key=USER_KEY)
    for frozen, field in [(fleet, "router"), (fleet.boxes[0], "name"), (ServingFacts(), "exists"),
                          (Decision(start=False, recreate=False, sync=False), "start")]:
        with pytest.raises(FrozenInstanceError):
            setattr(frozen, field, None)
