"""Plan the GPU deploy without a GPU box: `pyinfra inventories/dry_run.py deploy.py --dry`.

pyinfra's `@fake` connector stands in for the box; these canned answers describe
a healthy first-time GPU box (Docker and compose answer, the storage roots exist
and the gateway mounts each of them, nothing is deployed yet), so the plan lists
every step. group_data/ applies as for the real `gpu` group. CI runs it
(tests/plan); so can anyone without a box.
"""

import json

# The gateway as the bootstrap makes it: each root mounted at the same path it has in WSL.
_GATEWAY_MOUNTS = [
    {"Type": "bind", "Source": root, "Destination": root}
    for root in ("/mnt/d/AI_Models/base", "/mnt/e/AI_Models/adapters", "/mnt/d/AI_Models/cache", "/opt/lorafleet")
]
_FIRST_TIME_BOX = {
    "docker version --format": ["server=28.2.2", "compose=2.40.3"],
    "[ ! -d ": ["0=ok", "1=ok", "2=ok", "3=ok"],
    "docker inspect --format 'image=": ["image=lorafleet/gateway:local", "mounts=" + json.dumps(_GATEWAY_MOUNTS)],
    "lorafleet-probe": ["0=ok", "1=ok", "2=ok", "3=ok"],  # the round trip through the engine
}

gpu = [
    (
        "@fake/function-gemma-server",
        {"fake_delay": 0, "fake_delay_jitter": 0, "endpoint_host": "function-gemma-server", "fake_responses": _FIRST_TIME_BOX},
    )
]
