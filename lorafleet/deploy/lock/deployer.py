"""The deploy lock: one deploy at a time changes a box; a crashed deploy's lock is recognised and broken.

Taken as the first operation that runs and released as the last, so a second
deploy (another laptop, or a benchmark's) waits for the first, then applies its
own plan. Dry runs take no lock: their operations never run.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime, timezone

from pyinfra import host, logger
from pyinfra.api import QuoteString
from pyinfra.operations import server

from lorafleet.deploy import layout, stack
from lorafleet.deploy.facts import DeployLockHolder
from lorafleet.deploy.ops import shipped
from lorafleet.deploy.settings import Settings

LOCK_SCRIPT = layout.LOCK_SCRIPT


def owner_line(user: str, laptop: str, pid: int, since: datetime) -> str:
    return f"{user}@{laptop} pid {pid} since {since.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def is_stale(holder: str, laptop: str, pid_alive) -> bool:
    """A lock taken from this laptop by a process that is gone: its deploy crashed or was interrupted."""
    try:
        who, _, pid, _, _ = holder.split(" ", 4)
        return who.split("@", 1)[1] == laptop and not pid_alive(int(pid))
    except (ValueError, IndexError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


OWNER = owner_line(getpass.getuser(), socket.gethostname(), os.getpid(), datetime.now(timezone.utc))


def _run(name: str, *args: str) -> None:
    server.script(name=name, src=shipped(LOCK_SCRIPT), args=[QuoteString(a) for a in args])


def acquire(s: Settings) -> None:
    lock_dir = stack.paths(s).lock_dir
    holder = host.get_fact(DeployLockHolder, path=lock_dir)
    if holder and (s.break_deploy_lock or is_stale(holder, socket.gethostname(), _pid_alive)):
        why = "break_deploy_lock is set" if s.break_deploy_lock else "its deploy from this laptop is gone"
        logger.warning(f"{host.name}: the deploy lock held by {holder} will be broken: {why}")
        _run("Break the deploy lock", "break", lock_dir)
    _run("Take the deploy lock", "acquire", lock_dir, str(s.deploy_lock_wait_seconds), OWNER)


def release(s: Settings) -> None:
    _run("Release the deploy lock", "release", stack.paths(s).lock_dir, OWNER)
