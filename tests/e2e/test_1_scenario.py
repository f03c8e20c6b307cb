"""The scenario on both targets: converge, idempotence, verify, destroy."""

from __future__ import annotations

import pytest
import requests

from tests.support.scenario import API_KEY, converged, sh


@pytest.fixture(scope="module")
def local_stack(report):
    with converged("local", report=report) as scenario:
        yield scenario


@pytest.fixture(params=["ssh", "local"])
def stack(request):
    return request.getfixturevalue(f"{request.param}_stack")


def test_converge_starts_vllm(stack):
    assert stack.vllm_started_at(), "the vLLM container did not start"
    assert "Start vLLM and wait for /health" in " ".join(stack.changed_operations(stack.first_deploy))


def test_idempotence_second_run_changes_nothing(stack):
    started = stack.vllm_started_at()
    with stack.phase("idempotence"):
        payload = stack.deploy()
    changed = stack.changed_operations(payload)
    stack.report(f"[e2e {stack.kind}] idempotence: {len(changed)} changed operations {changed}")
    assert changed == [], f"a second run with nothing changed changed: {changed}"
    assert stack.vllm_started_at() == started, "the second run restarted vLLM"


def test_verify_the_users_testinfra_suite_passes(stack):
    with stack.phase("verify"):
        result = stack.verify()
    for line in result.stdout.splitlines():
        for name in [a["name"] for a in stack.data["adapters"]]:
            if f"{name}: " in line:
                stack.report(f"[e2e {stack.kind}] verify: {line[line.index(name + ': '):]}")
        if " passed" in line:
            stack.report(f"[e2e {stack.kind}] verify: {line}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # A suite that skipped everything proves nothing: at least the health and adapter checks ran.
    summary = [line for line in result.stdout.splitlines() if " passed" in line]
    assert summary and int(summary[-1].split(" passed")[0].split()[-1]) >= 5, result.stdout[-3000:]


def test_the_served_key_is_the_given_key_with_its_dollar_and_hash(stack):
    """Read back from the running container, not from the file; a request with it answers, one without is refused."""
    served = sh("docker", "exec", stack.vllm_container(), "printenv", "VLLM_API_KEY").stdout.removesuffix("\n")
    assert served == API_KEY and "$" in API_KEY and "#" in API_KEY
    models = f"{stack.endpoint}/models"
    assert requests.get(models, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).status_code == 200
    assert requests.get(models, timeout=30).status_code == 401


def test_destroy_removes_everything_it_made(local_stack):
    local_stack.destroy()
    assert local_stack.leftovers() == []

