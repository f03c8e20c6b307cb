"""What a newcomer can paste after a deploy that started or synced vLLM: the check, and one request to an adapter.

The request reads the API key where the deploy keeps it on this laptop (:func:`credentials.key_reader`), so the
line works as pasted into a new shell; the key itself is never printed.
"""

from __future__ import annotations

import json

from lorafleet.deploy.credentials import KeyReader
from lorafleet.deploy.fleet import endpoint_url
from lorafleet.deploy.settings import Settings


def next_commands(s: Settings, host_name: str, key: KeyReader | None) -> list[str]:
    """The lines to print: ``lorafleet check``, a ``curl`` chat request that reads the key itself, the models."""
    endpoint = endpoint_url(s, host_name)
    model = s.adapters[0].name if s.adapters else s.served_model_name
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32})
    auth = f"-H \"Authorization: Bearer {key.shell}\" " if key else ""
    return [
        f"lorafleet check --url {endpoint}",
        f"curl -s {endpoint}/chat/completions {auth}-H 'Content-Type: application/json' -d '{body}'",
        f"  (the key, never printed: {key.where})" if key else "  (the server takes no API key)",
        f"models: {', '.join([s.served_model_name, *(a.name for a in s.adapters)])}",
    ]
