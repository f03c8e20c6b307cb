"""The deploy lock: one deploy at a time changes a box; a crashed deploy's lock is recognised and broken.

Taken as the first operation that runs and released as the last, so a second
deploy (another laptop, or a benchmark's) waits for the first, then applies its
own plan. Dry runs take no lock: their operations never run.

Taking and releasing the lock is the run's own bookkeeping: the box ends as it
began. pyinfra counts an operation as a change when it yields commands, so
:func:`deploy_lock` runs lock.sh itself when the operation runs (the way a
fact's command runs) and yields nothing: a second deploy with nothing to do
reports 0 changed operations (Molecule's idempotence check). Breaking a
crashed deploy's lock removes someone's lock: that one is a change.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.facts.files import Directory
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


def lock_command(action: str, lock_dir: str, owner: str, wait_seconds: int, script: str) -> StringCommand:
    """``lock.sh ACTION LOCK_DIR [WAIT] OWNER`` as one command: the script goes to bash on its standard input."""
    args = [action, lock_dir, str(wait_seconds), owner] if action == "acquire" else [action, lock_dir, owner]
    return StringCommand("bash", "-s", "--", *(QuoteString(a) for a in args), _stdin=script)


@operation()
def deploy_lock(action: str, lock_dir: str, owner: str, wait_seconds: int = 0):
    """Take (``acquire``) or give back (``release``) the deploy lock when the operation runs; never a change.

    Planning runs nothing. If the script fails (the lock stayed held past the wait), the
    operation yields it once more without waiting, so pyinfra fails it and prints who holds it.
    """
    script = Path(shipped(LOCK_SCRIPT)).read_text(encoding="utf-8")
    if not state.is_executing:
        return
    command = lock_command(action, lock_dir, owner, wait_seconds, script)
    op_args = host.current_op_global_arguments or {}
    connector_args = {k: v for k, v in op_args.items() if k in CONNECTOR_ARGUMENT_KEYS}
    ok, output = host.run_shell_command(command, print_input=state.print_input,
                                        **{**connector_args, **command.connector_arguments})
    if ok:
        for line in output.stderr_lines:  # it waited for another deploy: say so
            logger.info(f"{host.print_prefix}{line}")
        return
    yield lock_command(action, lock_dir, owner, 0, script)


def _nothing_deployed(s: Settings, if_deployed: bool) -> bool:
    """`if_deployed` (remove.py) on a box without a stack folder: no lock to take, and none to leave behind.

    A deploy makes the folder before anything else (lock.sh, to take its lock), so none holds one there.
    """
    return if_deployed and not host.get_fact(Directory, path=s.stack_dir)


def acquire(s: Settings, if_deployed: bool = False) -> None:
    if _nothing_deployed(s, if_deployed):
        return
    lock_dir = stack.paths(s).lock_dir
    holder = host.get_fact(DeployLockHolder, path=lock_dir)
    if holder and (s.break_deploy_lock or is_stale(holder, socket.gethostname(), _pid_alive)):
        why = "break_deploy_lock is set" if s.break_deploy_lock else "its deploy from this laptop is gone"
        logger.warning(f"{host.name}: the deploy lock held by {holder} will be broken: {why}")
        server.script(name="Break the deploy lock", src=shipped(LOCK_SCRIPT), args=["break", QuoteString(lock_dir)])
    deploy_lock("acquire", lock_dir, OWNER, s.deploy_lock_wait_seconds, name="Take the deploy lock")


def release(s: Settings, if_deployed: bool = False) -> None:
    if _nothing_deployed(s, if_deployed):
        return
    deploy_lock("release", stack.paths(s).lock_dir, OWNER, name="Release the deploy lock")
