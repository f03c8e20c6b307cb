"""Where the serving stack is and how to authenticate: one resolver for every operator tool.

Two URLs, two names: the *server URL* is the root (``http://host:8000``, where
``/version``, ``/metrics`` and ``/health`` live); the *endpoint* is the
OpenAI-compatible base URL, the server URL plus ``/v1``. ``--url`` and
``LORAFLEET_URL`` accept either.

Precedence, first match wins, separately for the URL and for the API key:

1. an explicit flag (``--url`` / ``--api-key``);
2. the environment: ``LORAFLEET_URL``; ``LORAFLEET_API_KEY``, then ``VLLM_API_KEY``;
3. in the project root (the folder holding ``deploy.py``, found by walking up
   from the current directory), as the deploy finds it
   (:mod:`lorafleet.deploy.credentials`): the key in ``.secrets.env``, else the
   key file the deploy generated, ``.state/api-key`` (or
   ``$LORAFLEET_STATE_DIR/api-key``), mode 0600;
4. the default server URL ``http://127.0.0.1:8000`` and no key.

The key is never printed: :class:`Endpoint` masks it in ``repr`` and
:meth:`Endpoint.describe` names only where it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from lorafleet.deploy.credentials import API_KEY_VARS, api_key_file, read_env_file, secrets_file
from lorafleet.tools.check import DEFAULT_URL, URL_ENV, normalize_url

__all__ = ["DEFAULT_URL", "Endpoint", "find_project_root", "normalize_url", "read_key_file", "resolve_endpoint"]

ROOT_MARKER = "deploy.py"


@dataclass(frozen=True)
class Endpoint:
    """A resolved server and API key, with where each came from."""

    server_url: str
    api_key: str | None = field(default=None, repr=False)
    url_source: str = "default"
    key_source: str = "none"

    def __repr__(self) -> str:
        key = "<set>" if self.api_key else "None"
        return (f"Endpoint(server_url={self.server_url!r}, api_key={key}, url_source={self.url_source!r}, "
                f"key_source={self.key_source!r})")

    @property
    def endpoint_url(self) -> str:
        """The OpenAI-compatible base URL: the server URL plus ``/v1``."""
        return self.server_url + "/v1"

    def headers(self) -> dict[str, str]:
        """HTTP headers that authenticate a request under ``/v1``."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def describe(self) -> str:
        """A line for humans that says where URL and key came from, never the key."""
        key = f"API key from {self.key_source}" if self.api_key else "no API key"
        return f"{self.server_url} ({self.url_source}; {key})"


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``deploy.py``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ROOT_MARKER).is_file():
            return folder
    return None


def read_key_file(path: Path) -> str | None:
    """The key stored in ``path`` (first non-empty line), or None if the file is absent or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SystemExit(
            f"cannot read the API key file {path}: {exc.strerror}; "
            f"fix its permissions or pass --api-key / set LORAFLEET_API_KEY"
        ) from exc
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def _project_key(root: Path, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The key the deploy uses: named in the secrets file, else the generated key file."""
    secrets = secrets_file(root, env)
    in_file = read_env_file(secrets)
    named = next((n for n in API_KEY_VARS if in_file.get(n)), None)
    if named:
        return in_file[named], f"{named} in {secrets}"
    key_file = api_key_file(root, env)
    if found := read_key_file(key_file):
        return found, str(key_file)
    return None, "none"


def resolve_endpoint(
    url: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Endpoint:
    """Resolve URL and key: flag > env > the project's secrets file or key file > default."""
    env = os.environ if env is None else env

    if url:
        resolved_url, url_source = url, "--url"
    elif env.get(URL_ENV):
        resolved_url, url_source = env[URL_ENV], f"env {URL_ENV}"
    else:
        resolved_url, url_source = DEFAULT_URL, "default"

    key: str | None = None
    key_source = "none"
    if api_key:
        key, key_source = api_key, "--api-key"
    elif named := next((n for n in API_KEY_VARS if env.get(n)), None):
        key, key_source = env[named], f"env {named}"
    elif (root := find_project_root(cwd)) is not None:
        key, key_source = _project_key(root, env)

    return Endpoint(normalize_url(resolved_url), key, url_source, key_source)
