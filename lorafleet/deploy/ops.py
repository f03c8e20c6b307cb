"""Operations pyinfra lacks: a secret file that is never printed, diffed or left world-readable; live output;
and `shipped`, the one way a step names a file it uploads."""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, Sha1File

from lorafleet.deploy import layout
from lorafleet.deploy.hashing import sha1_hex


def shipped(source: Path) -> str:
    """The `src` of a file a step uploads: only what layout lists (files/, templates/, the shared modules)."""
    if source not in layout.shipped_files():
        raise AssertionError(f"lorafleet: {source} is not listed in layout.py: a step ships only from files/<step>/, "
                             "templates/<step>/ or layout.SHARED_MODULES")
    return str(source)


class LiveCommand(StringCommand):
    """A long command whose output lines show as it runs (pyinfra otherwise shows them only with -v).

    The scripts behind these commands print a few progress lines (build steps, bytes
    downloaded, seconds waited of the deadline), so this never floods the screen.
    """

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        return host.run_shell_command(self, print_output=True, print_input=state.print_input, **connector_arguments)


def live(command: str) -> StringCommand | str:
    """`command` with its progress shown, except under --json (whose reader wants JSON alone)."""
    return command if "--json" in sys.argv else LiveCommand(command)


class SecretText:
    """Text whose repr never shows it, so pyinfra's logs and JSON output cannot leak it."""

    def __init__(self, text: str):
        self._data = text.encode()

    @property
    def data(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return "SecretText(<hidden>)"

    __str__ = __repr__


@operation()
def secret_file(content: SecretText, dest: str, temp_dir: str):
    """Upload `content` to `dest` with mode 0600, only when it differs; never shown in a diff.

    files.put prints contents with --diff, so secrets need their own operation.
    The temporary upload lands in `temp_dir` (a 0700 folder), not in /tmp.
    """
    if host.get_fact(Sha1File, path=dest) != sha1_hex(content.data):
        yield FileUploadCommand(
            BytesIO(content.data), dest, remote_temp_filename=host.get_temp_filename(dest, temp_directory=temp_dir)
        )
        yield StringCommand("chmod", "600", QuoteString(dest))
        return
    info = host.get_fact(File, path=dest)
    if not info or info.get("mode") != 600:
        yield StringCommand("chmod", "600", QuoteString(dest))
