"""Settings: every knob from group_data, validated in one place before any host is touched.

`build_settings` takes the host's data (a mapping) and the secrets and returns a frozen `Settings`,
or raises `SettingsError` listing every problem, each naming the setting, the bad value and the fix.
It is made of two steps: `read_settings`, pure (the table of settings_table.py, then the rules that
read two settings at once, below), and the checks of settings_folders.py, which read this laptop's
disk (an uploaded base model's folder, the adapters' folders).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
from dataclasses import dataclass, field, fields, replace
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

from lorafleet.deploy import envfile, gpu, layout
from lorafleet.adapters import check as adapter_check
from lorafleet.adapters.declared import Adapter, parse_adapters
from lorafleet.deploy.rules import COMMIT_SHA, HUB_REPO
from lorafleet.deploy.settings_folders import check_laptop_folders
from lorafleet.deploy.settings_table import TABLE


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "lorafleet: invalid settings (nothing was changed on the host):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Settings:
    """The validated settings of one host."""

    profile: str
    cuda_image: str
    cpu_base_image: str
    cpu_image: str | None
    base_model_source: str
    base_model: str
    base_model_revision: str
    base_model_gated: bool
    served_model_name: str
    adapters: tuple[Adapter, ...]
    models_root: str
    adapters_root: str
    cache_root: str
    stack_dir: str
    compose_project: str
    network_mode: str
    gateway_container: str
    publish_address: str
    port: int
    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    max_num_seqs: int
    max_model_len: int
    gpu_memory_utilization: float
    dtype: str
    wsl_pin_memory: bool
    cpu_kvcache_space_gib: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    enable_tool_calling: bool
    tool_call_parser: str
    extra_vllm_args: tuple[str, ...]
    vllm_env: tuple[tuple[str, str], ...]
    vllm_cpuset: str
    health_timeout_seconds: int
    check_adapter_base: bool
    require_pinned_revisions: bool
    prune_adapters: bool
    create_storage_roots: bool
    generate_api_key: bool
    serve_without_api_key: bool
    deploy_lock_wait_seconds: int
    break_deploy_lock: bool
    remove_purge: tuple[str, ...]
    publish_beyond_loopback: bool
    tailscale_advertise_tags: str
    endpoint_host: str
    endpoint_url: str
    serve_models: bool
    router_port: int
    router_network_mode: str
    router_gateway_container: str
    router_endpoint_url: str
    router_home_weight: int
    router_health_check_seconds: int
    secrets: "Secrets" = field(repr=False)
    warnings: tuple[str, ...] = ()
    # What --dtype gets: dtype itself, or for "auto" "" (vLLM's own choice) until preflight reads the GPU (gpu.py).
    served_dtype: str = ""

    @property
    def base_model_dir(self) -> str:
        """Where the base model lives on the host (and, by path parity, in the container)."""
        return layout.base_model_dir(self.models_root, self.base_model_source, self.base_model, self.base_model_revision)

    def adapter_dir(self, name: str) -> str:
        return layout.adapter_dir(self.adapters_root, name)

    @property
    def demo_dir(self) -> str:
        return layout.demo_dir(self.models_root)

    @property
    def adapter_base_name(self) -> str:
        """The base model name adapters must have been trained on."""
        if self.base_model_source == "demo":
            return adapter_check.DEMO_BASE_NAME
        return self.base_model


@dataclass(frozen=True)
class Secrets:
    """Secret values; never rendered into compose files or printed."""

    hf_token: str = ""
    api_key: str = ""

    def __repr__(self) -> str:  # a Settings repr in a traceback must not leak them
        return "Secrets(<hidden>)"


# Host data that pyinfra's connectors set themselves without declaring it in their data_meta (pyinfra 3.10).
UNDECLARED_CONNECTOR_KEYS = frozenset({"chroot_directory", "docker_image", "docker_container_id", "server_group",
                                       "server_group_node_ips"})


@functools.cache
def connector_keys() -> frozenset[str]:
    """Host data that pyinfra itself reads, named one by one as pyinfra declares them: each connector's own
    keys (ssh_user, ssh_key, fake_responses, ...) and the operations' global arguments (_sudo, _env, ...)."""
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {name for name, _ in all_global_arguments() if name.startswith("_")} | UNDECLARED_CONNECTOR_KEYS
    for connector in get_all_connectors().values():
        keys |= set(getattr(connector, "data_meta", None) or ())
    return frozenset(keys)


