"""The fleet's router alone: its real image and the configuration the deploy writes, before two stand-in boxes.

The boxes are stand-ins (tests/support/fake_server.py: vLLM's API, instant answers, each box taking
only its own key) on this machine's loopback; the router container shares the host's network to reach
them. The router itself is real: the image built as the deploy builds it, `router.config.render`'s
file, ctl.py, and the deploy's own reload command. The fleet scenario (test_9b_fleet.py) proves the same
on two vLLM boxes over SSH; this module proves it in seconds, and what that one cannot provoke on
demand: a box that dies between two health checks, a configuration HAProxy refuses, a request too
large to route.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests

from lorafleet.deploy import layout
from lorafleet.deploy.fleet import fleet_of
from lorafleet.deploy.router import config as router_config
from lorafleet.deploy.router import plan
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data
from tests.support.docker_env import ensure_built, local_base_image
from tests.support.fake_server import DEFAULT_BASE, FakeConfig, running_fake_server
from tests.support.load import BackgroundLoad
from tests.support.scenario import free_port, sh

USER_KEY = "sk-router-e2e-" + uuid.uuid4().hex[:12]
# Characters HAProxy's configuration would read as syntax (quotes, `$`, `%`, braces, a space): the key must
# reach the box exactly as given.
KEYS = {"a": "sk-a'\"$HOME %[x] {y} #z-" + uuid.uuid4().hex[:8], "b": "sk-b-" + uuid.uuid4().hex[:12]}
ADAPTERS = {"a": ["weather", "sql"], "b": ["sql", "calendar"]}


class Router:
    """The router container before the two stand-in boxes, and what the tests need of it."""

    def __init__(self, folder: Path):
        run_id = uuid.uuid4().hex[:8]
        self.names = {k: f"box-{k}-{run_id}" for k in KEYS}  # unique: the boxes' internal sockets are the host's
        self.run_dir = folder / "run"
        self.run_dir.mkdir(mode=0o700)
        self.port = free_port()
        self.boxes: dict[str, contextlib.ExitStack] = {}
        self.urls: dict[str, str] = {}
        self.settings = None
        self.fleet = None
        self.container_id = ""

    def start_box(self, k: str) -> None:
        stack = contextlib.ExitStack()
        config = FakeConfig(base=DEFAULT_BASE, adapters=ADAPTERS[k], api_key=KEYS[k])
        self.urls[k] = stack.enter_context(running_fake_server(config))
        self.boxes[k] = stack

    def stop_box(self, k: str) -> None:
        self.boxes.pop(k).close()

    def make_fleet(self) -> None:
        hosts = []
        for k in KEYS:
            box_port = int(self.urls[k].rsplit(":", 1)[1].split("/")[0])
            data = {**group_data("local"), "adapters": [{"name": n, "demo": True} for n in ADAPTERS[k]],
                    "served_model_name": DEFAULT_BASE, "endpoint_host": "127.0.0.1", "port": box_port,
                    "compose_project": f"lf-router-e2e-{self.names['a'][-8:]}", "router_port": self.port,
                    "router_network_mode": "publish", "cpu_base_image": local_base_image() or "python:3.11-slim",
                    # Health checks a minute apart: a box that dies is then found by the requests alone.
                    "router_health_check_seconds": 60}
            s = build_settings(data, Secrets(api_key=KEYS[k]), check_sources=False)
            hosts.append((self.names[k], ["gpu", "router"] if k == "a" else ["gpu"], s))
        self.fleet = fleet_of(hosts, router_key=USER_KEY)
        self.settings = self.fleet.router_settings

    @property
    def container(self) -> str:
        return plan.container(self.settings)

    def write(self, text: str) -> None:
        """As the deploy writes it: a 0600 file put in place whole."""
        draft = self.run_dir / ".haproxy.cfg.draft"
        draft.write_text(text)
        draft.chmod(0o600)
        os.replace(draft, self.run_dir / "haproxy.cfg")

    def reload(self, drained: frozenset[str] = frozenset()) -> subprocess.CompletedProcess:
        self.write(router_config.render(self.fleet, frozenset(self.names[k] for k in drained)))
        return sh("bash", "-c", plan.reload_command(self.settings), check=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ask(self, model: str, key: str = USER_KEY, **extra) -> requests.Response:
        return requests.post(f"{self.url}/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                             json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "ping"}], **extra})

    def landed(self, response: requests.Response) -> str:
        """Which stand-in box answered ("a" or "b"), from the header the router adds."""
        box = response.headers.get(router_config.BOX_HEADER, "")
        return next((k for k, name in self.names.items() if name == box), box)

    def served_config(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()["config"]

    def written_config(self) -> str:
        text = (self.run_dir / "haproxy.cfg").read_text()
        return next(line.split()[-1] for line in text.splitlines() if line.startswith("# lorafleet-router-config "))


@pytest.fixture(scope="module")
def router(tmp_path_factory, report):
    r = Router(tmp_path_factory.mktemp("router"))
    for k in KEYS:
        r.start_box(k)
    try:
        r.make_fleet()
        image = ensure_built(plan.image(r.settings), layout.ROUTER_BUILD_FILES, base=r.settings.cpu_base_image)
        (r.run_dir / "ctl.py").write_bytes(layout.ROUTER_CTL.read_bytes())
        r.write(router_config.render(r.fleet))
        r.container_id = sh("docker", "run", "-d", "--name", r.container, "--network", "host",
                            "-v", f"{r.run_dir}:{layout.CONTAINER_ROUTER_DIR}:ro", image).stdout.strip()
        waited = sh("bash", "-c", plan.ctl_command(r.settings, "wait"), check=False)
        assert waited.returncode == 0, waited.stderr + sh("docker", "logs", r.container_id, check=False).stderr
        report(f"[e2e router] {sh('docker', 'exec', r.container_id, 'haproxy', '-v').stdout.splitlines()[0]}")
        yield r
    finally:
        if r.container_id:
            sh("docker", "rm", "-f", r.container_id, check=False)
        for k in list(r.boxes):
            r.stop_box(k)


def test_each_model_reaches_only_the_boxes_serving_it_with_that_boxs_own_key(router):
    seen = collections.defaultdict(collections.Counter)
    for model in (DEFAULT_BASE, "weather", "sql", "calendar"):
        for _ in range(30):
            response = router.ask(model)
            assert response.status_code == 200, f"{model}: {response.status_code} {response.text[:300]}"
            seen[model][router.landed(response)] += 1
    # Each stand-in box refuses every key but its own (401), so 200s prove the router sent that box's key.
    assert set(seen["weather"]) == {"a"} and set(seen["calendar"]) == {"b"}, seen
    assert set(seen["sql"]) <= {"a", "b"} and set(seen[DEFAULT_BASE]) <= {"a", "b"}, seen
    home = router.fleet.home("sql")
    assert seen["sql"][next(k for k, n in router.names.items() if n == home)] >= 18, seen  # 9 to 1 for its home box


def test_the_router_answers_health_models_and_refusals_itself(router):
    assert router.served_config() == router.written_config()
    listed = requests.get(f"{router.url}/models", headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=5).json()
    assert [m["id"] for m in listed["data"]] == [DEFAULT_BASE, "weather", "sql", "calendar"]
    assert requests.get(f"{router.url}/models", timeout=5).status_code == 401
    for key in (KEYS["a"], KEYS["b"], USER_KEY + "x", ""):
        refused = router.ask("sql", key=key)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    unknown = router.ask("no-such-adapter")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    too_large = router.ask("sql", messages=[{"role": "user", "content": "x" * (router_config.MAX_REQUEST_BYTES + 1)}])
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "request_too_large"
    near_limit = router.ask("calendar", messages=[{"role": "user", "content": "x" * (router_config.MAX_REQUEST_BYTES - 2000)}])
    assert router.landed(near_limit) == "b", near_limit.text[:300]  # routed whole (the box may refuse its length)


def test_a_stream_with_tools_passes_through_whole(router):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}]
    response = router.ask("weather", stream=True, tools=tools)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    calls = [c for e in events[:-1] for c in json.loads(e)["choices"][0]["delta"].get("tool_calls") or []]
    assert calls and calls[0]["function"]["name"] == "get_weather"


def test_a_reload_under_load_drops_no_request_and_drains_the_box(router, report):
    before = router.served_config()
    streams = StreamingLoad(router)
    # A reload closes the old process's idle keep-alive connections: a request sent on one just then is sent
    # again, as the openai client does by default (the summary counts them). Streams in flight are never cut.
    # Unpaced: the stand-in boxes answer at once, so as many requests as possible meet the reloads.
    load = BackgroundLoad(router.url, USER_KEY, ["sql", DEFAULT_BASE], workers=3, retry_connection_errors=True, pause=0)
    with load, streams:
        drained = router.reload(drained=frozenset({"b"}))
        assert drained.returncode == 0, drained.stderr
        while_drained = collections.Counter(router.landed(router.ask("sql")) for _ in range(20))
        calendar = router.ask("calendar")  # served by box b alone: no box left for it
        restored = router.reload()
        assert restored.returncode == 0, restored.stderr
        after = collections.Counter(router.landed(router.ask(m)) for m in ["calendar"] * 5)
    report(f"[e2e router] two reloads under load: {load.summary()}; {streams.summary()}; "
           f"while box b was drained: {dict(while_drained)}")
    assert load.failed == 0 and load.ok > 0, load.summary()
    assert streams.failed == 0 and streams.ok > 0, streams.summary()
    assert set(while_drained) == {"a"}
    assert calendar.status_code == 503 and calendar.json()["error"]["code"] == "no_box_available"
    assert after == {"b": 5} and router.served_config() == before


def test_a_configuration_haproxy_refuses_is_never_loaded(router):
    served = router.served_config()
    good = (router.run_dir / "haproxy.cfg").read_text()
    router.write(good.replace("balance random(1)", "balance no-such-algorithm", 1))
    refused = sh("bash", "-c", plan.reload_command(router.settings), check=False)
    router.write(good)
    assert refused.returncode != 0 and "balance only supports" in refused.stderr
    assert router.served_config() == served and router.ask("sql").status_code == 200


def test_a_box_that_dies_between_two_health_checks_costs_no_request(router):
    router.stop_box("b")  # its port now refuses; its next health check is a minute away, so requests still go there
    answered = [router.ask(m) for m in ["sql", DEFAULT_BASE] * 15]
    assert [r.status_code for r in answered] == [200] * 30
    assert {router.landed(r) for r in answered} == {"a"}


def test_the_router_logs_no_request_body_and_no_key(router):
    marker = "secret-prompt-" + uuid.uuid4().hex
    assert router.ask("weather", messages=[{"role": "user", "content": marker}]).status_code == 200
    logs = sh("docker", "logs", router.container_id, check=False)
    inspected = sh("docker", "inspect", router.container_id).stdout
    for secret in (marker, USER_KEY, *KEYS.values()):
        assert secret not in logs.stdout + logs.stderr and secret not in inspected


class StreamingLoad:
    """Two streamed requests at a time while the block runs; each must end with `[DONE]`."""

    def __init__(self, router: Router):
        self.router, self.ok, self.failed = router, 0, 0
        self.errors: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.router.ask("sql", stream=True)
                whole = response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
                self.ok += whole
                self.failed += not whole
                if not whole:
                    self.errors[f"HTTP {response.status_code}"] += 1
            except requests.RequestException as exc:
                self.failed += 1
                self.errors[type(exc).__name__] += 1

    def __enter__(self) -> "StreamingLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def summary(self) -> str:
        return f"streams: {self.ok} whole, {self.failed} failed {dict(self.errors) or ''}".strip()
