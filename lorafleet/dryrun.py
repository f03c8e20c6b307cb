"""Canned answers for planning the GPU deploy against pyinfra's `@fake` connector (the CI dry-run).

They describe a healthy first-time GPU box: Docker and compose answer, the
storage roots exist, and nothing is deployed yet, so the plan lists every step.
"""

FAKE_GPU_HOST_DATA = {
    "fake_delay": 0,
    "fake_delay_jitter": 0,
    "endpoint_host": "gpu-box",
    "fake_responses": {
        "docker version --format": ["server=28.2.2", "compose=2.40.3"],
        "[ ! -d ": ["0=ok", "1=ok", "2=ok", "3=ok"],
    },
}
