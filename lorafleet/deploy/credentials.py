"""Credentials on the laptop: from the environment, a git-ignored file, or generated once.

HF_TOKEN and the vLLM API key come from the environment or `.secrets.env` at the
project root (`LORAFLEET_SECRETS_FILE` names another file; the environment
wins). With no API key given, one is generated on the first deploy and kept in
`.state/api-key` (0600), where every lorafleet tool finds it. One reader serves
the inventory, the deploy and the operator's tools.
"""

from __future__ import annotations

import os
import secrets as token_source
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values

from lorafleet.deploy.fleet import slug
from lorafleet.deploy.settings import Secrets, SettingsError

API_KEY_VARS = ("LORAFLEET_API_KEY", "VLLM_API_KEY")
SECRET_VARS = ("HF_TOKEN", *API_KEY_VARS)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as dotenv reads them (quotes, `export`, inline `# comments`); {} if absent."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def secrets_file(project_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LORAFLEET_SECRETS_FILE") or project_root / ".secrets.env")


def laptop_config(project_root: Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The secrets file overlaid by the environment: what the inventory and the deploy read."""
    return {**read_env_file(secrets_file(project_root, env)), **env}


def state_dir(project_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LORAFLEET_STATE_DIR") or project_root / ".state")


def api_key_file(project_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    return state_dir(project_root, env) / "api-key"


def box_key_file(project_root: Path, box: str, env: Mapping[str, str] = os.environ) -> Path:
    """Where the key of one box behind the fleet's router is kept (0600): only the router and lorafleet's tools use it."""
    return state_dir(project_root, env) / "box-keys" / slug(box)


def box_key(project_root: Path, box: str, env: Mapping[str, str] = os.environ, create: bool = True) -> str:
    """The API key of one fleet box: generated once, kept on the laptop; "" if absent and not created."""
    path = box_key_file(project_root, box, env)
    if not path.is_file() and create:
        _write_new_key(path, "sk-box-" + token_source.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def _write_new_key(path: Path, key: str) -> None:
    """Create `path` (0600) holding `key`, unless another deploy of the same run made it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")


def check_secret(name: str, value: str) -> None:
    """A secret lands in an env file: one line of printable characters, or it could inject variables."""
    if value and (not value.isprintable() or value != value.strip()):
        raise SettingsError([
            f"{name} holds a newline, a control character or surrounding spaces: it would be written into "
            f"an env file on the host as more than one variable; set {name} to the bare token on one line"
        ])


def resolve_secrets(
    project_root: Path, env: Mapping[str, str] = os.environ, generate_api_key: bool = True, create: bool = True
) -> Secrets:
    """Collect the secrets for a deploy; generates and stores an API key if none was given.

    `create=False` (read-only tools) uses a generated key that exists but never makes one.
    """
    merged = laptop_config(project_root, env)
    for name in SECRET_VARS:
        check_secret(name, merged.get(name, ""))
    api_key = next((merged[k] for k in API_KEY_VARS if merged.get(k)), "")
    if not api_key and generate_api_key:
        key_file = api_key_file(project_root, env)
        if key_file.is_file():
            api_key = key_file.read_text(encoding="utf-8").strip()
        elif create:
            # "sk-": the fleet's router (LiteLLM) takes only keys of that form.
            _write_new_key(key_file, "sk-" + token_source.token_urlsafe(32))
            api_key = key_file.read_text(encoding="utf-8").strip()
    return Secrets(hf_token=merged.get("HF_TOKEN", ""), api_key=api_key)
