"""Secrets: the 0600 env file the serving containers read (HF_TOKEN, vLLM API key)."""

from __future__ import annotations

from lorafleet import plan
from lorafleet.ops import SecretText, secret_file
from lorafleet.settings import Settings


def upload(s: Settings) -> None:
    p = plan.paths(s)
    secret_file(
        name="Upload the secrets env file (0600)",
        content=SecretText(plan.render_env_file(s)),
        dest=p.env_file,
        temp_dir=p.secrets_dir,
    )
