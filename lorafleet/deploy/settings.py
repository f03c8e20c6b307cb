"""Settings: every knob from group_data, validated in one place before any host is touched.

`build_settings` is pure: it takes the host's data (a mapping) and the secrets
(a mapping) and returns a frozen `Settings`, or raises `SettingsError` listing
every problem, each naming the setting, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from lorafleet.deploy import layout
from lorafleet.deploy.adapters import check as adapter_check
from lorafleet.deploy.adapters.declared import Adapter, folder_problems_of, parse_adapters
from lorafleet.deploy.rules import (
    ALLOWED_LORA_RANKS, BASE_MODEL_SOURCES, COMPOSE_PROJECT, CONTAINER_NAME, HOSTNAME, HUB_REPO, IMAGE_REF, NETWORK_MODES,
    PARSER_NAME, PROFILES, REVISION, SAFE_PATH, SERVED_NAME, SYSTEM_FOLDERS, SYSTEM_FOLDERS_DEEP, TAG,
)


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
    cpu_kvcache_space_gib: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    enable_tool_calling: bool
    tool_call_parser: str
    extra_vllm_args: tuple[str, ...]
    vllm_env: tuple[tuple[str, str], ...]
    health_timeout_seconds: int
    check_adapter_base: bool
    prune_adapters: bool
    create_storage_roots: bool
    generate_api_key: bool
    serve_without_api_key: bool
    deploy_lock_wait_seconds: int
    break_deploy_lock: bool
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


# Keys of host data that belong to pyinfra's connectors (ssh_port, fake_responses, _sudo, ...), not to lorafleet.
CONNECTOR_KEY_PREFIXES = ("ssh_", "fake_", "docker_", "winrm_", "chroot_", "local_", "_")
# Settings that may be absent or None: their meaning when unset is described in group_data/all.py.
OPTIONAL = {"max_cpu_loras": None, "endpoint_url": None, "endpoint_host": None, "router_endpoint_url": None}


def setting_names() -> tuple[str, ...]:
    """Every setting lorafleet knows: the fields of `Settings` that come from group_data."""
    return tuple(f.name for f in fields(Settings) if f.name not in ("secrets", "warnings"))


def unknown_keys(data: Mapping[str, Any]) -> list[str]:
    """One problem per key in host data that is no setting, with the nearest known name."""
    known = setting_names()
    problems = []
    for key in sorted(data):
        if key in known or key.startswith(CONNECTOR_KEY_PREFIXES) or not key.islower():
            continue
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {near[0]}?" if near else "see group_data/all.py for every setting"
        problems.append(f"{key} is not a lorafleet setting: {hint} (remove it or correct its name)")
    return problems


def build_settings(
    data: Mapping[str, Any], secrets: Secrets, check_sources: bool = True, plan_only: bool = False
) -> Settings:
    """Validate host data into `Settings`, or raise `SettingsError` naming every bad setting.

    `plan_only` (a dry run): what only the real run needs, such as HF_TOKEN, is a warning, not an error.
    """
    problems: list[str] = unknown_keys(data)
    # A setting left at None counts as unset: optional ones mean "derive it", required ones are reported.
    d = {**OPTIONAL, **{k: v for k, v in data.items() if v is not None}}

    def need(key: str) -> Any:
        if key not in d:
            problems.append(f"{key} is not set: add it to group_data/all.py")
            return None
        return d[key]

    def choice(key: str, allowed: tuple) -> Any:
        value = need(key)
        if value is not None and value not in allowed:
            problems.append(f"{key}={value!r} is not allowed: use one of {', '.join(map(str, allowed))}")
        return value

    def integer(key: str, low: int, high: int | None = None) -> int:
        value = need(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}={value!r} must be a whole number")
            return 0
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.append(f"{key}={value} is out of range: use a number {bound}")
        return value

    def flag(key: str) -> bool:
        value = need(key)
        if value is not None and not isinstance(value, bool):
            problems.append(f"{key}={value!r} must be True or False")
        return bool(value)

    def abs_path(key: str) -> str:
        value = need(key)
        if value is None:
            return ""
        if not isinstance(value, str) or not PurePosixPath(value).is_absolute():
            problems.append(
                f"{key}={value!r} is not an absolute path: storage paths are bound by the Docker "
                "daemon, which resolves them on its own filesystem; give a path starting with /"
            )
            return str(value)
        parts = PurePosixPath(value).parts
        if ".." in parts:
            problems.append(f"{key}={value!r} contains '..': write the folder it means, without '..'")
            return value
        value = str(PurePosixPath(*parts))  # normalised: no '.', '//' or trailing '/'
        if not SAFE_PATH.fullmatch(value):
            problems.append(
                f"{key}={value!r} must be a folder below / of letters, digits and . _ - @ + "
                "(no spaces or ':', which break volume specs and shell commands)"
            )
        elif value in SYSTEM_FOLDERS or any(value.startswith(f + "/") for f in SYSTEM_FOLDERS_DEEP):
            problems.append(f"{key}={value!r} is a system folder the deploy would write into: choose a folder of your own")
        return value

    def pattern(key: str, regex: re.Pattern, allowed: str) -> str:
        value = str(need(key) or "")
        if not regex.fullmatch(value):
            problems.append(f"{key}={value!r} is not allowed: {allowed}")
        return value

    profile = choice("profile", PROFILES)
    network_mode = choice("network_mode", NETWORK_MODES)
    serve_models = flag("serve_models")
    # A router-only host never fetches models or adapters: what only serving needs is not asked of it.
    check_sources = check_sources and serve_models
    source = choice("base_model_source", BASE_MODEL_SOURCES)
    base_model = need("base_model") or ""
    served = need("served_model_name") or ""
    port = integer("port", 1, 65535)
    max_loras = integer("max_loras", 1)
    max_lora_rank = integer("max_lora_rank", 1)
    if max_lora_rank and max_lora_rank not in ALLOWED_LORA_RANKS:
        problems.append(
            f"max_lora_rank={max_lora_rank} is not a rank vLLM accepts: use one of "
            f"{', '.join(map(str, ALLOWED_LORA_RANKS))}"
        )

    fraction = need("gpu_memory_utilization")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1
    ):
        problems.append(f"gpu_memory_utilization={fraction!r} must be a fraction in (0, 1], e.g. 0.85")

    if source == "hub" and base_model and not HUB_REPO.fullmatch(str(base_model)):
        problems.append(f"base_model={base_model!r} is not a hub repo id like 'google/functiongemma-270m-it'")
    later: list[str] = []  # problems a dry run may plan past
    if serve_models and source == "hub" and d.get("base_model_gated") and not secrets.hf_token:
        later.append(
            f"base_model={base_model!r} is gated on the Hugging Face hub and HF_TOKEN is not set: "
            "export HF_TOKEN (or put it in .secrets.env) from an account that accepted the model's terms"
        )
    if source == "upload" and check_sources and not Path(str(base_model)).expanduser().is_dir():
        problems.append(f"base_model={base_model!r} (base_model_source='upload') is not a folder on this laptop")
    if not SERVED_NAME.fullmatch(str(served)):
        problems.append(f"served_model_name={served!r} must be letters, digits, '.', '_', '-' or '/'")

    adapters = parse_adapters(need("adapters"), served, source, problems, check_sources)

    max_cpu_loras = d.get("max_cpu_loras")
    if max_cpu_loras is None:
        max_cpu_loras = default_max_cpu_loras(max_loras, len(adapters))
    else:
        max_cpu_loras = integer("max_cpu_loras", 1)
        if max_loras and max_cpu_loras < max_loras:
            problems.append(
                f"max_cpu_loras={max_cpu_loras} is below max_loras={max_loras}: vLLM refuses this; "
                f"set max_cpu_loras to at least {max(max_loras, len(adapters))} (or leave it unset)"
            )
        elif max_cpu_loras < len(adapters):
            problems.append(
                f"max_cpu_loras={max_cpu_loras} is below the {len(adapters)} declared adapters: they "
                f"would be evicted and reloaded constantly; set it to at least {len(adapters)} (or leave it unset)"
            )

    extra = need("extra_vllm_args") or []
    if not isinstance(extra, (list, tuple)) or not all(isinstance(a, str) for a in extra):
        problems.append(f"extra_vllm_args={extra!r} must be a list of strings, e.g. ['--seed', '0']")
        extra = []
    env = need("vllm_env") or {}
    if not isinstance(env, Mapping):
        problems.append(f"vllm_env={env!r} must be a mapping of variable name to value")
        env = {}

    publish_address = _address(need("publish_address"), problems)
    publish_open = network_mode == "publish" and not _is_loopback(publish_address)
    settings = Settings(
        profile=profile or "",
        cuda_image=_image(d, "cuda_image", problems),
        cpu_base_image=pattern("cpu_base_image", IMAGE_REF, "use an image reference with a tag, like python:3.11-slim"),
        base_model_source=source or "",
        base_model=str(Path(str(base_model)).expanduser().resolve()) if source == "upload" else str(base_model),
        base_model_revision=pattern("base_model_revision", REVISION, "use a branch, tag or commit sha"),
        base_model_gated=flag("base_model_gated"),
        served_model_name=str(served),
        adapters=tuple(adapters),
        models_root=abs_path("models_root"),
        adapters_root=abs_path("adapters_root"),
        cache_root=abs_path("cache_root"),
        stack_dir=abs_path("stack_dir"),
        compose_project=pattern("compose_project", COMPOSE_PROJECT, "use lower-case letters, digits, '_' and '-'"),
        network_mode=network_mode or "",
        gateway_container=pattern("gateway_container", CONTAINER_NAME, "use letters, digits, '_', '.' and '-'"),
        publish_address=publish_address,
        publish_beyond_loopback=flag("publish_beyond_loopback"),
        serve_without_api_key=flag("serve_without_api_key"),
        deploy_lock_wait_seconds=integer("deploy_lock_wait_seconds", 0),
        break_deploy_lock=flag("break_deploy_lock"),
        port=port,
        max_loras=max_loras,
        max_lora_rank=max_lora_rank,
        max_cpu_loras=max_cpu_loras,
        max_num_seqs=integer("max_num_seqs", 1),
        max_model_len=integer("max_model_len", 16),
        gpu_memory_utilization=float(fraction or 0),
        cpu_kvcache_space_gib=integer("cpu_kvcache_space_gib", 1),
        enable_prefix_caching=flag("enable_prefix_caching"),
        enable_chunked_prefill=flag("enable_chunked_prefill"),
        enable_tool_calling=flag("enable_tool_calling"),
        tool_call_parser=pattern("tool_call_parser", PARSER_NAME, "use lorafleet_functiongemma (the project's) or a parser vLLM ships, e.g. functiongemma"),
        extra_vllm_args=tuple(extra),
        vllm_env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
        health_timeout_seconds=integer("health_timeout_seconds", 10),
        check_adapter_base=flag("check_adapter_base"),
        prune_adapters=flag("prune_adapters"),
        create_storage_roots=flag("create_storage_roots"),
        generate_api_key=flag("generate_api_key"),
        tailscale_advertise_tags=_tags(need("tailscale_advertise_tags"), problems),
        endpoint_host=pattern("endpoint_host", HOSTNAME, "use a host name like function-gemma-server") if d["endpoint_host"] else "",
        endpoint_url=str(d["endpoint_url"] or ""),
        serve_models=serve_models,
        router_port=integer("router_port", 1, 65535),
        router_network_mode=choice("router_network_mode", NETWORK_MODES) or "",
        router_gateway_container=pattern("router_gateway_container", CONTAINER_NAME, "use letters, digits, '_', '.' and '-'"),
        router_endpoint_url=str(d["router_endpoint_url"] or ""),
        router_home_weight=integer("router_home_weight", 1, 1000),
        router_health_check_seconds=integer("router_health_check_seconds", 1, 3600),
        secrets=secrets,
        warnings=tuple(_warnings(max_loras, len(adapters), publish_open) + [f"the real deploy will stop here: {p}" for p in later if plan_only]),
    )
    roots = {"models_root": settings.models_root, "adapters_root": settings.adapters_root,
             "cache_root": settings.cache_root, "stack_dir": settings.stack_dir}
    for key, path in roots.items():
        for other, other_path in roots.items():
            if key < other and path and other_path and (
                path == other_path or path.startswith(other_path + "/") or other_path.startswith(path + "/")
            ):
                problems.append(f"{key}={path} and {other}={other_path} overlap: give each its own folder")
    if settings.network_mode == "gateway" and not settings.gateway_container:
        problems.append("gateway_container is empty but network_mode='gateway': name the gateway's container")
    if check_sources:
        problems.extend(folder_problems_of(settings.adapters, settings.max_lora_rank,
                                           settings.adapter_base_name if settings.check_adapter_base else None))
    problems.extend(_door_problems(settings))
    if not plan_only:
        problems.extend(later)
    if problems:
        raise SettingsError(problems)
    return settings


def default_max_cpu_loras(max_loras: int, adapter_count: int) -> int:
    """Room for every declared adapter in vLLM's CPU cache (beyond it they are evicted and reloaded).

    A power of two of at least 64, not the adapter count itself: the value is an engine flag, and
    an adapter added or removed must not change it (that would restart vLLM). It changes only when
    the count crosses 64, 128, ...
    """
    return max(max_loras, 1 << max(6, (max(adapter_count, 1) - 1).bit_length()))


def _door_problems(s: Settings) -> list[str]:
    """The server is never left open by accident: no key only when asked for by name, no key outside the env file."""
    problems = []
    if not s.secrets.api_key and not s.serve_without_api_key:
        problems.append(
            "no API key: generate_api_key is False and LORAFLEET_API_KEY is not set, so anyone who reaches the port "
            "could call every model and load adapters from any path; set LORAFLEET_API_KEY, set "
            "generate_api_key = True, or (on a closed network only) serve_without_api_key = True"
        )
    if "VLLM_API_KEY" in dict(s.vllm_env):
        problems.append(
            "vllm_env sets VLLM_API_KEY: it would override the key of the 0600 env file (and an empty one switches the "
            "key off); remove it and set LORAFLEET_API_KEY in the environment or .secrets.env"
        )
    if any(arg == "--api-key" or arg.startswith("--api-key=") for arg in s.extra_vllm_args):
        problems.append(
            "extra_vllm_args carries --api-key: the key would show in the process list and `docker inspect`; "
            "remove it and set LORAFLEET_API_KEY in the environment or .secrets.env"
        )
    if s.network_mode == "publish" and not _is_loopback(s.publish_address) and not s.publish_beyond_loopback:
        problems.append(
            f"publish_address={s.publish_address!r} publishes vLLM beyond this host: set publish_beyond_loopback = True "
            "to mean it, or use 127.0.0.1"
        )
    return problems


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # reported by _address already


def _address(value: Any, problems: list[str]) -> str:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        problems.append(f"publish_address={value!r} is not an IP address: use 127.0.0.1 (this host only)")
        return str(value)
    return str(address)


def _tags(value: Any, problems: list[str]) -> str:
    text = "" if value is None else str(value)
    if text and not all(TAG.fullmatch(tag) for tag in text.split(",")):
        problems.append(
            f"tailscale_advertise_tags={text!r} must be comma-separated Tailscale tags like 'tag:gpu,tag:lorafleet'"
        )
    return text


def _warnings(max_loras: int, adapter_count: int, publish_open: bool) -> list[str]:
    warnings = []
    if publish_open:
        warnings.append("publish_address is not a loopback address: vLLM answers every host that reaches that address")
    if max_loras and adapter_count > max_loras:
        warnings.append(
            f"max_loras={max_loras} is below the {adapter_count} declared adapters: at most {max_loras} different "
            "adapters run in one batch, requests to the others wait for a slot; raise max_loras if they are busy at once"
        )
    return warnings


def _image(d: Mapping[str, Any], key: str, problems: list[str]) -> str:
    value = str(d.get(key) or "")
    if not IMAGE_REF.fullmatch(value) or value.endswith(":latest"):
        problems.append(f"{key}={value!r} must name a pinned tag (e.g. vllm/vllm-openai:v0.32.0), never latest")
    return value
