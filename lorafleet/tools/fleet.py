"""``lorafleet status --fleet`` and ``lorafleet check --fleet``: the router and every box of the fleet.

The fleet comes from the inventory as the deploy sees it (:func:`lorafleet.tools.targets.load_fleet`):
the router is asked with the user's key at the fleet's endpoint, each box directly with its own key
(the one the router uses for it) at its endpoint as this laptop reaches it. No key is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from lorafleet.deploy import layout
from lorafleet.deploy.credentials import box_key_file
from lorafleet.deploy.fleet import ROUTER_GROUP, Box, Fleet, endpoint_url
from lorafleet.tools import check
from lorafleet.tools.endpoint import Endpoint, normalize_url
from lorafleet.tools import adapter_stats
from lorafleet.tools.status import (
    NA,
    RAW,
    add_adapter_rows,
    collect_status,
    fetch,
    format_table,
    public,
    render_models,
    repeat,
    status_exit_code,
)

INVENTORY_ENV = "LORAFLEET_INVENTORY"
# The router answers this without a key while it runs (its compose health check too), with its configuration's id.
ROUTER_LIVENESS = "/health"


class FleetError(Exception):
    """The inventory names no fleet, or one the tools cannot read: the message says what to fix."""


def inventory_path(flag: str | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """The inventory to read: ``--inventory``, else ``$LORAFLEET_INVENTORY``, else the project's inventory.py."""
    return Path(flag or env.get(INVENTORY_ENV) or layout.PROJECT_ROOT / "inventory.py")


