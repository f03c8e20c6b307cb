"""Turns pyinfra's host data into validated settings; the deploy's first step."""

from __future__ import annotations

import sys

from pyinfra import logger
from pyinfra.api.exceptions import DeployError

from lorafleet.deploy.layout import PROJECT_ROOT
from lorafleet.deploy.credentials import resolve_secrets
from lorafleet.deploy.settings import Settings, SettingsError, build_settings


def host_settings(host) -> Settings:
    """Validate every setting of `host` (and the secrets) or stop before anything is planned."""
    data = host.data.dict()
    # A plan (`--dry`, or the @fake connector) shows every step even before the user has every secret.
    plan_only = "--dry" in sys.argv or host.name.startswith("@fake")
    try:
        secrets = resolve_secrets(PROJECT_ROOT, generate_api_key=data.get("generate_api_key") is not False)
        settings = build_settings(data, secrets, plan_only=plan_only)
    except SettingsError as exc:
        raise DeployError(f"{host.name}: {exc}") from None
    for warning in settings.warnings:
        logger.warning(f"{host.name}: {warning}")
    return settings
