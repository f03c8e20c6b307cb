"""Plan the GPU deploy without a GPU box: `pyinfra inventories/dry_run.py deploy.py --dry`.

pyinfra's `@fake` connector stands in for the box; these canned answers describe
a healthy first-time GPU box (Docker and compose answer, the storage roots exist,
nothing is deployed yet), so the plan lists every step. group_data/ applies as
for the real `gpu` group. CI runs it (tests/plan); so can anyone without a box.
"""

gpu = [
    (
        "@fake/function-gemma-server",
        {
            "fake_delay": 0,
            "fake_delay_jitter": 0,
            "endpoint_host": "function-gemma-server",
            "fake_responses": {
                "docker version --format": ["server=28.2.2", "compose=2.40.3"],
                "[ ! -d ": ["0=ok", "1=ok", "2=ok", "3=ok"],
            },
        },
    )
]
