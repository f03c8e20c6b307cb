"""The testinfra suite users run against their own deployed box: `pytest tests/infra`.

The target comes from the inventory (`--inventory`, `--target`); its shell is
reached with testinfra (`--hosts` overrides, e.g. `--hosts=ssh://function-gemma-server`), its
API from this machine with the official openai client.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests
import testinfra

from lorafleet.deploy import layout, stack
from lorafleet.tools.targets import Target, api_key, load_targets


def pytest_addoption(parser):
    group = parser.getgroup("lorafleet")
    group.addoption("--inventory", default=str(layout.PROJECT_ROOT / "inventory.py"), help="inventory file of the target")
    group.addoption("--target", default=None, help="inventory host name (default: the inventory's only host)")


def _target(config) -> Target:
    targets = load_targets(config.getoption("inventory"))
    wanted = config.getoption("target")
    if wanted:
        matches = [t for t in targets if t.name == wanted]
        if not matches:
            raise pytest.UsageError(f"--target {wanted!r} is not in the inventory: {[t.name for t in targets]}")
        return matches[0]
    if len(targets) != 1:
        raise pytest.UsageError(f"the inventory has {len(targets)} hosts: choose one with --target")
    return targets[0]


def pytest_generate_tests(metafunc):
    if "adapter" in metafunc.fixturenames:
        names = [a.name for a in _target(metafunc.config).settings.adapters]
        metafunc.parametrize("adapter", names, ids=names)


@pytest.fixture(scope="session")
def target(pytestconfig) -> Target:
    return _target(pytestconfig)


@pytest.fixture(scope="session")
def host(pytestconfig, target):
    """The target's shell (the gateway on the GPU box), overriding testinfra's default."""
    spec = pytestconfig.getoption("hosts") or target.testinfra_host
    if isinstance(spec, list):
        spec = spec[0]
    kwargs = {}
    if pytestconfig.getoption("ssh_config", None):
        kwargs["ssh_config"] = pytestconfig.getoption("ssh_config")
    return testinfra.get_host(spec, **kwargs)


@pytest.fixture(scope="session")
def container(target) -> str:
    return stack.container_name(target.settings)


@pytest.fixture(scope="session")
def base_url(target) -> str:
    """The server root (no /v1), for /health and /metrics."""
    return target.endpoint.removesuffix("/v1")


@pytest.fixture(scope="session")
def client(target) -> openai.OpenAI:
    return openai.OpenAI(base_url=target.endpoint, api_key=api_key() or "no-key", timeout=300, max_retries=0)


@pytest.fixture(scope="session")
def models(client) -> dict:
    return {m.id: m for m in client.models.list().data}


@pytest.fixture(scope="session")
def demo_manifest(host, target) -> dict | None:
    """What the demo build says each demo adapter answers with; None for real models."""
    if target.settings.base_model_source != "demo":
        return None
    path = f"{target.settings.demo_dir}/demo.json"
    demo = host.file(path)
    assert demo.exists, f"{path} is missing on the host: rerun the deploy to rebuild the demo model"
    return json.loads(demo.content_string)


@pytest.fixture(scope="session")
def metrics_text(base_url) -> str:
    response = requests.get(f"{base_url}/metrics", timeout=30)
    response.raise_for_status()
    return response.text
