"""The engine's view of the gateway's folders: a path under a root maps to the engine-side source."""

from __future__ import annotations

import pytest

from lorafleet.deploy.engine import SAME_PATHS, EngineView, from_inspect

DESKTOP = from_inspect([
    {"Type": "bind", "Source": "/run/desktop/mnt/host/d/AI_Models/base", "Destination": "/mnt/d/AI_Models/base"},
    {"Type": "bind", "Source": "/run/desktop/mnt/host/e/AI_Models/adapters", "Destination": "/mnt/e/AI_Models/adapters"},
    {"Type": "bind", "Source": "/run/desktop/mnt/host/wsl/distro/opt/lorafleet", "Destination": "/opt/lorafleet"},
    {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
    {"Type": "volume", "Name": "tailscale-state", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/var/lib/tailscale"},
])


@pytest.mark.parametrize("path, source", [
    ("/mnt/d/AI_Models/base", "/run/desktop/mnt/host/d/AI_Models/base"),
    ("/mnt/d/AI_Models/base/google--functiongemma-270m-it/main", "/run/desktop/mnt/host/d/AI_Models/base/google--functiongemma-270m-it/main"),
    ("/mnt/e/AI_Models/adapters/sql", "/run/desktop/mnt/host/e/AI_Models/adapters/sql"),
    ("/opt/lorafleet/serve", "/run/desktop/mnt/host/wsl/distro/opt/lorafleet/serve"),
    ("/mnt/d/AI_Models/cache", None),  # not mounted into the gateway: the engine would bind an empty folder
    ("/mnt/d/AI_Models/basement", None),  # a sibling with a common prefix is not under the root
    ("/var/lib/tailscale", None),  # a named volume is no host folder
])
def test_paths_map_through_the_deepest_mount(path, source):
    assert DESKTOP.source(path) == source


def test_nested_mounts_take_the_deeper_one():
    view = EngineView((("/data", "/vm/data"), ("/data/models", "/vm/fast-nvme/models")))
    assert view.source("/data/models/base") == "/vm/fast-nvme/models/base"
    assert view.source("/data/cache") == "/vm/data/cache"


def test_plain_linux_and_no_gateway_keep_paths():
    assert SAME_PATHS.source("/var/tmp/lorafleet/models") == "/var/tmp/lorafleet/models"
    parity = from_inspect([{"Type": "bind", "Source": "/srv/models", "Destination": "/srv/models"}])
    assert parity.source("/srv/models/base") == "/srv/models/base"


def test_bind_specs():
    assert DESKTOP.bind("/mnt/d/AI_Models/base", mode="ro") == \
        "/run/desktop/mnt/host/d/AI_Models/base:/mnt/d/AI_Models/base:ro"
    assert DESKTOP.bind("/opt/lorafleet/serve", "/lorafleet", "ro") == \
        "/run/desktop/mnt/host/wsl/distro/opt/lorafleet/serve:/lorafleet:ro"
    with pytest.raises(ValueError, match="/mnt/d/AI_Models/cache is not on a folder the engine can bind"):
        DESKTOP.bind("/mnt/d/AI_Models/cache")
