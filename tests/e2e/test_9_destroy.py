"""Last: the shared SSH scenario is destroyed, and nothing it made is left."""


def test_destroy_removes_everything_the_ssh_scenario_made(ssh_stack):
    ssh_stack.destroy()
    assert ssh_stack.leftovers() == []
