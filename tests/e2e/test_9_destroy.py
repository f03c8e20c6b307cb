"""The shared SSH scenario is destroyed, and nothing it made is left (run alone, it converges one first)."""

from pathlib import Path


def test_destroy_removes_everything_the_ssh_scenario_made(shared_ssh):
    scenario = shared_ssh.get(Path(__file__).name)
    shared_ssh.destroy()
    assert scenario.leftovers() == []
