"""A target shaped like Docker Desktop: the gateway sees the storage at the user's paths, the engine binds other folders.

On the user's box the deploy runs in the gateway, which sees the roots at WSL
paths (/mnt/d/AI_Models/...), while Docker Desktop's engine resolves bind
sources in its own VM. Here the gateway stand-in sees the roots at the user's
default paths, which do not exist on this machine: the engine binds this
machine's folders. The deploy must bind what the engine sees, and refuse a
gateway whose folders the engine does not see.
"""

from __future__ import annotations

import json

import pytest

from tests.support.scenario import DESKTOP_ROOTS, Scenario, converged, sh


@pytest.fixture(scope="module")
def desktop(report):
    with converged("desktop", report=report) as scenario:
        yield scenario


def test_the_deploy_binds_what_the_engine_sees_and_serves(desktop):
    vllm = json.loads(sh("docker", "inspect", desktop.vllm_container()).stdout)[0]
    binds = {m["Destination"]: m["Source"] for m in vllm["Mounts"]}
    for key, seen in DESKTOP_ROOTS.items():
        if key != "stack_dir":
            assert binds[seen] == str(desktop.host_roots[key]), f"{key}: vLLM must bind the engine's folder"
    with desktop.phase("verify"):
        result = desktop.verify()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    desktop.report(f"[e2e desktop] verify: {[line for line in result.stdout.splitlines() if ' passed' in line][-1:]}")


def test_a_second_converge_changes_nothing(desktop):
    started = desktop.vllm_started_at()
    assert desktop.changed_operations(desktop.deploy()) == []
    assert desktop.vllm_started_at() == started


def test_a_gateway_whose_folders_the_engine_does_not_see_is_refused_before_any_change(report):
    scenario = Scenario("desktop", report=report)
    try:
        scenario.create()
        # The gateway keeps the folder it was started with; the engine now finds another (empty) one there,
        # as Docker Desktop's VM does when a WSL path resolves elsewhere.
        gateway_side = scenario.host_roots["adapters_root"].with_name("adapters-seen-by-the-gateway")
        scenario.host_roots["adapters_root"].rename(gateway_side)
        scenario.host_roots["adapters_root"].mkdir()
        with scenario.phase("converge (broken parity)"):
            result = scenario.deploy(check=False)
        output = result["output"]
        assert result["returncode"] != 0
        assert "preflight failed (nothing was changed)" in output
        assert f"adapters_root={DESKTOP_ROOTS['adapters_root']}" in output
        assert f"bound {scenario.host_roots['adapters_root']}" in output, "both paths are named"
        assert "rerun `bash files/gateway/bootstrap.sh`" in output, "the fix is named, with the bootstrap's path"
        assert sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={scenario.project}").stdout == ""
        assert sorted(p.name for p in gateway_side.iterdir()) == [], "nothing written but the marker, and it is gone"
        assert list(scenario.host_roots["stack_dir"].iterdir()) == [], "no step ran after preflight"
    finally:
        scenario.destroy()