# Settings that may be absent or None: their meaning when unset is described in group_data/all.py.
OPTIONAL = {row.name: None for row in TABLE if row.optional}


def setting_names() -> tuple[str, ...]:
    """Every setting lorafleet knows: the fields of `Settings` that come from group_data."""
    return tuple(f.name for f in fields(Settings) if f.name not in ("secrets", "warnings", "served_dtype"))


def unknown_keys(data: Mapping[str, Any]) -> list[str]:
    """One problem per key in host data that is neither a setting nor pyinfra's own, with the nearest known name.

    A name of the user's own in group data (a helper value or function) starts with `_`, as in Python.
    """
    known, connector = setting_names(), connector_keys()
    problems = []
    for key in sorted(data):
        value = data[key]
        if key in known or key in connector or callable(value) or isinstance(value, ModuleType):
            continue
        if key.startswith("_"):
            continue  # the user's own helper, which pyinfra keeps in host data and lorafleet never reads
        near = difflib.get_close_matches(key.lower(), known, n=1)
        hint = f"did you mean {near[0]}?" if near else "see group_data/all.py for every setting"
        problems.append(f"{key} is not a lorafleet setting: {hint} (settings are lower case; remove it, correct its "
                        "name, or start a helper of your own with _)")
    return problems


def build_settings(
    data: Mapping[str, Any], secrets: Secrets, check_sources: bool = True, plan_only: bool = False,
    removing: bool = False,
) -> Settings:
    """Validate host data into `Settings`, or raise `SettingsError` naming every bad setting.

    `check_sources`: also check the folders this laptop uploads (settings_folders.py); a router-only
    host (serve_models = False) uploads nothing, so nothing is checked for it.
    `plan_only` (a dry run): what only the real run needs, such as HF_TOKEN, is a warning, not an error.
    `removing` (remove.py): it writes no secret and uploads nothing, so neither the secrets nor this
    laptop's folders are checked, and the deploy's warnings are not repeated.
    """
    settings, problems = read_settings(data, secrets, plan_only, removing)
    settings, on_laptop = check_laptop_folders(settings, data.get("adapters"),
                                               check=check_sources and settings.serve_models and not removing)
    problems += on_laptop
    if problems:
        raise SettingsError(problems)
    return settings


def read_settings(
    data: Mapping[str, Any], secrets: Secrets, plan_only: bool = False, removing: bool = False
) -> tuple[Settings, list[str]]:
    """The settings and every problem found without reading the disk (pure).

    An `upload` base model is still the folder as written; `check_laptop_folders` resolves it.
    `removing`: the rules about secrets (SECRET_RULES) and the run's (RUN_RULES) do not apply, nor the warnings.
    """
    problems = unknown_keys(data)
    values = {row.name: row.read(data, problems) for row in TABLE}
    values["adapters"] = tuple(parse_adapters(values["adapters"], values["served_model_name"],
                                              values["base_model_source"], problems))
    if values["max_cpu_loras"] is None:
        values["max_cpu_loras"] = default_max_cpu_loras(values["max_loras"], len(values["adapters"]))
    settings = Settings(**values, secrets=secrets, served_dtype="" if values["dtype"] == "auto" else values["dtype"])
    rules = [rule for rule in CROSS_RULES if not (removing and rule in SECRET_RULES)]
    problems += [problem for rule in rules for problem in rule(settings)]
    later = [problem for rule in RUN_RULES for problem in rule(settings)] if not removing else []  # a dry run may plan past
    warnings = [warning for rule in WARNINGS for warning in rule(settings)] if not removing else []
    if plan_only:
        warnings += [f"the real deploy will stop here: {problem}" for problem in later]
    else:
        problems += later
    return replace(settings, warnings=tuple(warnings)), problems


