"""The serving step's decision, case by case: check a new image, start, recreate, sync, or nothing."""

from __future__ import annotations

import pytest

from lorafleet.deploy.decide import ServingFacts, decide
from tests.support.golden import matches_golden

SERVER = "server-now"
ENV = "env-now"
IMAGE = "sha256:image-now"
VERSIONS = {"sql": "v2", "email": "v1"}
HEALTHY = ServingFacts(
    exists=True, running=True, healthy=True, server_hash=SERVER, served=("email", "sql"),
    applied={"sql": "v2", "email": "v1"}, env_applied=ENV, image_id=IMAGE,
)


def run(facts: ServingFacts, **kw):
    return decide(facts, server_hash=kw.get("server_hash", SERVER), env_hash=kw.get("env", ENV),
                  versions=kw.get("versions", VERSIONS), image_id=kw.get("image_id", IMAGE))


def replace(**changes) -> ServingFacts:
    return ServingFacts(**{**HEALTHY.__dict__, **changes})


def test_nothing_changed_does_nothing():
    d = run(HEALTHY)
    assert (d.start, d.recreate, d.sync, d.reasons) == (False, False, False, ())


def test_first_deploy_checks_the_image_then_starts():
    d = run(ServingFacts())
    assert d.start and not d.recreate and not d.sync and d.check_image
    assert d.reasons[0] == "vLLM is not deployed yet" and "checked in it first" in d.reasons[1]


@pytest.mark.parametrize("changes, reason", [
    ({"running": False, "healthy": False}, "not running"),
    ({"healthy": False}, "not healthy"),
    ({"server_hash": "server-before"}, "not from the current server hash"),
])
def test_stale_or_down_server_starts_without_forcing_a_new_container(changes, reason):
    d = run(replace(**changes))
    assert d.start and not d.recreate
    assert any(reason in r for r in d.reasons)


def test_failed_start_rolled_back_is_started_again_on_the_next_deploy():
    # start.sh put the last good compose file back: the running container has the old server hash label.
    d = run(replace(server_hash="server-last-good"))
    assert d.start and not d.sync


def test_rotated_api_key_recreates():
    d = run(replace(), env="env-rotated")
    assert d.start and d.recreate
    assert d.reasons == ("the API key changed since vLLM started",)


def test_missing_applied_hash_recreates_a_running_container():
    d = run(replace(env_applied=""))
    assert d.recreate


def test_gateway_recreated_recreates():
    d = run(replace(network_stale=True))
    assert d.start and d.recreate
    assert "gateway" in d.reasons[0]


def test_network_stale_without_a_container_is_a_plain_start():
    d = run(ServingFacts(network_stale=True, env_applied="old"))
    assert d.start and not d.recreate


@pytest.mark.parametrize("changes", [
    {"served": ("sql",)},  # an adapter missing
    {"served": ("email", "sql", "old")},  # an undeclared one still loaded
    {"applied": {"sql": "v1", "email": "v1"}},  # an old version loaded
])
def test_adapter_drift_only_syncs(changes):
    d = run(replace(**changes))
    assert d.sync and not d.start and not d.recreate


def test_served_unknown_does_not_sync():
    # The container could not be asked (not running): starting it loads the manifest anyway.
    d = run(replace(served=None, running=False))
    assert d.start and not d.sync


def test_from_fact_reads_the_fact_shape():
    fact = {"exists": True, "running": True, "healthy": True, "server_hash": SERVER, "network_stale": False,
            "served": ["sql", "email"], "applied": {"sql": "v2", "email": "v1"}, "image_id": IMAGE}
    assert run(ServingFacts.from_fact(fact, env_applied=ENV)) == run(HEALTHY)


def test_from_fact_keeps_every_field():
    fact = {"exists": True, "running": True, "healthy": False, "server_hash": "e1", "network_stale": True,
            "served": ["sql"], "applied": {"sql": "v2"}, "image_id": "sha256:i1"}
    assert ServingFacts.from_fact(fact, env_applied="h") == ServingFacts(
        exists=True, running=True, healthy=False, server_hash="e1", network_stale=True, served=("sql",),
        applied={"sql": "v2"}, env_applied="h", image_id="sha256:i1")
    assert ServingFacts.from_fact({"exists": False}, env_applied="") == ServingFacts()


@pytest.mark.parametrize("facts, reasons", [
    (replace(running=False, healthy=False), ("vLLM is not running",)),
    (replace(healthy=False), ("vLLM is not healthy",)),
    (replace(server_hash="old"), ("the container is not from the current server hash (image, weights, flags or entrypoint)",)),
    (replace(network_stale=True), ("the gateway was recreated or restarted: vLLM lost its network",)),
    (replace(served=("sql",)), ("the served adapters differ from the declared ones",)),
    (replace(applied={"sql": "v1", "email": "v1"}), ("an adapter's loaded version differs from the manifest",)),
])
def test_each_case_says_why(facts, reasons):
    assert run(facts).reasons == reasons


