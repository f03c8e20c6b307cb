"""inventory.py: one box, a fleet from LORAFLEET_GPU_HOSTS, the router's place, host_data/<name>.py.

Read by pyinfra's own inventory loader in a child process (it patches the process with gevent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ = """
import json, sys
import lorafleet.deploy.host_data as hd
hd.HOST_DATA_DIR = __import__("pathlib").Path(sys.argv[1])
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
with ctx_state.use(State()):
    inventory = make_inventory("inventory.py", cwd=".")
# set(): pyinfra may list a group once per place that names it.
print(json.dumps({h.name: {"groups": sorted(set(h.groups)), "data": {k: v for k, v in h.data.dict().items()
                  if k in ("endpoint_host", "serve_models", "adapters", "ssh_user")}} for h in inventory}))
"""


def hosts(tmp_path: Path, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    environment.update(LORAFLEET_SECRETS_FILE=str(tmp_path / "absent.env"), **env)
    host_data = tmp_path / "host_data"
    host_data.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-c", READ, str(host_data)], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_no_box_configured_is_this_machine(tmp_path):
    assert list(hosts(tmp_path)) == ["@local"]


def test_one_box_has_no_router(tmp_path):
    found = hosts(tmp_path, LORAFLEET_GPU_HOST="function-gemma-server")
    assert list(found) == ["@ssh/function-gemma-server"]
    assert "router" not in found["@ssh/function-gemma-server"]["groups"]


def test_several_boxes_are_a_fleet_with_the_router_on_the_first(tmp_path):
    (tmp_path / "host_data").mkdir()
    (tmp_path / "host_data" / "gpu-box-2.py").write_text('adapters = [{"name": "sql", "demo": True}]\n')
    found = hosts(tmp_path, LORAFLEET_GPU_HOSTS="gpu-box-1, gpu-box-2")
    assert found["@ssh/gpu-box-1"]["groups"] == ["gpu", "inventory", "router"]
    assert found["@ssh/gpu-box-2"]["groups"] == ["gpu", "inventory"]
    assert found["@ssh/gpu-box-2"]["data"]["adapters"] == [{"name": "sql", "demo": True}]  # its own subset
    assert found["@ssh/gpu-box-2"]["data"]["endpoint_host"] == "gpu-box-2"


def test_a_router_host_of_its_own_serves_no_model(tmp_path):
    found = hosts(tmp_path, LORAFLEET_GPU_HOSTS="gpu-box-1,gpu-box-2", LORAFLEET_ROUTER_HOST="small-router")
    assert found["@ssh/small-router"]["groups"] == ["inventory", "router"]
    assert found["@ssh/small-router"]["data"]["serve_models"] is False
    assert "router" not in found["@ssh/gpu-box-1"]["groups"]
