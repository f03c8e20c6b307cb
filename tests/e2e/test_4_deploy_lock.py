"""Two deploys on one box take turns; a crashed deploy's lock stops the next one until it is broken."""

from __future__ import annotations

import threading
import time

from tests.support.scenario import API_KEY

import requests


def lock_owner_file(stack):
    return stack.dir / "stack" / "deploy.lock" / "owner"


def served(stack) -> set[str]:
    models = requests.get(f"{stack.endpoint}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    return {m["id"] for m in models["data"]}


def test_two_deploys_at_once_run_one_after_the_other(ssh_stack):
    stack = ssh_stack
    results: list[dict] = []
    owners: list[str] = []
    runs = [threading.Thread(target=lambda: results.append(stack.deploy(check=False))) for _ in range(2)]
    with stack.phase("two deploys at once"):
        for run in runs:
            run.start()
        while any(run.is_alive() for run in runs):
            try:
                owner = lock_owner_file(stack).read_text().strip()
            except OSError:
                owner = ""
            if owner and (not owners or owners[-1] != owner):
                owners.append(owner)
            time.sleep(0.1)
    stack.report(f"[e2e ssh] deploy lock holders in turn: {owners}")
    assert [r["returncode"] for r in results] == [0, 0], [r["output"][-3000:] for r in results if r["returncode"]]
    assert len(set(owners)) == 2, f"each deploy held the lock in its turn; seen: {owners}"
    assert not lock_owner_file(stack).parent.exists(), "the last deploy released the lock"
    declared = {stack.data["served_model_name"], *(a["name"] for a in stack.data["adapters"])}
    assert served(stack) == declared


def test_a_crashed_deploys_lock_stops_the_next_until_broken(ssh_stack):
    stack = ssh_stack
    lock = lock_owner_file(stack).parent
    lock.mkdir()
    lock_owner_file(stack).write_text("someone@other-laptop pid 4242 since 2026-11-27T00:00:00Z\n")
    try:
        stopped = stack.deploy("--data", "deploy_lock_wait_seconds=2", check=False)
        assert stopped["returncode"] != 0
        assert "held by someone@other-laptop pid 4242" in stopped["output"]
        assert "break_deploy_lock=True" in stopped["output"], "the message says how to release it"
        assert lock.exists(), "a lock held by another laptop is never broken without being asked"

        broken = stack.deploy("--data", "break_deploy_lock=True")
        assert stack.changed_operations(broken) == ["Break the deploy lock"]
        assert not lock.exists()
    finally:
        if lock.exists():
            lock_owner_file(stack).unlink(missing_ok=True)
            lock.rmdir()
