"""The shared SSH scenario is destroyed, and nothing it made is left (run alone, it converges one first)."""


def test_destroy_removes_everything_the_ssh_scenario_made(shared_ssh):
    scenario = shared_ssh.get()
    shared_ssh.destroy()
    assert scenario.leftovers() == []
