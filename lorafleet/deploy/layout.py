"""Layout: every path and marker name the deploy uses, on the laptop, on the host and in containers.

Nothing else spells out a folder: the steps, the renderers, the facts and the
tests ask here, so a path changes in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# -- On the laptop: the files each step ships, kept beside the step's code ------
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent.parent
DEFAULT_INVENTORY = PROJECT_ROOT / "inventory.py"
GROUP_DATA_DIR = PROJECT_ROOT / "group_data"

SERVING_DIR = PACKAGE_DIR / "serving"
COMPOSE_TEMPLATE = SERVING_DIR / "compose.yaml.j2"
START_SCRIPT = SERVING_DIR / "start.sh"
# Copied into {stack_dir}/serve on the host and mounted read-only at CONTAINER_SERVE_DIR.
SERVE_FILES = {
    "entrypoint.py": SERVING_DIR / "entrypoint.py",
    "sync_adapters.py": SERVING_DIR / "sync_adapters.py",
    "adapter_check.py": PACKAGE_DIR / "adapters" / "check.py",
    # The project's tool parser (vLLM's --tool-parser-plugin) and the call grammar it imports.
    "functiongemma_tool_parser.py": SERVING_DIR / "functiongemma_tool_parser.py",
    "functiongemma.py": PACKAGE_DIR.parent / "functiongemma.py",
}
# The name the plugin registers with vLLM's ToolParserManager.
PROJECT_TOOL_PARSER = "lorafleet_functiongemma"
CPU_DOCKERFILE = PACKAGE_DIR / "image" / "Dockerfile"
# What the CPU image is built from (its inputs hash covers each): the Dockerfile and the complete lock.
CPU_BUILD_FILES = {"Dockerfile": CPU_DOCKERFILE, "requirements.txt": PACKAGE_DIR / "image" / "requirements.txt"}
DEMO_BUILDER = PACKAGE_DIR / "models" / "build_demo_model.py"
DEMO_TRAINER = PACKAGE_DIR.parent / "train" / "lora.py"  # the training code the demo builder shares with `lorafleet train`
ROUTER_DIR = PACKAGE_DIR / "router"
ROUTER_BUILD_FILES = {"Dockerfile": ROUTER_DIR / "Dockerfile", "requirements.txt": ROUTER_DIR / "requirements.txt"}
ROUTER_CTL = ROUTER_DIR / "ctl.py"  # runs inside the router container: waits for a reload, lists what it serves
ROUTER_GATEWAY_COMPOSE = ROUTER_DIR / "gateway.compose.yaml"
GATEWAY_DIR = PACKAGE_DIR / "gateway"
GATEWAY_FILES = {"compose.yaml": GATEWAY_DIR / "compose.yaml", "Dockerfile": GATEWAY_DIR / "Dockerfile"}
BOOTSTRAP = GATEWAY_DIR / "bootstrap.sh"
# Shell the deploy runs on the host, copied into {stack_dir}/bin (shellcheck checks them).
HOST_SCRIPTS = {"start.sh": START_SCRIPT, "hub_fetch.sh": PACKAGE_DIR / "models" / "hub_fetch.sh",
                "build.sh": PACKAGE_DIR / "image" / "build.sh"}

# -- Markers: files lorafleet writes to say what a folder holds -------------------
SOURCE_MARKER = ".lorafleet-source"  # in a model or adapter folder: where it came from; only such folders are ever pruned
INPUTS_MARKER = ".lorafleet-inputs"  # in the demo build: the hash of the inputs it was built from
VERSIONS_DIR = ".versions"  # in adapters_root: one symlink per adapter version
STAGING_SUFFIX = ".partial"  # a download or copy in progress; renamed into place when complete
PROBE_MARKER = ".lorafleet-probe"  # + "-TOKEN": written and removed by the round trip through the engine

# -- In the router container -------------------------------------------------------
CONTAINER_ROUTER_DIR = "/router"  # config.yaml (0600, the keys) and ctl.py, mounted read-only

# -- In the vLLM container ---------------------------------------------------------
CONTAINER_SERVE_DIR = "/lorafleet"
CONTAINER_MANIFEST = f"{CONTAINER_SERVE_DIR}/adapters.json"


def container_script(name: str) -> str:
    """The path of a shipped serve file inside the container."""
    assert name in SERVE_FILES, name
    return f"{CONTAINER_SERVE_DIR}/{name}"


# -- On the host -------------------------------------------------------------------
@dataclass(frozen=True)
class StackPaths:
    """Where each file of the serving stack lands under stack_dir."""

    stack_dir: str

    @property
    def compose_file(self) -> str:
        return f"{self.stack_dir}/compose.yaml"

    @property
    def serve_dir(self) -> str:
        return f"{self.stack_dir}/serve"

    @property
    def manifest(self) -> str:
        return f"{self.serve_dir}/adapters.json"

    @property
    def bin_dir(self) -> str:
        return f"{self.stack_dir}/bin"

    @property
    def secrets_dir(self) -> str:
        return f"{self.stack_dir}/secrets"

    @property
    def env_file(self) -> str:
        """vLLM's secrets (the API key): a change recreates the container."""
        return f"{self.secrets_dir}/serving.env"

    @property
    def hub_env_file(self) -> str:
        """The downloads' secret (HF_TOKEN), apart so a new token never restarts vLLM."""
        return f"{self.secrets_dir}/hub.env"

    @property
    def env_applied(self) -> str:
        """The hash of the secrets env file the running vLLM was started with."""
        return f"{self.secrets_dir}/serving.env.applied"

    @property
    def cpu_build_dir(self) -> str:
        return f"{self.stack_dir}/vllm-cpu"

    @property
    def demo_builder(self) -> str:
        return f"{self.stack_dir}/demo/build_demo_model.py"

    @property
    def demo_trainer(self) -> str:
        """Beside the builder, where it looks for lora.py (the folder is mounted at /demo)."""
        return f"{self.stack_dir}/demo/lora.py"

    @property
    def last_good(self) -> str:
        """The last compose file that became healthy: what a rollback brings back."""
        return f"{self.stack_dir}/compose.last-good.yaml"

    @property
    def failed(self) -> str:
        """A compose file that failed to become healthy, kept for inspection."""
        return f"{self.stack_dir}/compose.failed.yaml"

    @property
    def lock_dir(self) -> str:
        """Held by the deploy that is applying changes (lock/lock.sh)."""
        return f"{self.stack_dir}/deploy.lock"

    @property
    def gateway_dir(self) -> str:
        return f"{self.stack_dir}/gateway"

    @property
    def router_dir(self) -> str:
        """The fleet's router: its compose project, image build and (in run/) what its container mounts."""
        return f"{self.stack_dir}/router"

    @property
    def router_run_dir(self) -> str:
        """Mounted at CONTAINER_ROUTER_DIR; 0700, as config.yaml holds the keys."""
        return f"{self.router_dir}/run"

    @property
    def router_config(self) -> str:
        return f"{self.router_run_dir}/config.yaml"

    @property
    def router_compose_file(self) -> str:
        return f"{self.router_dir}/compose.yaml"

    @property
    def router_build_dir(self) -> str:
        return f"{self.router_dir}/build"


def base_model_dir(models_root: str, source: str, base_model: str, revision: str) -> str:
    """Where the base model lives on the host (and, by path parity, in the container)."""
    if source == "demo":
        return f"{demo_dir(models_root)}/base"
    if source == "hub":
        # One folder per revision: a new revision never overwrites the one being served,
        # so a rollback finds its model again.
        return f"{models_root}/{base_model.replace('/', '--')}/{revision.replace('/', '--')}"
    return f"{models_root}/{re.sub(r'[^A-Za-z0-9._-]', '_', Path(base_model).name)}"


def demo_dir(models_root: str) -> str:
    return f"{models_root}/lorafleet-demo"


def adapter_dir(adapters_root: str, name: str) -> str:
    return f"{adapters_root}/{name}"


def versions_dir(adapters_root: str) -> str:
    return f"{adapters_root}/{VERSIONS_DIR}"
