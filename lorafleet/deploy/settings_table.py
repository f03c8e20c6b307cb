"""The settings table: one row per setting, naming the rule its value must meet.

A row's default is not here: it is in group_data/all.py (with the reason for it). A rule takes the
setting's name, its value as given (None when unset) and the list of problems; it returns the value
`Settings` keeps, and adds one problem per way the value is wrong, naming the setting, the value and
the fix. Rules that read two settings at once are in settings.py; those that read the laptop's
disk are in settings_folders.py.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping

from lorafleet.deploy.rules import (
    ALLOWED_LORA_RANKS, BASE_MODEL_SOURCES, COMPOSE_PROJECT, CONTAINER_NAME, CPUSET, DTYPES, HOSTNAME, IMAGE_REF, NETWORK_MODES,
    PARSER_NAME, PROFILES, PURGEABLE_ROOTS, REVISION, SAFE_PATH, SECRET_FOLDERS, SERVED_NAME, SYSTEM_FOLDERS, SYSTEM_FOLDERS_DEEP, TAG,
    cpuset_ranges,
)

Rule = Callable[[str, Any, list[str]], Any]


@dataclass(frozen=True)
class Row:
    """One setting: its name, its rule, and whether group_data/all.py may leave it unset (None)."""

    name: str
    rule: Rule
    optional: bool = False  # None means "derive it" (see all.py); a required setting left at None is reported

    def read(self, data: Mapping[str, Any], problems: list[str]) -> Any:
        """The setting's value from host data (where None counts as absent), checked by the rule."""
        value = data.get(self.name)
        if value is None and not self.optional:
            problems.append(f"{self.name} is not set: add it to group_data/all.py")
        return self.rule(self.name, value, problems)


# --- Rules: each one kind of value, with the message that names the fix ---------------------------

def one_of(allowed: tuple) -> Rule:
    def rule(key: str, value: Any, problems: list[str]) -> str:
        if value is not None and value not in allowed:
            problems.append(f"{key}={value!r} is not allowed: use one of {', '.join(map(str, allowed))}")
        return value or ""
    return rule


def whole(low: int, high: int | None = None) -> Rule:
    def rule(key: str, value: Any, problems: list[str]) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}={value!r} must be a whole number")
            return 0
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.append(f"{key}={value} is out of range: use a number {bound}")
        return value
    return rule


def flag(key: str, value: Any, problems: list[str]) -> bool:
    if value is not None and not isinstance(value, bool):
        problems.append(f"{key}={value!r} must be True or False")
    return bool(value)


def text(key: str, value: Any, problems: list[str]) -> str:
    return str(value or "")


def matching(regex: re.Pattern, fix: str, refuse_suffix: str | None = None) -> Rule:
    """Text the regex matches in full; `fix` completes the message "<key>=<value> ..."."""
    def rule(key: str, value: Any, problems: list[str]) -> str:
        value = str(value or "")
        if not regex.fullmatch(value) or (refuse_suffix and value.endswith(refuse_suffix)):
            problems.append(f"{key}={value!r} {fix}")
        return value
    return rule


def unless_empty(rule: Rule) -> Rule:
    """An optional text: empty (or None) means "derive it"; anything else must meet `rule`."""
    return lambda key, value, problems: rule(key, value, problems) if value else ""


def or_local(rule: Rule) -> Rule:
    """"local" (the machine's own base image, resolved by the image step), or a value meeting `rule`."""
    return lambda key, value, problems: "local" if value == "local" else rule(key, value, problems)


def unless_none(rule: Rule) -> Rule:
    """An optional value: None means "derive it" (the caller does); anything else must meet `rule`."""
    return lambda key, value, problems: None if value is None else rule(key, value, problems)


def lora_rank(key: str, value: Any, problems: list[str]) -> int:
    value = whole(1)(key, value, problems)
    if value and value not in ALLOWED_LORA_RANKS:
        allowed = ", ".join(map(str, ALLOWED_LORA_RANKS))
        problems.append(f"{key}={value} is not a rank vLLM accepts: use one of {allowed}")
    return value


def fraction(key: str, value: Any, problems: list[str]) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        problems.append(f"{key}={value!r} must be a fraction in (0, 1], e.g. 0.85")
        return 0.0
    return float(value)


def storage_path(key: str, value: Any, problems: list[str]) -> str:
    """An absolute folder on the host, normalised, that volume specs and shell commands can carry."""
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
            f"{key}={value!r} must be a folder below / of letters, digits, . _ - @ + ' and spaces inside a name "
            "(no ':', '$', quotes or backslashes, which volume specs, compose or a shell would read)"
        )
    elif reason := protected_folder(value):
        problems.append(f"{key}={value!r} {reason}: choose a folder of your own")
    return value


def protected_folder(path: str) -> str | None:
    """Why the deploy must never write into `path` (a normalised absolute path), or None."""
    if path in SYSTEM_FOLDERS or any(path == f or path.startswith(f + "/") for f in SYSTEM_FOLDERS_DEEP):
        return "is a system folder the deploy would write into"
    if any(part in SECRET_FOLDERS for part in PurePosixPath(path).parts):
        return "is inside a folder of secrets (.ssh and the like)"
    return None


def ip_address(key: str, value: Any, problems: list[str]) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        problems.append(f"{key}={value!r} is not an IP address: use 127.0.0.1 (this host only)")
        return str(value)


def tailscale_tags(key: str, value: Any, problems: list[str]) -> str:
    tags = "" if value is None else str(value)
    if tags and not all(TAG.fullmatch(tag) for tag in tags.split(",")):
        problems.append(f"{key}={tags!r} must be comma-separated Tailscale tags like 'tag:gpu,tag:lorafleet'")
    return tags


