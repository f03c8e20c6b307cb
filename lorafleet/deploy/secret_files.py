"""Secrets: the 0600 env files: vLLM's (the API key) and the downloads' (HF_TOKEN)."""

from __future__ import annotations

from lorafleet.deploy import hub, stack
from lorafleet.deploy.ops import SecretText, secret_file
from lorafleet.deploy.settings import Settings


def upload(s: Settings) -> None:
    p = stack.paths(s)
    secret_file(
        name="Upload the secrets env file (0600)",
        content=SecretText(stack.render_env_file(s)),
        dest=p.env_file,
        temp_dir=p.secrets_dir,
    )
    secret_file(
        name="Upload the hub token env file (0600)",
        content=SecretText(hub.render_hub_env_file(s)),
        dest=p.hub_env_file,
        temp_dir=p.secrets_dir,
    )
