"""Inside the router container: wait for a reload to take effect, or list what the router serves.

    python3 ctl.py wait ID [ID ...]   until /model/info lists exactly these deployment ids (a reload took)
    python3 ctl.py models             the model names /v1/models lists, one per line
    python3 ctl.py stacks             every worker prints its Python stack to the logs and ends

Standard library and pyyaml (which LiteLLM brings) only. The master key is read from
the mounted config, so it never appears in a command line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request

import yaml

CONFIG = "/router/config.yaml"
WAIT_SECONDS = 180


def _get(path: str) -> dict:
    with open(CONFIG, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    request = urllib.request.Request(
        f"http://127.0.0.1:{_port()}{path}",
        headers={"Authorization": f"Bearer {config['general_settings']['master_key']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _port() -> str:
    """The port the router was started with (its command line, as compose gave it)."""
    with open("/proc/1/cmdline", "rb") as f:
        args = f.read().decode().split("\0")
    return args[args.index("--port") + 1] if "--port" in args else "4000"


def wait(expected: set[str]) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    seen: set[str] | None = None
    while time.monotonic() < deadline:
        try:
            seen = {d["model_info"]["id"] for d in _get("/model/info")["data"]}
            if seen == expected:
                return 0
        except (OSError, ValueError, KeyError):
            pass  # the new worker is still starting
        time.sleep(0.5)
    print(f"the router did not take its new configuration in {WAIT_SECONDS} s: it lists {sorted(seen or [])}, "
          f"expected {sorted(expected)}", file=sys.stderr)
    return 1


def stacks() -> int:
    """SIGSEGV gunicorn's workers (the children of PID 1, its master), which then start again.

    The image sets PYTHONFAULTHANDLER, so a worker prints every thread's stack to the logs before
    it ends: what a worker that never finished starting was waiting on. Not SIGABRT: gunicorn's
    workers catch that one and exit without a word.
    """
    ended = 0
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
            if parent == 1:
                os.kill(pid, signal.SIGSEGV)
                ended += 1
        except (FileNotFoundError, ProcessLookupError):
            pass  # it ended meanwhile
    print(f"asked {ended} router worker(s) for their stacks", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["wait"]:
        return wait(set(argv[1:]))
    if argv[:1] == ["stacks"]:
        return stacks()
    if argv[:1] == ["models"]:
        print("\n".join(m["id"] for m in _get("/v1/models")["data"]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