def load(inventory: Path) -> Fleet:
    """The inventory's fleet; FleetError when the file is absent, invalid, or has no router."""
    from pyinfra.api.exceptions import PyinfraError

    from lorafleet.tools.targets import load_fleet

    if not inventory.is_file():
        # pyinfra would read a missing file's name as a host name: say so here instead.
        raise FleetError(f"the inventory {inventory} does not exist: pass --inventory PATH or set {INVENTORY_ENV}")
    try:
        fleet = load_fleet(inventory)
    except PyinfraError as exc:  # the settings of a host, or of the fleet, are refused: the message lists why
        raise FleetError(f"{inventory}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the inventory is Python the user wrote: any error is in it
        raise FleetError(f"{inventory}: cannot read the inventory: {type(exc).__name__}: {exc}") from None
    if fleet is None:
        raise FleetError(
            f"{inventory} has no `{ROUTER_GROUP}` group, so it declares no fleet: add one that lists the host "
            f'the router runs on, e.g. {ROUTER_GROUP} = ["box-a"] (see docs/fleet.md); for a single box, '
            "leave out --fleet"
        )
    return fleet


def box_server_url(box: Box) -> str:
    """A box's server URL (no /v1) as this laptop reaches it."""
    return normalize_url(endpoint_url(box.settings, box.name))


def _key_hint(box: Box) -> str:
    path = box_key_file(layout.PROJECT_ROOT, box.name)
    if not box.settings.secrets.api_key:
        return f"no key for {box.name} in {path}: deploy the fleet first, it writes the box keys"
    return f"{box.name} refused its key ({path}): deploy the fleet again so the box and the router take it"


def box_status(box: Box, timeout: float) -> dict[str, Any]:
    """One box's status record (:func:`collect_status`) with its name, health and missing models."""
    endpoint = Endpoint(box_server_url(box), box.settings.secrets.api_key or None, "inventory", "box key")
    st = collect_status(endpoint, timeout=timeout)
    listed = st["base_model"] is not None
    if st["errors"].get("models", "").startswith("401"):  # status's hint names the user's key, not the box's
        st["errors"]["models"] = "401 unauthorized: " + _key_hint(box)
    served = {st["base_model"], *st["adapters"]}
    declared = [a.name for a in box.settings.adapters]
    return {
        **st,
        "box": box.name,
        "health": "up" if status_exit_code(st) == 0 else "down",
        "declared_base_model": box.settings.served_model_name,
        "declared_adapters": declared,
        "adapters_served_of_declared": sum(a in served for a in declared) if listed else None,
        "missing": [m for m in box.models if m not in served] if listed else None,  # None: not known
    }


def router_status(fleet: Fleet, timeout: float) -> dict[str, Any]:
    """The router's record: alive (its /health), and which of the fleet's models it lists (user's key)."""
    import requests

    server = normalize_url(fleet.endpoint)
    user = Endpoint(server, fleet.router_settings.secrets.api_key or None, "inventory", "user key")
    session = requests.Session()
    live = fetch(session, server + ROUTER_LIVENESS, {}, timeout, as_json=False)
    models = fetch(session, user.endpoint_url + "/models", user.headers(), timeout, as_json=True)
    listed = None
    if models.ok and isinstance(models.body, dict):
        listed = [m.get("id") for m in models.body.get("data", []) if isinstance(m, dict)]
    errors = {}
    if not live.ok:
        errors["liveness"] = live.error
    if listed is None:
        errors["models"] = models.error or "the model list is not an OpenAI list"
    return {
        "host": fleet.router,
        "url": fleet.endpoint,
        "health": "up" if live.ok else "down",
        "models": listed,
        "declared_models": list(fleet.models),
        "missing": None if listed is None else [m for m in fleet.models if m not in listed],
        "errors": errors,
    }


def collect_fleet_status(fleet: Fleet, timeout: float = 10.0) -> dict[str, Any]:
    """The router's record and each box's, asked at once so that one slow box costs its timeout only once."""
    with ThreadPoolExecutor(max_workers=len(fleet.boxes) + 1) as pool:
        router = pool.submit(router_status, fleet, timeout)
        boxes = [pool.submit(box_status, box, timeout) for box in fleet.boxes]
        fs = {"router": router.result(), "boxes": [b.result() for b in boxes]}
    fs["models"], fs["never_used"] = fleet_models(fs["boxes"])
    return fs


def fleet_models(boxes: list[dict[str, Any]], now: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The boxes' per-model rows summed (counts and latency buckets add; the last use is the latest anywhere),
    and the adapters no box used since it started."""
    raws = [b[RAW] for b in boxes if b.get(RAW) is not None]
    base = next((b["base_model"] for b in boxes if b.get("base_model")), None)
    served = sorted({a for b in boxes for a in b.get("adapters") or ()})
    record: dict[str, Any] = {"base_model": base, "adapters": served}
    add_adapter_rows(record, adapter_stats.merge(raws) if raws else None, now)
    return record["models"], record["never_used"]


def healthy(record: dict[str, Any]) -> bool:
    """Up and serving all it declares (a box or the router)."""
    return record["health"] == "up" and record["missing"] == []


def fleet_exit_code(fs: dict[str, Any]) -> int:
    """0 when the router and every box are up and serve what they declare, 1 otherwise."""
    return 0 if all(healthy(r) for r in (fs["router"], *fs["boxes"])) else 1


def _missing(missing: list[str] | None) -> str:
    return f", missing: {', '.join(missing)}" if missing else ""


def _count(value: float | None) -> str:
    return NA if value is None else f"{value:g}"


def render_fleet_status(fs: dict[str, Any]) -> str:
    """The human view: one line for the router, one row per box, then what is wrong."""
    r = fs["router"]
    listed = NA if r["models"] is None else f"{len(r['declared_models']) - len(r['missing'])} of {len(r['declared_models'])}"
    out = [f"router on {r['host']} at {r['url']}: {r['health']}, lists {listed} models{_missing(r['missing'])}", ""]
    rows = []
    for b in fs["boxes"]:
        adapters = NA if b["missing"] is None else (
            f"{b['adapters_served_of_declared']} of {len(b['declared_adapters'])}{_missing(b['missing'])}")
        kv = NA if b["kv_cache_usage"] is None else f"{100 * b['kv_cache_usage']:.1f}%"
        rows.append((b["box"], b["health"], b["version"] or NA, adapters, _count(b["running"]), _count(b["waiting"]), kv))
    out.append(format_table(("box", "health", "vLLM", "adapters served", "running", "waiting", "KV cache"), rows,
                            right=(4, 5, 6)))
    if fs.get("models"):
        out += ["", "per model, all boxes:", render_models(fs["models"])]
        if fs.get("never_used"):
            out.append(f"never used on any box since it started: {', '.join(fs['never_used'])}")
        for b in fs["boxes"]:
            if b.get("models"):
                out += ["", f"per model on {b['box']}:", render_models(b["models"], b.get("lora"))]
    problems = [f"router: {what}: {err}" for what, err in r["errors"].items()]
    for b in fs["boxes"]:
        if not b["reachable"]:
            problems.append(f"{b['box']}: not reachable at {b['url']} ({b['errors'].get('connect')})")
        else:
            problems += [f"{b['box']}: {what}: {err}" for what, err in b["errors"].items()]
    if problems:
        out += ["", *problems]
    return "\n".join(out)


def run_status(inventory: Path, as_json: bool = False, timeout: float = 10.0, watch: float | None = None) -> int:
    """``lorafleet status --fleet``: print the fleet's status; 0 all well, 1 something down or missing, 2 no fleet."""
    try:
        fleet = load(inventory)
    except FleetError as exc:
        print(exc, file=sys.stderr)
        return 2

    def show() -> int:
        fs = collect_fleet_status(fleet, timeout)
        print(json.dumps(public_fleet(fs), indent=None if watch else 2, sort_keys=True) if as_json
              else render_fleet_status(fs))
        return fleet_exit_code(fs)

    return repeat(show, watch, clear=not as_json)


def public_fleet(fs: dict[str, Any]) -> dict[str, Any]:
    """The fleet record as ``--json`` prints it (without the boxes' raw histogram buckets)."""
    return {**fs, "boxes": [public(b) for b in fs["boxes"]]}


def run_check(inventory: Path, args: argparse.Namespace) -> int:
    """``lorafleet check --fleet``: the check through the router (every model), then on each box (its models)."""
    try:
        fleet = load(inventory)
    except FleetError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"== router on {fleet.router}: every model of the fleet, with your key", flush=True)
    codes = {"router": check.run(normalize_url(fleet.endpoint), fleet.router_settings.secrets.api_key or None,
                                 args, expected=fleet.models)}
    for box in fleet.boxes:
        print(f"\n== box {box.name}: its own models, with its own key", flush=True)
        codes[box.name] = check.run(box_server_url(box), box.settings.secrets.api_key or None, args,
                                    expected=box.models)
        if codes[box.name] == 2:
            print(f"{box.name}: if the key was refused: {_key_hint(box)}", file=sys.stderr)
    print("\nfleet: " + ", ".join(f"{name} {'ok' if code == 0 else 'FAILED'}" for name, code in codes.items()))
    return max(codes.values())