def default_max_cpu_loras(max_loras: int, adapter_count: int) -> int:
    """Room for every declared adapter in vLLM's CPU cache (beyond it they are evicted and reloaded).

    A power of two of at least 64, not the adapter count itself: the value is an engine flag, and
    an adapter added or removed must not change it (that would restart vLLM). It changes only when
    the count crosses 64, 128, ...
    """
    return max(max_loras, 1 << max(6, (max(adapter_count, 1) - 1).bit_length()))


# --- Rules that read two settings or more: each yields its problems ---------------------------

def hub_repo_id(s: Settings) -> Iterable[str]:
    if s.base_model_source == "hub" and s.base_model and not HUB_REPO.fullmatch(s.base_model):
        yield f"base_model={s.base_model!r} is not a hub repo id like 'google/functiongemma-270m-it'"


def cpu_cache_holds_adapters(s: Settings) -> Iterable[str]:
    """A max_cpu_loras that is set leaves room for max_loras and every adapter (the derived one always does)."""
    count = len(s.adapters)
    if s.max_loras and s.max_cpu_loras < s.max_loras:
        yield (f"max_cpu_loras={s.max_cpu_loras} is below max_loras={s.max_loras}: vLLM refuses this; "
               f"set max_cpu_loras to at least {max(s.max_loras, count)} (or leave it unset)")
    elif s.max_cpu_loras < count:
        yield (f"max_cpu_loras={s.max_cpu_loras} is below the {count} declared adapters: they would be evicted "
               f"and reloaded constantly; set it to at least {count} (or leave it unset)")


def storage_roots_apart(s: Settings) -> Iterable[str]:
    roots = {"models_root": s.models_root, "adapters_root": s.adapters_root,
             "cache_root": s.cache_root, "stack_dir": s.stack_dir}
    for key, path in roots.items():
        for other, other_path in roots.items():
            if key < other and path and other_path and (
                path == other_path or path.startswith(other_path + "/") or other_path.startswith(path + "/")
            ):
                yield f"{key}={path} and {other}={other_path} overlap: give each its own folder"


def gateway_named(s: Settings) -> Iterable[str]:
    if s.network_mode == "gateway" and not s.gateway_container:
        yield "gateway_container is empty but network_mode='gateway': name the gateway's container"


# The server is never left open by accident: no key only when asked for by name, no key outside the env file.
def api_key_or_asked_for_none(s: Settings) -> Iterable[str]:
    if not s.secrets.api_key and not s.serve_without_api_key:
        yield ("no API key: generate_api_key is False and LORAFLEET_API_KEY is not set, so anyone who reaches the "
               "port could call every model and load adapters from any path; set LORAFLEET_API_KEY, set "
               "generate_api_key = True, or (on a closed network only) serve_without_api_key = True")


