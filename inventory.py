"""Targets: the GPU box (or boxes) over Tailscale SSH when configured, else this machine (`@local`).

The boxes come from the environment or the git-ignored `.secrets.env`
(`LORAFLEET_SECRETS_FILE` names another file):
  LORAFLEET_GPU_HOST    one box: its Tailscale name (MagicDNS), e.g. function-gemma-server
  LORAFLEET_GPU_HOSTS   a fleet: several names, comma-separated (docs/fleet.md)
  LORAFLEET_ROUTER_HOST the fleet's router: one of the boxes, or another host (it then serves no model);
                        default with several boxes: the first
  LORAFLEET_SSH_USER    SSH user in the gateway (default root)
  LORAFLEET_SSH_KEY     private key file paramiko offers (Tailscale SSH accepts any, but one must be offered)
  LORAFLEET_SSH_PORT, LORAFLEET_KNOWN_HOSTS   optional
A host's own settings (e.g. the adapters it serves) go in host_data/<name>.py.
To plan without a box: `pyinfra inventories/dry_run.py deploy.py --dry`.
"""

from pathlib import Path

from lorafleet.deploy.credentials import laptop_config
from lorafleet.deploy.host_data import host_data

_config = laptop_config(Path(__file__).parent)
_boxes = [h.strip() for h in (_config.get("LORAFLEET_GPU_HOSTS") or _config.get("LORAFLEET_GPU_HOST", "")).split(",") if h.strip()]
_router = _config.get("LORAFLEET_ROUTER_HOST", "").strip() or (_boxes[0] if len(_boxes) > 1 else "")


def _name(host: str) -> str:
    return host if host.startswith("@") else f"@ssh/{host}"


def _data(host: str) -> dict:
    data = {
        "ssh_user": _config.get("LORAFLEET_SSH_USER", "root"),
        "ssh_key": _config.get("LORAFLEET_SSH_KEY", str(Path.home() / ".ssh" / "id_ed25519")),
        "endpoint_host": host,
    }
    if _config.get("LORAFLEET_SSH_PORT"):
        data["ssh_port"] = int(_config["LORAFLEET_SSH_PORT"])
    if _config.get("LORAFLEET_KNOWN_HOSTS"):
        data["ssh_known_hosts_file"] = _config["LORAFLEET_KNOWN_HOSTS"]
    return {**data, **host_data(host)}


if _boxes:
    gpu = [(_name(h), _data(h)) for h in _boxes]
    if _router in _boxes:
        router = [_name(_router)]
    elif _router:  # a host of its own for the router: it serves no model
        router = [(_name(_router), {**_data(_router), "serve_models": False})]
else:
    local = ["@local"]
