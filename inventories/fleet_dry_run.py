"""Plan a fleet without boxes: `pyinfra inventories/fleet_dry_run.py deploy.py --dry`.

Two first-time GPU boxes (the canned answers of inventories/dry_run.py) and the
router on the first, whose own Tailscale node (the router's gateway) is running.
The second box serves a subset of the adapters. CI runs it (tests/plan).
"""

from inventories.dry_run import _FIRST_TIME_BOX

_ROUTER_HOST = {**_FIRST_TIME_BOX, "docker inspect --format '{{.State.Running}}' lorafleet-router-gateway": ["true"]}
_ADAPTERS = [{"name": "sql", "hub": "you/sql-lora", "revision": "abc123"},
             {"name": "email", "hub": "you/email-lora", "revision": "def456"}]
_FAKE = {"fake_delay": 0, "fake_delay_jitter": 0}

gpu = [
    ("@fake/gpu-box-1", {**_FAKE, "endpoint_host": "gpu-box-1", "adapters": _ADAPTERS, "fake_responses": _ROUTER_HOST}),
    ("@fake/gpu-box-2", {**_FAKE, "endpoint_host": "gpu-box-2", "adapters": _ADAPTERS[:1], "fake_responses": _FIRST_TIME_BOX}),
]
router = ["@fake/gpu-box-1"]