# What the deploy sets itself: vllm_env and extra_vllm_args add to it, never undo it. Each names the setting
# that owns it, or (starting with "because") why the deploy alone sets it.
MANAGED_ENV = {
    "VLLM_API_KEY": "LORAFLEET_API_KEY (the 0600 env file)",
    "HF_HOME": "cache_root", "VLLM_CACHE_ROOT": "cache_root",
    "HF_HUB_OFFLINE": "because models are fetched by the deploy, never by the server",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "because adapters change without a restart through it",
    "LORAFLEET_MANIFEST": "because the entrypoint loads the deploy's adapter manifest from it",
    "LORAFLEET_PORT": "port", "VLLM_CPU_KVCACHE_SPACE": "cpu_kvcache_space_gib",
    "VLLM_WSL2_ENABLE_PIN_MEMORY": "wsl_pin_memory",
}
# Defaults of the deploy's that vllm_env may change: tuning, not a guarantee.
TUNABLE_ENV = {"LORAFLEET_NICE": "vLLM's CPU priority (10 by default; 0 runs it at normal priority)"}
MANAGED_FLAGS = {
    "api-key": "LORAFLEET_API_KEY (the 0600 env file)", "model": "base_model", "served-model-name": "served_model_name",
    "host": "network_mode and publish_address", "port": "port", "enable-lora": "because every adapter is a LoRA",
    "lora-modules": "adapters", "max-loras": "max_loras", "max-lora-rank": "max_lora_rank",
    "max-cpu-loras": "max_cpu_loras", "max-num-seqs": "max_num_seqs", "max-model-len": "max_model_len",
    "enable-prefix-caching": "enable_prefix_caching", "enable-chunked-prefill": "enable_chunked_prefill",
    "tool-parser-plugin": "tool_call_parser", "enable-auto-tool-choice": "enable_tool_calling",
    "tool-call-parser": "tool_call_parser", "gpu-memory-utilization": "gpu_memory_utilization", "dtype": "dtype",
    "config": "because a file of flags could undo any of the above",
}
# Flags vLLM appends to: extra_vllm_args may add its own (a middleware of the user's runs beside the deploy's).
APPENDED_FLAGS = {"middleware": "the deploy's lorafleet_middleware stays whatever is added"}


def _fix(owner: str) -> str:
    return f"remove it ({owner})" if owner.startswith("because") else f"remove it; set {owner} instead"


def vllm_flag(arg: str) -> str | None:
    """The flag an argument sets, as vLLM's parser reads it: `--max_loras=4` and `--no-enable-lora` name
    max-loras and enable-lora; a value (no leading dash) names none."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.lstrip("-").split("=", 1)[0].replace("_", "-").lower()
    return name.removeprefix("no-") if name.removeprefix("no-") in MANAGED_FLAGS else name


def api_key_fits_its_env_file(s: Settings) -> Iterable[str]:
    """The key reaches vLLM through compose's env file exactly, or not at all (never the key itself in a message)."""
    why = envfile.problem(s.secrets.api_key)
    if why:
        yield (f"LORAFLEET_API_KEY {why}: compose's env file could not carry it exactly; use a key of letters, digits "
               "and punctuation on one line (or unset it and let the deploy generate one)")


def hf_token_on_one_line(s: Settings) -> Iterable[str]:
    """HF_TOKEN reaches the downloads through `docker run --env-file`, which takes each line literally."""
    if any(c in s.secrets.hf_token for c in "\n\r\0"):
        yield "HF_TOKEN holds a line break or a NUL character: copy the token again, on one line"


def vllm_env_adds_only(s: Settings) -> Iterable[str]:
    for name in sorted(dict(s.vllm_env)):
        if name == "VLLM_API_KEY":
            yield ("vllm_env sets VLLM_API_KEY: it would override the key of the 0600 env file (and an empty one switches "
                   "the key off); remove it and set LORAFLEET_API_KEY in the environment or .secrets.env")
        elif name in MANAGED_ENV:
            yield f"vllm_env sets {name}, which the deploy sets itself: {_fix(MANAGED_ENV[name])}"


def extra_vllm_args_add_only(s: Settings) -> Iterable[str]:
    for arg in s.extra_vllm_args:
        flag = vllm_flag(arg)
        if flag == "api-key":
            yield ("extra_vllm_args carries --api-key: the key would show in the process list and `docker inspect`; "
                   "remove it and set LORAFLEET_API_KEY in the environment or .secrets.env")
        elif flag in MANAGED_FLAGS:
            yield f"extra_vllm_args carries {arg.split('=', 1)[0]}, which the deploy sets itself: {_fix(MANAGED_FLAGS[flag])}"


