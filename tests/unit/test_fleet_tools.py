"""``lorafleet status --fleet`` and ``lorafleet check --fleet`` on a real inventory file, with fake servers.

The boxes are fake vLLM servers (tests/support/fake_server.py), each requiring its own box key. The
router is a stand-in here: the same fake server with the user's key and the router's /health, not
HAProxy (tests/e2e/test_9a_router.py and the fleet scenario run the real router).

The command runs in a child process, as a user runs it: reading an inventory imports pyinfra_cli,
whose import monkey-patches the whole process for gevent, which the fake servers' threads (and the
rest of the unit tests) must not share.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator
from unittest import mock

import pytest
from aiohttp import web

from lorafleet.tools import fleet as fleet_tools
from lorafleet.tools.cli import main as cli_main
from tests.support import fake_server
from tests.support.fake_server import DEFAULT_BASE, FakeConfig, FakeServer, running_fake_server

USER_KEY = "sk-user-ZQX-fleet"  # the router's key; "ZQX" marks every key
BOX_KEYS = {"box-a": "sk-box-ZQX-a", "box-b": "sk-box-ZQX-b"}
DECLARED = {"box-a": ["sql"], "box-b": ["sql", "weather"]}
FLEET_MODELS = [DEFAULT_BASE, "sql", "weather"]
UNUSED_URL = "http://127.0.0.1:9"  # the discard port: nothing answers


class RouterStandIn(FakeServer):
    """The fake server plus the path the router answers without a key while it runs (its configuration's id)."""

    def app(self) -> web.Application:
        app = super().app()

        async def alive(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "config": "0123456789abcdef"})

        app.router.add_get(fleet_tools.ROUTER_LIVENESS, alive)
        return app


@contextlib.contextmanager
def running_router_stand_in(models: list[str], broken: set[str] = frozenset()) -> Iterator[str]:
    config = FakeConfig(base=DEFAULT_BASE, adapters=[m for m in models if m != DEFAULT_BASE], api_key=USER_KEY,
                        broken=set(broken))
    with contextlib.ExitStack() as stack:
        with mock.patch.object(fake_server, "FakeServer", RouterStandIn):  # only while it starts
            url = stack.enter_context(running_fake_server(config))
        yield url


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """A laptop whose state folder holds the box keys the deploy wrote."""
    (tmp_path / "state" / "box-keys").mkdir(parents=True)
    for box, key in BOX_KEYS.items():
        (tmp_path / "state" / "box-keys" / box).write_text(key + "\n")
    return tmp_path


