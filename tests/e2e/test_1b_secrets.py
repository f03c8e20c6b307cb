"""Secrets never appear in output at any verbosity, nor in any file but the secrets env file."""

from __future__ import annotations

import stat

from tests.support.scenario import API_KEY, HF_TOKEN


def test_no_secret_in_the_deploy_output_at_the_highest_verbosity(ssh_stack):
    output = ssh_stack.first_deploy["output"]
    assert "Starting operation: Upload the secrets env file" in output, "the converge did not run verbosely"
    for secret in (API_KEY, HF_TOKEN):
        assert secret not in output


def test_secrets_live_only_in_their_0600_env_files(ssh_stack):
    secrets = ssh_stack.dir / "stack" / "secrets"
    assert ssh_stack.files_containing(API_KEY) == ["stack/secrets/serving.env"]
    assert ssh_stack.files_containing(HF_TOKEN) == ["stack/secrets/hub.env"]
    for env_file in secrets.iterdir():
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, env_file
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
