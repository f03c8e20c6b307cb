"""An SSH server that authenticates like Tailscale SSH, for the e2e (a test double, loopback only).

Tailscale SSH settles who the client is by tailnet identity, before the SSH
handshake: it takes the "none" method and, for clients that never try "none",
accepts and ignores any offered public key or password (tailscale #14922,
#14969). It serves SFTP itself, with no sftp-server binary. This server does
the same where pyinfra (paramiko) can tell: the first authentication request,
whatever its method, succeeds without any check; SFTP is asyncssh's own; each
exec request runs with `/bin/sh -c` as the server's user, with its exit status,
stdout and stderr.

    python -m tests.support.tailscale_ssh --port 0 --host-key FILE

prints `listening 127.0.0.1 PORT` once it accepts connections and stops cleanly
on SIGTERM. `running(folder)` starts it in a subprocess (a pyinfra subprocess
must be able to connect) and yields the port and the known_hosts line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import asyncssh

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1"  # loopback only: the server lets anyone in
CHUNK = 65536


class TailnetIdentity(asyncssh.SSHServer):
    """Authentication already happened on the tailnet: nothing is asked in the handshake."""

    def begin_auth(self, username: str) -> bool:
        # False: asyncssh answers the first userauth request with success, whatever
        # its method: "none", a public key (neither the key nor its signature is
        # checked) or a password. That is Tailscale SSH's behaviour since 2025.
        return False


def login_environment() -> dict[str, str]:
    """The environment a login as the server's user gets, not the test runner's."""
    user = pwd.getpwuid(os.getuid())
    env = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": user.pw_shell or "/bin/sh",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    # Where the engine is not at its default socket, the box's login would know where it is.
    if os.environ.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return env


async def run_command(process: asyncssh.SSHServerProcess) -> None:
    """One exec (or shell) request: `/bin/sh -c COMMAND`, its output, then its exit status."""
    argv = ["/bin/sh", "-c", process.command] if process.command is not None else ["/bin/sh"]
    env = login_environment()
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=env["HOME"])

    async def feed_stdin() -> None:
        try:
            while data := await process.stdin.read(CHUNK):
                child.stdin.write(data)
                await child.stdin.drain()
        except (asyncssh.Error, BrokenPipeError, ConnectionResetError):
            pass
        finally:
            child.stdin.close()

    async def copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()

    feeder = asyncio.create_task(feed_stdin())
    try:
        # All output is sent before the exit status, as sshd does.
        await asyncio.gather(copy(child.stdout, process.stdout), copy(child.stderr, process.stderr))
        status = await child.wait()
    except (asyncssh.Error, BrokenPipeError, ConnectionResetError):
        child.kill()  # the client went away
        await child.wait()
        return
    finally:
        feeder.cancel()
    process.exit(status if status >= 0 else 128 - status)  # killed by signal N: 128 + N, as a shell reports it


async def serve(port: int, host_key: Path) -> None:
    server = await asyncssh.create_server(
        TailnetIdentity, ADDRESS, port,
        server_host_keys=[str(host_key)],
        process_factory=run_command,
        sftp_factory=True,  # asyncssh's own SFTP server, as Tailscale serves its own
        encoding=None,  # bytes through, as sshd does
        allow_scp=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {ADDRESS} {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def known_hosts_line(host_key: Path, port: int) -> str:
    """The line a known_hosts file needs to pin this server's host key."""
    public = asyncssh.read_private_key(str(host_key)).export_public_key("openssh").decode().split()
    return f"[{ADDRESS}]:{port} {public[0]} {public[1]}"


@contextmanager
def running(folder: Path, start_timeout: float = 60) -> Iterator[tuple[int, str]]:
    """Start the server in a subprocess with a new host key in `folder`; yields (port, known_hosts line)."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key = folder / "ssh_host_ed25519_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(host_key))
    log = (folder / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.tailscale_ssh", "--port", "0", "--host-key", str(host_key)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(process.stdout.fileno(), 256) if ready else b""
            if not chunk:
                raise RuntimeError(f"the Tailscale SSH stand-in did not start within {start_timeout:.0f} s "
                                   f"(exit status {process.poll()}); its log: {folder / 'server.log'}")
            line += chunk
        port = int(line.split()[2])
        yield port, known_hosts_line(host_key, port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0: any free port")
    parser.add_argument("--host-key", type=Path, required=True, help="the server's private host key file")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.host_key))


if __name__ == "__main__":
    main()