def run(laptop: Path, *argv: str, **env: str) -> tuple[int, str]:
    """`lorafleet ARGV` with the user's key in the environment; (exit code, stdout and stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_") and k != "VLLM_API_KEY"}
    base.update(LORAFLEET_STATE_DIR=str(laptop / "state"), LORAFLEET_API_KEY=USER_KEY,
                LORAFLEET_SECRETS_FILE=str(laptop / "absent.env"), **env)
    proc = subprocess.run([sys.executable, "-m", "lorafleet.tools.cli", *argv], capture_output=True, text=True,
                          env=base, cwd=ROOT, timeout=120)
    text = proc.stdout + proc.stderr
    assert "ZQX" not in text, text  # no key, the user's or a box's, in any output
    return proc.returncode, text


def host_data(url: str, router_url: str, adapters: list[str] = ()) -> dict:
    port = int(url.rsplit(":", 1)[1])
    return {"profile": "cpu", "base_model_source": "demo", "base_model_gated": False,
            "served_model_name": DEFAULT_BASE, "adapters": [{"name": a, "demo": True} for a in adapters],
            "network_mode": "publish", "endpoint_url": url + "/v1", "port": port,
            "router_network_mode": "publish", "router_endpoint_url": router_url + "/v1"}


def write_inventory(folder: Path, box_urls: dict[str, str], router_url: str, router: str | None = "gw") -> Path:
    """An inventory: the boxes in `fleet`, and the router on `router` (a router-only host "gw" by default)."""
    fleet = [(box, host_data(url, router_url, DECLARED[box])) for box, url in box_urls.items()]
    text = f"fleet = {fleet!r}\n"
    if router == "gw":
        text += f"router = [('gw', {{**{host_data(UNUSED_URL, router_url)!r}, 'serve_models': False}})]\n"
    elif router:
        text += f"router = [{router!r}]\n"
    path = folder / "inventory.py"
    path.write_text(text)
    return path


class Fleet:
    """Fake boxes and the router stand-in, each stoppable on its own."""

    def __init__(self, folder: Path, served: dict[str, list[str]] | None = None,
                 router_models: list[str] = FLEET_MODELS, broken: dict[str, set[str]] | None = None,
                 router: str | None = "gw") -> None:
        served = served or DECLARED
        broken = broken or {}
        self.stacks = {name: contextlib.ExitStack() for name in (*BOX_KEYS, "router")}
        self.urls = {box: self.stacks[box].enter_context(running_fake_server(
            FakeConfig(adapters=served[box], api_key=BOX_KEYS[box], broken=broken.get(box, set()))))
            for box in BOX_KEYS}
        self.router_url = self.stacks["router"].enter_context(running_router_stand_in(router_models))
        self.inventory = write_inventory(folder, self.urls, self.router_url, router)

    def stop(self, name: str) -> None:
        self.stacks[name].close()

    def close(self) -> None:
        for stack in self.stacks.values():
            stack.close()


@pytest.fixture
def start(laptop: Path) -> Iterator:
    started: list[Fleet] = []

    def make(**kwargs) -> Fleet:
        started.append(Fleet(laptop, **kwargs))
        return started[-1]

    yield make
    for f in started:
        f.close()


def test_status_fleet_healthy_with_router_stand_in(start, laptop) -> None:
    f = start()
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 0, out
    assert f"router on gw at {f.router_url}/v1: up, lists 3 of 3 models" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("box-")}
    assert rows["box-a"][:5] == ["box-a", "up", "0.32.0+fake", "1", "of"] and rows["box-a"][5] == "1"
    assert rows["box-b"][:6] == ["box-b", "up", "0.32.0+fake", "2", "of", "2"]
    assert "missing" not in out


def test_status_fleet_json_with_router_stand_in(start, laptop) -> None:
    f = start()
    code, out = run(laptop, "status", "--fleet", "--json", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 0, out
    fs = json.loads(out)
    assert fs["router"]["health"] == "up" and fs["router"]["missing"] == []
    assert sorted(fs["router"]["models"]) == sorted(FLEET_MODELS)
    assert [b["box"] for b in fs["boxes"]] == ["box-a", "box-b"]
    assert all(b["health"] == "up" and b["missing"] == [] for b in fs["boxes"])
    assert fs["boxes"][1]["declared_adapters"] == ["sql", "weather"] and fs["boxes"][1]["kv_cache_usage"] == 0


def test_status_fleet_one_box_stopped_is_down(start, laptop) -> None:
    f = start()
    f.stop("box-b")
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 1, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("box-")}
    assert rows["box-a"][1] == "up" and rows["box-b"][1] == "down"
    assert f"box-b: not reachable at {f.urls['box-b']}" in out


def test_status_fleet_names_missing_adapters_of_a_box_and_of_the_router_stand_in(start, laptop) -> None:
    f = start(served={"box-a": ["sql"], "box-b": ["sql"]}, router_models=[DEFAULT_BASE, "sql"])
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 1, out
    assert "box-b  up" in out and "1 of 2, missing: weather" in out
    assert "lists 2 of 3 models, missing: weather" in out
    fs = json.loads(run(laptop, "status", "--fleet", "--json", "--inventory", str(f.inventory))[1])
    assert fs["boxes"][1]["missing"] == ["weather"] and fs["router"]["missing"] == ["weather"]


def test_status_fleet_router_stand_in_stopped(start, laptop) -> None:
    f = start()
    f.stop("router")
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 1, out
    assert "router on gw" in out and ": down, lists n/a models" in out
    assert "box-a  up" in out


def test_status_fleet_box_refusing_its_key_names_the_key_file_not_the_key(start, laptop) -> None:
    f = start()
    (laptop / "state" / "box-keys" / "box-b").write_text("sk-box-ZQX-stale\n")
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 1, out
    assert "box-b  down" in out
    assert f"box-b refused its key ({laptop / 'state' / 'box-keys' / 'box-b'})" in out


def test_check_fleet_through_router_stand_in_then_each_box(start, laptop) -> None:
    f = start()
    code, out = run(laptop, "check", "--fleet", "--inventory", str(f.inventory), "--timeout", "30")
    assert code == 0, out
    router, box_a, box_b = out.split("== ")[1:]
    assert router.startswith("router on gw") and f"server {f.router_url}: 3 models" in router
    assert "3 of 3 answered" in router
    assert box_a.startswith("box box-a") and f"server {f.urls['box-a']}: 2 models" in box_a
    assert box_b.startswith("box box-b") and "3 of 3 answered" in box_b
    assert "fleet: router ok, box-a ok, box-b ok" in out


def test_check_fleet_fails_for_a_box_missing_an_adapter_or_answering_500(start, laptop) -> None:
    f = start(served={"box-a": ["sql"], "box-b": ["sql"]}, broken={"box-a": {"sql"}})
    code, out = run(laptop, "check", "--fleet", "--inventory", str(f.inventory), "--timeout", "30")
    assert code == 1, out
    box_a, box_b = out.split("== ")[2:]
    assert "FAIL" in box_a and "failed: sql" in box_a
    assert "declared but not listed: weather" in box_b and "not listed" in box_b and "failed: weather" in box_b
    assert "fleet: router ok, box-a FAILED, box-b FAILED" in out


def test_check_fleet_with_a_box_stopped_exits_2(start, laptop) -> None:
    f = start()
    f.stop("box-a")
    code, out = run(laptop, "check", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 2, out
    assert "cannot list models" in out and "box-a FAILED" in out and "box-b ok" in out


@pytest.mark.parametrize("command", ["status", "check"])
def test_inventory_without_router_group_exits_2_with_the_fix(laptop, command) -> None:
    inventory = write_inventory(laptop, {"box-a": UNUSED_URL, "box-b": "http://127.0.0.2:9"}, UNUSED_URL,
                                router=None)
    code, out = run(laptop, command, "--fleet", "--inventory", str(inventory))
    assert code == 2
    assert "has no `router` group" in out and 'router = ["box-a"]' in out and "docs/fleet.md" in out


def test_inventory_from_the_environment_and_a_missing_one(start, laptop) -> None:
    f = start()
    code, out = run(laptop, "status", "--fleet", LORAFLEET_INVENTORY=str(f.inventory))
    assert code == 0 and "box-b  up" in out, out
    code, out = run(laptop, "check", "--fleet", LORAFLEET_INVENTORY=str(laptop / "nowhere.py"))
    assert code == 2 and f"the inventory {laptop / 'nowhere.py'} does not exist" in out


def test_an_inventory_that_does_not_run_exits_2(laptop) -> None:
    (laptop / "inventory.py").write_text("fleet = [(\n")
    code, out = run(laptop, "status", "--fleet", "--inventory", str(laptop / "inventory.py"))
    assert code == 2 and "cannot read the inventory: SyntaxError" in out and "Traceback" not in out


def test_fleet_refuses_url_and_inventory_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["status", "--fleet", "--url", UNUSED_URL])
    assert exc.value.code == 2 and "drop --url/--api-key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["check", "--inventory", "x.py"])
    assert exc.value.code == 2 and "--inventory goes with --fleet" in capsys.readouterr().err


def test_a_box_that_hosts_the_router_keeps_its_own_key(start, laptop) -> None:
    """The router on a host that serves too: its vLLM is still asked with its box key, not the user's."""
    f = start(router="box-a")
    code, out = run(laptop, "status", "--fleet", "--inventory", str(f.inventory), "--timeout", "5")
    assert code == 0, out
    assert "router on box-a" in out and "box-a  up" in out and "box-b  up" in out