# -- the image check: before a start that brings another image, never otherwise ---------------------

NEW_IMAGE = "sha256:image-new"


@pytest.mark.parametrize("facts, kw", [
    (replace(server_hash="server-before"), {"image_id": NEW_IMAGE}),  # a new image (the server hash has it)
    (replace(server_hash="server-before"), {"image_id": None}),  # one the host does not have yet: pulled or built first
    (replace(server_hash="server-before", image_id=""), {}),  # a container whose image could not be read
    (ServingFacts(), {}),  # the first deploy: vLLM runs no image yet
    (replace(), {"env": "env-rotated", "image_id": NEW_IMAGE}),  # a recreate for the key that also brings an image
])
def test_a_start_that_brings_another_image_checks_it_first(facts, kw):
    d = run(facts, **kw)
    assert d.start and d.check_image
    assert d.reasons[-1] == "vLLM will run an image it does not run now: its plugins and chat template are checked in it first"


@pytest.mark.parametrize("facts, kw", [
    (HEALTHY, {}),  # nothing changes
    (HEALTHY, {"image_id": NEW_IMAGE}),  # the tag moved to another image, but nothing starts: no cost, no check
    (replace(server_hash="flags-before"), {}),  # a flag changed, the image did not
    (replace(healthy=False), {}),  # a restart on the same image
    (replace(), {"env": "env-rotated"}),  # a recreate on the same image
    (replace(served=("sql",)), {"image_id": NEW_IMAGE}),  # an adapter sync never touches the image
])
def test_no_check_when_the_image_stays_or_nothing_starts(facts, kw):
    d = run(facts, **kw)
    assert not d.check_image
    assert not any("checked" in r for r in d.reasons)


def test_a_refused_or_rolled_back_image_is_checked_again_next_time():
    # Nothing remembers a check: the container still runs the old image, so the next deploy checks the new one again.
    rolled_back = replace(server_hash="server-last-good")
    assert run(rolled_back, image_id=NEW_IMAGE).check_image
    assert run(rolled_back, image_id=NEW_IMAGE).check_image


GOLDEN_CASES = [
    ("nothing changed", {}, {}),
    ("first deploy", {"exists": False, "running": False, "healthy": False, "server_hash": "", "served": None,
                      "applied": {}, "env_applied": "", "image_id": ""}, {}),
    ("first deploy, image not pulled yet", {"exists": False, "served": None, "image_id": ""}, {"image_id": None}),
    ("stopped", {"running": False, "healthy": False, "served": None}, {}),
    ("unhealthy", {"healthy": False}, {}),
    ("new server hash", {"server_hash": "server-before"}, {}),
    ("new server hash and a new image", {"server_hash": "server-before", "image_id": "sha256:image-before"}, {}),
    ("new image only on the host", {"image_id": "sha256:image-before"}, {}),
    ("gateway recreated", {"network_stale": True}, {}),
    ("key rotated", {"env_applied": "env-before"}, {}),
    ("key rotated, stopped", {"env_applied": "env-before", "running": False, "healthy": False}, {}),
    ("an adapter added", {"served": ("sql",)}, {}),
    ("an adapter removed", {"served": ("email", "sql", "old")}, {}),
    ("an adapter updated", {"applied": {"sql": "v1", "email": "v1"}}, {}),
    ("an adapter loaded by hand", {"applied": {"email": "v1"}}, {}),
    ("served unknown", {"served": None}, {}),
    ("no adapters declared, none served", {"served": (), "applied": {}}, {"versions": {}}),
    ("everything at once", {"running": False, "healthy": False, "server_hash": "x", "network_stale": True,
                            "env_applied": "x", "served": ("sql",), "image_id": "x"}, {}),
]


def test_every_decision_reads_as_the_golden_file_says():
    """Each case's decision and the reasons the deploy logs, against tests/fixtures/serving_decisions.txt
    (LORAFLEET_UPDATE_GOLDEN=1 writes it anew after a deliberate change)."""
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "fixtures" / "serving_decisions.txt"
    lines = []
    for name, changes, kw in GOLDEN_CASES:
        d = run(replace(**changes), **kw)
        flags = [f for f in ("start", "recreate", "sync", "check_image") if getattr(d, f)] or ["nothing"]
        lines += [f"== {name}: {' '.join(flags)}", *(f"  - {r}" for r in d.reasons)]
    text = "\n".join(lines) + "\n"
    matches_golden(golden, text)


def test_facts_are_read_from_the_hosts_answer():
    facts = ServingFacts.from_fact({"exists": 1, "running": 1, "healthy": 0, "server_hash": None, "image_id": "i",
                                    "network_stale": 1, "served": ["sql"], "applied": None}, "env")
    assert facts == ServingFacts(exists=True, running=True, healthy=False, server_hash="", image_id="i",
                                 network_stale=True, served=("sql",), applied={}, env_applied="env")
    assert ServingFacts.from_fact({}, "").served is None
