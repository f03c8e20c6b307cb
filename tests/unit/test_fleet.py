"""The fleet: boxes and router from the inventory, the router's generated configuration and compose project."""

from __future__ import annotations

import base64
import collections
import hashlib

import pytest
import yaml

from lorafleet.deploy.engine import EngineView
from lorafleet.deploy.fleet import fleet_of
from lorafleet.deploy.router import config as router_config
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


def sections(text: str) -> dict[str, list[str]]:
    """HAProxy's configuration by section (`backend model_1  # sql` is keyed `backend model_1`), comments dropped."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        code = line.split("  #")[0].rstrip() if not line.startswith("#") else ""
        if code and not code.startswith(" "):
            current = " ".join(code.split()[:2])
            out[current] = []
        elif code:
            out[current].append(code.strip())
    return out


def backend_of(config: dict[str, list[str]], model: str) -> list[str]:
    rule = next(line for line in config["frontend fleet"] if line.endswith(f"-m str {model} }}"))
    return config[f"backend {rule.split()[1]}"]


def servers(lines: list[str]) -> dict[str, int]:
    """server name -> weight."""
    return {words[1]: int(words[words.index("weight") + 1]) for words in (line.split() for line in lines)
            if words[0] == "server"}


def test_a_request_for_an_adapter_only_reaches_boxes_that_serve_it(local_data):
    fleet = make(local_data)
    config = sections(router_config.render(fleet))
    rules = [line for line in config["frontend fleet"] if line.startswith("use_backend")]
    assert len(rules) == len(fleet.models) == 4  # one rule per model, each to its own backend
    assert set(servers(backend_of(config, "email"))) == {"box-a"}
    assert set(servers(backend_of(config, "sql"))) == {"box-a", "box-b"}
    assert "server vllm box-b.tailnet:8000 check inter 2s fall 2 rise 1" in config["listen box_box-b"]
    assert "server vllm box-a:8000 check inter 2s fall 2 rise 1" in config["listen box_box-a"]
    for model in fleet.models:  # each model's servers are the boxes' own proxies, and follow their health checks
        assert all(line.endswith(f"track box_{name}/vllm") and f"abns@lorafleet-box-{name} " in line
                   for name in servers(backend_of(config, model))
                   for line in backend_of(config, model) if line.startswith(f"server {name} "))
    assert config["backend unknown_model"][0].startswith("http-request return status 404")


def test_each_box_is_called_with_its_own_key_and_the_router_with_the_users(local_data):
    fleet = make(local_data)
    text = router_config.render(fleet)
    config = sections(text)
    for name in ("box-a", "box-b"):
        (rule,) = [line for line in config[f"listen box_{name}"] if "authorization" in line]
        encoded = rule.removeprefix("http-request set-header authorization %[str(").removesuffix("),b64dec]")
        assert base64.b64decode(encoded).decode() == f"Bearer key-of-{name}"
    digest = hashlib.sha256(f"Bearer {USER_KEY}".encode()).hexdigest().upper()
    (check,) = [line for line in config["frontend fleet"] if "status 401" in line]
    assert check.endswith(f"unless {{ req.fhdr(authorization),sha2(256),hex -m str {digest} }}")
    assert USER_KEY not in text and "key-of-box" not in text  # the user's key only as a digest, the boxes' encoded


def test_a_box_without_a_key_never_receives_the_users(local_data):
    a = build_settings({**local_data, "serve_without_api_key": True}, Secrets(api_key=""), check_sources=False)
    fleet = fleet_of([("box-a", ["gpu", "router"], a)], router_key=USER_KEY)
    config = sections(router_config.render(fleet))
    assert "http-request del-header authorization" in config["listen box_box-a"]


def test_one_home_box_per_adapter_gets_the_weight(local_data):
    fleet = make(local_data, router_home_weight=7)
    config = sections(router_config.render(fleet))
    for model in ("weather", "sql"):
        weights = servers(backend_of(config, model))
        assert sorted(weights.values()) == [1, 7]
        assert weights[fleet.home(model)] == 7
        assert "balance random(1)" in backend_of(config, model)  # weights alone decide, not the load
    # Stable: the same inventory gives the same homes, run after run.
    assert [fleet.home(m) for m in ("weather", "sql")] == [make(local_data).home(m) for m in ("weather", "sql")]


def test_homes_spread_over_the_boxes(local_data):
    names = tuple(f"adapter-{i}" for i in range(40))
    a = box(local_data, "box-a", adapters=names)
    b = box(local_data, "box-b", adapters=names, endpoint_host="box-b.tailnet")
    fleet = fleet_of([("box-a", ["router"], a), ("box-b", [], b)], router_key=USER_KEY)
    homes = collections.Counter(fleet.home(n) for n in names)
    assert set(homes) == {"box-a", "box-b"} and min(homes.values()) >= 12, homes  # not all adapters on one box


def test_a_drained_box_is_in_no_backend_and_the_config_id_changes(local_data):
    fleet = make(local_data)
    whole, drained = router_config.render(fleet), router_config.render(fleet, frozenset({"box-b"}))
    config = sections(drained)
    assert "listen box_box-b" not in config
    assert all(set(servers(backend_of(config, m))) == {"box-a"} for m in fleet.box("box-a").models)
    models = next(line for line in config["frontend fleet"] if "{ path /v1/models }" in line)
    assert '"id":"email"' in models and '"id":"weather"' in models

    def config_id(text: str) -> str:
        (line,) = [line for line in text.splitlines() if line.startswith("# lorafleet-router-config ")]
        return line.split()[-1]

    assert config_id(whole) != config_id(drained) and config_id(whole) == config_id(router_config.render(fleet))
    assert f'"config":"{config_id(whole)}"' in whole  # /health says which configuration the router serves


def test_the_router_retries_another_box_and_logs_nothing_of_a_request(local_data):
    config = sections(router_config.render(make(local_data)))
    sql = backend_of(config, "sql")
    assert "option redispatch 1" in sql and "retries 2" in sql
    assert "retry-on conn-failure empty-response junk-response 404 502 503 504" in sql
    assert not any(line.startswith(("log ", "option httplog", "capture ")) for lines in config.values() for line in lines)


def test_a_fleet_without_a_router_key_is_an_error_with_the_fix(local_data):
    with pytest.raises(SettingsError, match=r"router has no API key.*LORAFLEET_API_KEY.*generate_api_key = True"):
        fleet_of([("box-a", ["gpu", "router"], box(local_data, "box-a"))], router_key="")


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
    assert "command" not in service and service["image"] == plan.image(s)  # the image runs HAProxy on run/haproxy.cfg
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