def strings(key: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    value = value or []
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        problems.append(f"{key}={value!r} must be a list of strings, e.g. ['--seed', '0']")
        return ()
    return tuple(value)


def environment(key: str, value: Any, problems: list[str]) -> tuple[tuple[str, str], ...]:
    value = value or {}
    if not isinstance(value, Mapping):
        problems.append(f"{key}={value!r} must be a mapping of variable name to value")
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def roots_to_purge(key: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    """A list of storage roots by their short names (rules.PURGEABLE_ROOTS), each once; [] keeps them all."""
    value = [] if value is None else value
    names = ", ".join(f'"{name}"' for name in PURGEABLE_ROOTS)
    if (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)
            or set(value) - set(PURGEABLE_ROOTS)):
        problems.append(f"{key}={value!r} is not allowed: use a list of the storage roots remove.py empties of what "
                        f"the deploy put there, any of {names}, e.g. [\"cache\"] (on the command line: "
                        f"--data '{key}=[\"cache\"]'), or [] to keep them all")
        return ()
    return tuple(dict.fromkeys(value))


def cpuset(key: str, value: Any, problems: list[str]) -> str:
    """CPUs as docker's --cpuset-cpus takes them, each range written low to high; empty: every CPU. The number 0
    is CPU 0 here, not "empty" as unless_empty would read it."""
    if value is None or value == "":
        return ""
    value = str(value)
    if not CPUSET.fullmatch(value) or any(low > high for low, high in cpuset_ranges(value)):
        problems.append(f"{key}={value!r} is not a CPU list: write CPUs as docker's --cpuset-cpus takes them, "
                        "e.g. \"0-3\" or \"0,2,4-7\" (empty: every CPU)")
    return value


def as_given(key: str, value: Any, problems: list[str]) -> Any:
    """Checked with other settings, in settings.py (adapters need served_model_name and base_model_source)."""
    return value


PINNED_IMAGE = matching(IMAGE_REF, "must name a pinned tag (e.g. vllm/vllm-openai:v0.32.0), never latest", ":latest")
CONTAINER = matching(CONTAINER_NAME, "is not allowed: use letters, digits, '_', '.' and '-'")

# --- The table, in group_data/all.py's order (problems are listed in this order) ------------------
TABLE: tuple[Row, ...] = (
    Row("profile", one_of(PROFILES)),
    Row("cuda_image", PINNED_IMAGE),
    Row("cpu_base_image", or_local(matching(
        IMAGE_REF, "is not allowed: use an image reference with a tag, like python:3.11-slim, or 'local'"))),
    Row("cpu_image", unless_none(matching(
        IMAGE_REF, "must name a pinned tag (e.g. lorafleet/vllm-cpu:0.33.0-mine), never latest", ":latest")),
        optional=True),
    Row("base_model_source", one_of(BASE_MODEL_SOURCES)),
    Row("base_model", text),  # a hub repo id or a laptop folder, by base_model_source: settings.py checks it
    Row("base_model_revision", matching(REVISION, "is not allowed: use a branch, tag or commit sha")),
    Row("base_model_gated", flag),
    Row("served_model_name", matching(SERVED_NAME, "must be letters, digits, '.', '_', '-' or '/'")),
    Row("adapters", as_given),
    Row("check_adapter_base", flag),
    Row("require_pinned_revisions", flag),
    Row("prune_adapters", flag),
    Row("models_root", storage_path),
    Row("adapters_root", storage_path),
    Row("cache_root", storage_path),
    Row("stack_dir", storage_path),
    Row("create_storage_roots", flag),
    Row("network_mode", one_of(NETWORK_MODES)),
    Row("gateway_container", CONTAINER),
    Row("tailscale_advertise_tags", tailscale_tags),
    Row("endpoint_host", unless_empty(matching(HOSTNAME, "is not allowed: use a host name like function-gemma-server")),
        optional=True),
    Row("endpoint_url", text, optional=True),
    Row("publish_address", ip_address),
    Row("publish_beyond_loopback", flag),
    Row("port", whole(1, 65535)),
    Row("compose_project", matching(COMPOSE_PROJECT, "is not allowed: use lower-case letters, digits, '_' and '-'")),
    Row("max_loras", whole(1)),
    Row("max_lora_rank", lora_rank),
    Row("max_cpu_loras", unless_none(whole(1)), optional=True),  # None: settings.py derives it from the adapters
    Row("max_num_seqs", whole(1)),
    Row("max_model_len", whole(16)),
    Row("gpu_memory_utilization", fraction),
    Row("dtype", one_of(DTYPES)),
    Row("wsl_pin_memory", flag),
    Row("cpu_kvcache_space_gib", whole(1)),
    Row("enable_prefix_caching", flag),
    Row("enable_chunked_prefill", flag),
    Row("enable_tool_calling", flag),
    Row("tool_call_parser", matching(
        PARSER_NAME,
        "is not allowed: use lorafleet_functiongemma (the project's) or a parser vLLM ships, e.g. functiongemma")),
    Row("extra_vllm_args", strings),
    Row("vllm_env", environment),
    Row("vllm_cpuset", cpuset),
    Row("health_timeout_seconds", whole(10)),
    Row("deploy_lock_wait_seconds", whole(0)),
    Row("break_deploy_lock", flag),
    Row("remove_purge", roots_to_purge),
    Row("serve_models", flag),
    Row("router_port", whole(1, 65535)),
    Row("router_network_mode", one_of(NETWORK_MODES)),
    Row("router_gateway_container", CONTAINER),
    Row("router_endpoint_url", text, optional=True),
    Row("router_home_weight", whole(1, 1000)),
    Row("router_health_check_seconds", whole(1, 3600)),
    Row("generate_api_key", flag),
    Row("serve_without_api_key", flag),
)
