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
import shlex
import tempfile
from dataclasses import dataclass
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
    """Create `path` (0600) holding `key`, unless another deploy of the same run made it first.

    The key is written to a file of its own, then linked into place: `path` never exists empty or
    half-written, so a deploy that loses the race reads the winner's whole key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)


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
            # "sk-", as OpenAI's keys: secret scanners and the openai client's users recognise it.
            _write_new_key(key_file, "sk-" + token_source.token_urlsafe(32))
            api_key = key_file.read_text(encoding="utf-8").strip()
    return Secrets(hf_token=merged.get("HF_TOKEN", ""), api_key=api_key)


@dataclass(frozen=True)
class KeyReader:
    """How a new shell on this laptop reads the deploy's API key: a shell expression, never the key itself."""

    shell: str  # expands to the key, e.g. $(cat /home/you/lorafleet/.state/api-key)
    where: str  # for people: where it is read from, or what to do first (never the key)


def key_reader(project_root: Path, api_key: str, env: Mapping[str, str] = os.environ) -> KeyReader | None:
    """Where a shell can read ``api_key`` on this laptop, as the deploy found it; None when there is no key.

    The secrets file (a plain ``NAME=value`` line, read with sed), else the generated key file (cat),
    each by its absolute path, so the line works from any folder and a shell without this
    environment. A key found only in the deploy's environment can be read only from a shell's.
    """
    if not api_key:
        return None
    secrets = secrets_file(project_root, env).absolute()
    in_file = read_env_file(secrets)
    for name in API_KEY_VARS:
        if in_file.get(name) != api_key:
            continue
        if _plain_line_value(secrets, name) == api_key:
            return KeyReader(f"$(sed -n 's/^{name}=//p' {shlex.quote(str(secrets))})", f"read from {name} in {secrets}")
        return KeyReader(f"${name}", f"{name} in {secrets}: export it in this shell first")
    key_file = api_key_file(project_root, env).absolute()
    if key_file.is_file() and key_file.read_text(encoding="utf-8").rstrip("\n") == api_key:
        return KeyReader(f"$(cat {shlex.quote(str(key_file))})", f"read from {key_file}")
    name = next((n for n in API_KEY_VARS if env.get(n) == api_key), API_KEY_VARS[0])
    return KeyReader(f"${name}", f"{name} from the deploy's environment, in no file: set it in this shell first")


def _plain_line_value(path: Path, name: str) -> str | None:
    """What ``sed -n 's/^NAME=//p' FILE`` gives inside ``$(...)``: the rest of the one line starting ``NAME=``."""
    found = [line[len(name) + 1:] for line in path.read_text(encoding="utf-8").split("\n") if line.startswith(f"{name}=")]
    return found[0] if len(found) == 1 else None
