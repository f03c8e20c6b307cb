"""Hashes: the short content hashes in image tags and labels, and the sha1 pyinfra compares files with.

`shipped_bytes` is where the plans read the project's own files for hashing (what layout ships), once
per run; besides it, only the compose template is loaded (by jinja), and no plan reads the host's disk.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from lorafleet.deploy import layout


def sha256_hex(*parts: bytes | str, length: int = 12) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:length]



def sha1_hex(content: str | bytes) -> str:
    """The sha1 `sha1sum` prints, which is what pyinfra's Sha1File fact compares with."""
    return hashlib.sha1(content.encode() if isinstance(content, str) else content).hexdigest()


@functools.cache
def shipped_bytes(path: Path) -> bytes:
    """The content of a file the deploy ships (layout.shipped_files()): what image tags and labels hash."""
    if path not in layout.shipped_files():
        raise AssertionError(f"lorafleet: {path} is not a shipped file (layout.py)")
    return path.read_bytes()
