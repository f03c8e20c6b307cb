"""Secrets on the laptop: from the environment, a git-ignored file, or generated once.

HF_TOKEN and the vLLM API key come from the environment or `.secrets.env` at the
project root (the environment wins). With no API key given, one is generated on
the first deploy and kept in `.state/api-key` (0600), where every lorafleet tool
finds it.
"""

from __future__ import annotations

import os
import secrets as token_source
from pathlib import Path
from typing import Mapping

from lorafleet.settings import Secrets

API_KEY_VARS = ("LORAFLEET_API_KEY", "VLLM_API_KEY")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines; blank lines and # comments are skipped, quotes stripped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def state_dir(project_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LORAFLEET_STATE_DIR") or project_root / ".state")


def api_key_file(project_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    return state_dir(project_root, env) / "api-key"


def resolve_secrets(project_root: Path, env: Mapping[str, str] = os.environ, generate_api_key: bool = True) -> Secrets:
    """Collect the secrets for a deploy; generates and stores an API key if none was given."""
    merged = {**read_env_file(Path(env.get("LORAFLEET_SECRETS_FILE") or project_root / ".secrets.env")), **env}
    api_key = next((merged[k] for k in API_KEY_VARS if merged.get(k)), "")
    if not api_key and generate_api_key:
        key_file = api_key_file(project_root, env)
        if key_file.is_file():
            api_key = key_file.read_text(encoding="utf-8").strip()
        else:
            api_key = token_source.token_urlsafe(32)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(api_key + "\n")
    return Secrets(hf_token=merged.get("HF_TOKEN", ""), api_key=api_key)
