"""The serving image's plan: the command that builds the CPU image (which image vLLM runs: stack.serving_image). Pure."""

from __future__ import annotations

import shlex

from lorafleet.deploy.settings import Settings
from lorafleet.deploy.stack import host_script, paths, serving_image


def cpu_build_command(s: Settings) -> str:
    """Build the CPU serving image (build.sh: the classic builder, its steps shown as it goes)."""
    return shlex.join(["bash", host_script(s, "build.sh"), serving_image(s), paths(s).cpu_build_dir,
                       f"BASE_IMAGE={s.cpu_base_image}"])
