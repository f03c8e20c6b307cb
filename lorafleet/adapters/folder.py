"""A laptop adapter folder as the deploy uploads it: its files, its links, and its version.

Pure and laptop-side: the settings call `folder_problems` before anything is
planned, the adapters step calls `folder_version` for the manifest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path


def folder_problems(folder: str) -> list[str]:
    """Symlinks the upload cannot carry: ones that loop, leave the folder, dangle, or are absolute."""
    root = Path(folder).resolve()
    problems = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                problems += _link_problems(path, path.relative_to(folder), root)
    return problems


def _link_problems(path: Path, rel: Path, root: Path) -> list[str]:
    target = os.readlink(path)
    try:
        resolved = path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to Python 3.12, ELOOP from 3.13
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            return [f"{rel} is a symlink to {target}, part of a loop of links: remove the link or point it at a file"]
        return [f"{rel} is a symlink to {target}, which does not exist: copy the file in or remove the link"]
    if resolved != root and root not in resolved.parents:
        return [f"{rel} is a symlink to {target}, outside the adapter folder: it would not exist on the host; "
                "copy the file into the folder instead of linking it"]
    if os.path.isabs(target):
        return [f"{rel} is an absolute symlink ({target}): make it relative so it holds on the host too"]
    return []


def _file_digest(path: Path, cache: dict, key: str) -> str:
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    if cache.get(key, {}).get("stamp") != stamp:
        with path.open("rb") as f:  # streamed: a weights file of gigabytes never sits in memory
            cache[key] = {"stamp": stamp, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    return cache[key]["sha256"]


def folder_version(folder: str, cache_file: Path | None = None) -> str:
    """A content hash of the folder (names and bytes): the manifest changes only when the weights do.

    With `cache_file`, a file whose size and modification time are unchanged is not read again.
    """
    cache: dict = {}
    if cache_file and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except ValueError:
            cache = {}
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(folder))
            digest.update(rel.encode() + b"\0" + _file_digest(path, cache, str(path.resolve())).encode() + b"\0")
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, sort_keys=True))
    return digest.hexdigest()[:16]
