"""Targets: the GPU box over Tailscale SSH when configured, else this machine (`@local`).

The GPU box comes from the environment or the git-ignored `.secrets.env`
(`LORAFLEET_SECRETS_FILE` names another file):
  LORAFLEET_GPU_HOST   its Tailscale name (MagicDNS), e.g. function-gemma-server
  LORAFLEET_SSH_USER   SSH user in the gateway (default root)
  LORAFLEET_SSH_KEY    private key file paramiko offers (Tailscale SSH accepts any, but one must be offered)
  LORAFLEET_SSH_PORT, LORAFLEET_KNOWN_HOSTS   optional
To plan without a box: `pyinfra inventories/dry_run.py deploy.py --dry`.
"""

from pathlib import Path

from lorafleet.deploy.credentials import laptop_config

_config = laptop_config(Path(__file__).parent)
_gpu_host = _config.get("LORAFLEET_GPU_HOST", "")


def _gpu_data() -> dict:
    data = {
        "ssh_user": _config.get("LORAFLEET_SSH_USER", "root"),
        "ssh_key": _config.get("LORAFLEET_SSH_KEY", str(Path.home() / ".ssh" / "id_ed25519")),
        "endpoint_host": _gpu_host,
    }
    if _config.get("LORAFLEET_SSH_PORT"):
        data["ssh_port"] = int(_config["LORAFLEET_SSH_PORT"])
    if _config.get("LORAFLEET_KNOWN_HOSTS"):
        data["ssh_known_hosts_file"] = _config["LORAFLEET_KNOWN_HOSTS"]
    return data


if _gpu_host:
    gpu = [(_gpu_host if _gpu_host.startswith("@") else f"@ssh/{_gpu_host}", _gpu_data())]
else:
    local = ["@local"]
