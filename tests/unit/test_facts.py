"""Facts parse what the docker CLI prints."""

import subprocess

from lorafleet.deploy.facts import RealPaths, ServingState
from lorafleet.deploy.settings_table import protected_folder

RUNNING = "running|healthy|2026-11-26T21:00:00.123456789Z|container:{gid}|abc"


def state(gateway: str, vllm_network: str = "container:g1") -> dict:
    line = RUNNING.format(gid=vllm_network.split(":")[1])
    return ServingState().process([f"state={line}", f"gateway={gateway}", 'served={"served": {"sql": "base"}, "applied": {"sql": "v1"}}'])


def test_healthy_vllm_in_the_current_gateway_is_not_stale():
    s = state("g1|2026-11-26T20:59:00.5Z")
    assert s["running"] and s["healthy"] and not s["network_stale"] and s["served"] == {"sql": "base"}
    assert s["applied"] == {"sql": "v1"}


def test_a_recreated_gateway_makes_vllm_stale():
    assert state("g2|2026-11-26T20:59:00Z")["network_stale"]


def test_a_restarted_gateway_makes_vllm_stale():
    assert state("g1|2026-11-26T21:05:00.1Z")["network_stale"]


def test_the_image_the_container_runs_is_read_by_id():
    assert "|{{.Image}}" in ServingState().command("lorafleet-vllm")
    line = RUNNING.format(gid="g1") + "|sha256:0123abcd"
    assert ServingState().process([f"state={line}", "gateway=g1|2026-11-26T20:59:00Z"])["image_id"] == "sha256:0123abcd"
    # A container seen by an older command: unknown, so any image a start brings is checked.
    assert state("g1|2026-11-26T20:59:00Z")["image_id"] == ""


def test_a_missing_container_is_absent():
    assert ServingState().process(["state=", "gateway="]) == ServingState.default()


def test_round_trip_markers_are_named_by_the_deploys_token():
    from lorafleet.deploy.facts import EngineRoundTrip

    first = EngineRoundTrip().command((("/mnt/d/models", "/vm/models"),), "gateway:1", "aaaa")
    second = EngineRoundTrip().command((("/mnt/d/models", "/vm/models"),), "gateway:1", "bbbb")
    assert "/mnt/d/models/.lorafleet-probe-aaaa" in first and "/probe/.lorafleet-probe-aaaa" in first
    assert "aaaa" not in second, "two deploys at once never share a marker"
    assert EngineRoundTrip().process(["1=missing", "0=ok"]) == ["ok", "missing"]


def test_real_paths_resolves_links_and_dots_on_a_real_shell(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "to-etc").symlink_to("/etc")
    (tmp_path / "to-mine").symlink_to(tmp_path / "mine")
    paths = (str(tmp_path / "to-etc" / "lorafleet"), str(tmp_path / "to-mine" / "not-yet"), str(tmp_path / "mine" / ".." / "x"))
    shell = subprocess.run(["bash", "-c", RealPaths().command(paths)], capture_output=True, text=True, check=True)
    real = RealPaths().process(shell.stdout.splitlines())
    assert real == ["/etc/lorafleet", str(tmp_path.resolve() / "mine" / "not-yet"), str(tmp_path.resolve() / "x")]
    assert protected_folder(real[0]) and protected_folder(real[1]) is None
    assert protected_folder("/home/me/.ssh/models") and protected_folder("/var/log/x") and not protected_folder("/srv/models")
