"""Rolling server changes: one box at a time, out of the router's rotation while it restarts.

For a box whose running vLLM must be recreated (image, weights, flags, key), the
start becomes one operation run host by host (`_serial`): the router reloads a
configuration without the box, the box finishes what it is serving, vLLM is
recreated and healthy, and the router takes the box back. Then the next box.
If a box fails, it stays out of rotation and no further box is taken out.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import logger
from pyinfra.api import FunctionCommand, StringCommand, operation

from lorafleet.deploy import stack
from lorafleet.deploy.fleet import Fleet
from lorafleet.deploy.ops import SecretText
from lorafleet.deploy.router import config as router_config
from lorafleet.deploy.router import plan

# vLLM's own count of requests in flight, read inside its container (its port from the environment).
_IN_FLIGHT = (
    "import os, re, urllib.request; "
    "text = urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('LORAFLEET_PORT', '8000'), timeout=5).read().decode(); "
    "print(int(sum(float(v) for v in re.findall(r'^vllm:num_requests_(?:running|waiting)\\{[^}]*\\} (\\S+)', text, re.M))))"
)
DRAIN_SECONDS = 120  # at most this long for the requests a box holds to finish before it is recreated

# Boxes whose roll failed in this run: after one, no other box is taken out of rotation.
FAILED: list[str] = []


@operation(is_idempotent=False)
def rolling_start(start_command: str, container: str, fleet: Fleet, box: str):
    """Take `box` out of the router, run `start_command` (start.sh), put it back (see the module doc)."""
    yield FunctionCommand(_roll, (start_command, container, fleet, box), {})


def _roll(state, host, start_command: str, container: str, fleet: Fleet, box: str) -> bool:
    if FAILED:
        host.log_styled(f"not taking {box} out of rotation: {', '.join(FAILED)} failed its restart in this run "
                        "(fix it and deploy again)", fg="red", log_func=logger.error)
        return False
    router = state.inventory.get_host(fleet.router)
    rs = fleet.router_settings
    in_service = router is not None and _run(router, f"docker inspect --format '{{{{.State.Running}}}}' {shlex.quote(plan.container(rs))}") == "true"
    if in_service:
        logger.info(f"{box}: out of the router's rotation, then waiting for its requests in flight")
        if not _reload(router, rs, fleet, drained=frozenset({box})) or not _drain(host, container):
            FAILED.append(box)
            return False
    status, _ = host.run_shell_command(StringCommand(start_command), print_output=True)
    if not status:
        FAILED.append(box)
        host.log_styled(f"{box}: vLLM did not come back healthy; it stays out of the router's rotation",
                        fg="red", log_func=logger.error)
        return False
    if in_service:
        logger.info(f"{box}: healthy; back in the router's rotation")
        return _reload(router, rs, fleet)
    return True


def _reload(router, rs, fleet: Fleet, drained: frozenset[str] = frozenset()) -> bool:
    """Write the router's configuration (without `drained`), reload it and wait until it serves that."""
    p = stack.paths(rs)
    content = SecretText(router_config.render(fleet, drained))
    temp = router.get_temp_filename(p.router_config, temp_directory=p.router_run_dir)
    if not router.put_file(BytesIO(content.data), p.router_config, remote_temp_filename=temp):
        return False
    status, output = router.run_shell_command(
        StringCommand(f"chmod 600 {shlex.quote(p.router_config)} && {plan.reload_command(rs)}")
    )
    if not status:
        router.log_styled(f"the router did not reload: {output.stderr[-500:]}", fg="red", log_func=logger.error)
    return status


def _drain(host, container: str) -> bool:
    """Wait until vLLM holds no request (the router sends it none by now)."""
    check = shlex.join(["docker", "exec", container, "python3", "-c", _IN_FLIGHT])
    status, _ = host.run_shell_command(StringCommand(
        f"for _ in $(seq {DRAIN_SECONDS}); do n=$({check} 2>/dev/null || echo 0); "
        f"[ \"$n\" = 0 ] && exit 0; sleep 1; done; echo \"lorafleet: $n requests still in flight after {DRAIN_SECONDS} s\"; exit 0"
    ), print_output=True)
    return status


def _run(host, command: str) -> str:
    status, output = host.run_shell_command(StringCommand(command))
    return output.stdout.strip() if status else ""
