"""Layout: every path and marker name the deploy uses, on the laptop, on the host and in containers.

Nothing else spells out a folder: the steps, the renderers, the facts and the
tests ask here, so a path changes in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# -- On the laptop: what each step ships ---------------------------------------------
# files/<step>/ holds what is copied to a host as it is, templates/<step>/ what is rendered with
# values; the steps in lorafleet/deploy/<step>/ read them only through the names below.
PACKAGE_DIR = Path(__file__).resolve().parent  # lorafleet/deploy
PROJECT_ROOT = PACKAGE_DIR.parent.parent
GROUP_DATA_DIR = PROJECT_ROOT / "group_data"
FILES_DIR = PROJECT_ROOT / "files"
TEMPLATES_DIR = PROJECT_ROOT / "templates"

# Modules that run on the laptop and in a container alike stay in the package, and are shipped from it:
SHARED_MODULES = {
    # the deploy checks an uploaded adapter on the laptop, and a hub download on the host with the same code
    "adapter_check.py": PACKAGE_DIR.parent / "adapters" / "check.py",
    # the call grammar: the tool parser plugin in vLLM imports it; the tools, eval, train and the demo builder render calls with it
    "functiongemma.py": PACKAGE_DIR.parent / "functiongemma.py",
    # the LoRA training loop: `lorafleet train` on the laptop, the demo builder in a container
    "lora.py": PACKAGE_DIR.parent / "train" / "lora.py",
}

COMPOSE_TEMPLATE = TEMPLATES_DIR / "serving" / "compose.yaml.j2"
# Copied into {stack_dir}/serve on the host and mounted read-only at CONTAINER_SERVE_DIR.
SERVE_FILES = {
    "entrypoint.py": FILES_DIR / "serving" / "entrypoint.py",
    "sync_adapters.py": FILES_DIR / "serving" / "sync_adapters.py",
    "adapter_check.py": SHARED_MODULES["adapter_check.py"],
    # The project's tool parser (vLLM's --tool-parser-plugin) and the call grammar it imports.
    "functiongemma_tool_parser.py": FILES_DIR / "serving" / "functiongemma_tool_parser.py",
    "functiongemma.py": SHARED_MODULES["functiongemma.py"],
    # vLLM's --middleware: names each tool result after the call it answers, before the chat template renders.
    "lorafleet_middleware.py": FILES_DIR / "serving" / "lorafleet_middleware.py",
    # vLLM's --middleware: per-adapter requests, latency, TTFT, tokens and tool calls on vLLM's /metrics.
    "lorafleet_metrics.py": FILES_DIR / "serving" / "lorafleet_metrics.py",
    # Run in a throwaway container of a new image before vLLM is recreated on it: the plugins import there.
    "check_image.py": FILES_DIR / "serving" / "check_image.py",
}
# Serve files vLLM never runs (the image check; the adapter check, run on hub downloads in a throwaway
# container): no part of the server hash, so a change to them restarts nothing.
NOT_RUN_BY_VLLM = ("check_image.py", "adapter_check.py")
# What vLLM imports with --middleware (module beside the entrypoint, on its PYTHONPATH). vLLM adds them in this
# order and the last is outermost: the metrics see every answer, the 401 of vLLM's key check and the 400 of the first.
MIDDLEWARE = ("lorafleet_middleware.ToolResultNames", "lorafleet_metrics.AdapterMetrics")
# The name the plugin registers with vLLM's ToolParserManager.
PROJECT_TOOL_PARSER = "lorafleet_functiongemma"
# What the CPU image is built from (its tag hashes each): the Dockerfile and the complete lock.
CPU_BUILD_FILES = {"Dockerfile": FILES_DIR / "image" / "Dockerfile", "requirements.txt": FILES_DIR / "image" / "requirements.txt"}
DEMO_BUILDER = FILES_DIR / "models" / "build_demo_model.py"  # the builder's entry point
DEMO_TRAINER = SHARED_MODULES["lora.py"]  # shipped beside the builder, which loads it by path
# Everything the demo builder runs, shipped into one folder (mounted at /demo) and hashed in this order.
DEMO_FILES = {
    "build_demo_model.py": DEMO_BUILDER,
    "demo_tokenizer.py": FILES_DIR / "models" / "demo_tokenizer.py",
    "chat_template.jinja": FILES_DIR / "models" / "chat_template.jinja",
    "demo_data.py": FILES_DIR / "models" / "demo_data.py",
    "demo_training.py": FILES_DIR / "models" / "demo_training.py",
    "demo_checks.py": FILES_DIR / "models" / "demo_checks.py",
    "demo_models.py": FILES_DIR / "models" / "demo_models.py",
    "functiongemma.py": SHARED_MODULES["functiongemma.py"],
    "lora.py": DEMO_TRAINER,
}
ROUTER_BUILD_FILES = {"Dockerfile": FILES_DIR / "router" / "Dockerfile"}
ROUTER_CTL = FILES_DIR / "router" / "ctl.py"  # runs inside the router container: waits until it serves its configuration
ROUTER_GATEWAY_COMPOSE = FILES_DIR / "router" / "gateway.compose.yaml"
GATEWAY_FILES = {"compose.yaml": FILES_DIR / "gateway" / "compose.yaml", "Dockerfile": FILES_DIR / "gateway" / "Dockerfile"}
# Run by the user once on the GPU box, from a clone of this repository (never uploaded by the deploy).
BOOTSTRAP = FILES_DIR / "gateway" / "bootstrap.sh"
LOCK_SCRIPT = FILES_DIR / "lock" / "lock.sh"  # piped to bash on the host (to break a lock: server.script), never stored there
# Shell the deploy runs on the host, copied into {stack_dir}/bin (shellcheck checks them).
HOST_SCRIPTS = {"start.sh": FILES_DIR / "serving" / "start.sh", "hub_fetch.sh": FILES_DIR / "models" / "hub_fetch.sh",
                "build.sh": FILES_DIR / "image" / "build.sh"}


def shipped_files() -> dict[Path, str]:
    """Every file a step ships (or the user runs on the box), with the step or reason: what files/ and templates/ hold."""
    shipped = {path: "serving" for path in SERVE_FILES.values()}
    shipped.update({path: "bin" for path in HOST_SCRIPTS.values()})
    shipped.update({path: "image" for path in CPU_BUILD_FILES.values()})
    shipped.update({path: "router" for path in [*ROUTER_BUILD_FILES.values(), ROUTER_CTL, ROUTER_GATEWAY_COMPOSE]})
    shipped.update({path: "gateway" for path in GATEWAY_FILES.values()})
    shipped.update({path: "models" for path in DEMO_FILES.values()})
    shipped.update({COMPOSE_TEMPLATE: "serving", LOCK_SCRIPT: "lock",
                    BOOTSTRAP: "run by the user on the box"})
    return shipped


# -- Markers: files lorafleet writes to say what a folder holds -------------------
SOURCE_MARKER = ".lorafleet-source"  # in a model or adapter folder: where it came from; only such folders are ever pruned
INPUTS_MARKER = ".lorafleet-inputs"  # in the demo build: the hash of the inputs it was built from, then its adapters
VERSIONS_DIR = ".versions"  # in adapters_root: one symlink per adapter version
STAGING_SUFFIX = ".partial"  # a download or copy in progress; renamed into place when complete
PROBE_MARKER = ".lorafleet-probe"  # + "-TOKEN": written and removed by the round trip through the engine

# -- In the storage roots: what the deploy makes there besides marked folders ----------
CACHE_FOLDERS = {"HF_HOME": "huggingface", "VLLM_CACHE_ROOT": "vllm"}  # under cache_root
DEMO_FOLDER = "lorafleet-demo"  # under models_root: the demo model and its adapters, as built

# -- In the router container -------------------------------------------------------
CONTAINER_ROUTER_DIR = "/router"  # haproxy.cfg (0600, the boxes' keys) and ctl.py, mounted read-only

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
    def demo_builder_dir(self) -> str:
        """The demo builder's files (DEMO_FILES), side by side; mounted at /demo in the build container."""
        return f"{self.stack_dir}/demo"

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
        """Mounted at CONTAINER_ROUTER_DIR; 0700, as haproxy.cfg holds the boxes' keys."""
        return f"{self.router_dir}/run"

    @property
    def router_config(self) -> str:
        return f"{self.router_run_dir}/haproxy.cfg"

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
    return f"{models_root}/{DEMO_FOLDER}"


def cache_dir(cache_root: str, variable: str) -> str:
    """The folder under cache_root that a cache variable (CACHE_FOLDERS: HF_HOME, VLLM_CACHE_ROOT) names."""
    return f"{cache_root}/{CACHE_FOLDERS[variable]}"


def adapter_dir(adapters_root: str, name: str) -> str:
    return f"{adapters_root}/{name}"


def versions_dir(adapters_root: str) -> str:
    return f"{adapters_root}/{VERSIONS_DIR}"
