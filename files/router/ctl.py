"""Inside the router container: wait until HAProxy serves the configuration it was given.

    python3 ctl.py wait    until /health reports the id of /router/haproxy.cfg (a start or a reload took)

The id and the port are read from the mounted file (`# lorafleet-router-config ID`, `bind :PORT`), so
this needs no key and no argument. Standard library only: the image is Debian's HAProxy and Python.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request

CONFIG = "/router/haproxy.cfg"
WAIT_SECONDS = 120


def wanted() -> tuple[str, str]:
    with open(CONFIG, encoding="utf-8") as f:
        text = f.read()
    config_id = re.search(r"^# lorafleet-router-config (\S+)$", text, re.M)
    port = re.search(r"^frontend fleet\n\s+bind :(\d+)$", text, re.M)
    if not config_id or not port:
        raise SystemExit(f"{CONFIG} has no `# lorafleet-router-config` id or no frontend port: was it written by lorafleet?")
    return config_id.group(1), port.group(1)


def wait() -> int:
    config_id, port = wanted()
    deadline = time.monotonic() + WAIT_SECONDS
    served = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                served = json.load(response).get("config")
            if served == config_id:
                return 0
        except (OSError, ValueError):
            pass  # starting, or between two processes of a reload
        time.sleep(0.2)
    print(f"the router did not take its configuration {config_id} in {WAIT_SECONDS} s (it serves {served}): "
          "see `docker logs` of the router's container", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if argv == ["wait"]:
        return wait()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