def published_beyond_loopback_on_purpose(s: Settings) -> Iterable[str]:
    if _publishes_beyond_loopback(s) and not s.publish_beyond_loopback:
        yield (f"publish_address={s.publish_address!r} publishes vLLM beyond this host: set "
               "publish_beyond_loopback = True to mean it, or use 127.0.0.1")


def hf_token_for_gated_model(s: Settings) -> Iterable[str]:
    if s.serve_models and s.base_model_source == "hub" and s.base_model_gated and not s.secrets.hf_token:
        yield (f"base_model={s.base_model!r} is gated on the Hugging Face hub and HF_TOKEN is not set: "
               "export HF_TOKEN (or put it in .secrets.env) from an account that accepted the model's terms")


def warn_publish_beyond_loopback(s: Settings) -> Iterable[str]:
    if _publishes_beyond_loopback(s):
        yield "publish_address is not a loopback address: vLLM answers every host that reaches that address"


def warn_more_adapters_than_max_loras(s: Settings) -> Iterable[str]:
    count = len(s.adapters)
    if s.max_loras and count > s.max_loras:
        yield (f"max_loras={s.max_loras} is below the {count} declared adapters: at most {s.max_loras} different "
               "adapters run in one batch, requests to the others wait for a slot; raise max_loras if they are busy "
               "at once")


def unpinned_hub_sources(s: Settings) -> Iterable[str]:
    """Each hub download not pinned to a commit sha, with the command that prints the sha to pin."""
    if not s.serve_models:
        return
    sources = [("base_model", s.base_model, "base_model_revision", s.base_model_revision)] \
        if s.base_model_source == "hub" else []
    sources += [(f"adapters (name={a.name!r}): hub", a.source, "its 'revision'", a.revision)
                for a in s.adapters if a.kind == "hub"]
    for where, repo, setting, revision in sources:
        if not COMMIT_SHA.fullmatch(revision):
            yield (f"{where}={repo!r} is not pinned: revision {revision!r} is not a full commit sha (a branch or tag "
                   f"can be moved by the repo's owner, so a later download may bring other weights); set {setting} to the commit sha that "
                   f"`git ls-remote https://huggingface.co/{repo} {revision}` prints"
                   + (" (require_pinned_revisions = True)" if s.require_pinned_revisions else
                      " (require_pinned_revisions = True makes this an error)"))


def pinned_when_required(s: Settings) -> Iterable[str]:
    if s.require_pinned_revisions:
        yield from unpinned_hub_sources(s)


def warn_unpinned(s: Settings) -> Iterable[str]:
    if not s.require_pinned_revisions:
        yield from unpinned_hub_sources(s)


def warn_float16(s: Settings) -> Iterable[str]:
    warning = gpu.float16_warning(s.dtype)
    if warning:
        yield warning


def _publishes_beyond_loopback(s: Settings) -> bool:
    try:
        loopback = ipaddress.ip_address(s.publish_address).is_loopback
    except ValueError:
        loopback = True  # publish_address's own rule reports it
    return s.network_mode == "publish" and not loopback


CrossRule = Callable[[Settings], Iterable[str]]
CROSS_RULES: tuple[CrossRule, ...] = (
    hub_repo_id, cpu_cache_holds_adapters, storage_roots_apart, gateway_named,
    api_key_or_asked_for_none, api_key_fits_its_env_file, hf_token_on_one_line, vllm_env_adds_only,
    extra_vllm_args_add_only,
    published_beyond_loopback_on_purpose, pinned_when_required,
)
RUN_RULES: tuple[CrossRule, ...] = (hf_token_for_gated_model,)  # only the real run needs these: a dry run warns
# The secrets a deploy writes into env files: remove.py writes none, so a laptop without the key can retire a box.
SECRET_RULES: tuple[CrossRule, ...] = (api_key_or_asked_for_none, api_key_fits_its_env_file, hf_token_on_one_line)
WARNINGS: tuple[CrossRule, ...] = (warn_publish_beyond_loopback, warn_more_adapters_than_max_loras, warn_float16,
                                   warn_unpinned)
