"""The serving image: pull the pinned CUDA image (or cpu_image), or build the CPU image from files/image (its base resolved first)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import files, server

from lorafleet.deploy import gpu, layout, local_base, stack
from lorafleet.deploy.facts import ImageId, LocalBaseImage
from lorafleet.deploy.image import plan as image_plan
from lorafleet.deploy.ops import live, shipped
from lorafleet.deploy.settings import Settings


def resolve_base(s: Settings) -> Settings:
    """cpu_base_image = "local" becomes the host's own base image (or python:3.11-slim): every later step uses it,
    the router's image too, whatever the profile."""
    if s.cpu_base_image != local_base.LOCAL:
        return s
    return local_base.resolved(s, host.get_fact(LocalBaseImage))


def ensure(s: Settings) -> None:
    image = stack.serving_image(s)
    present = bool(host.get_fact(ImageId, image=image))
    if s.profile == "cpu" and not s.cpu_image:
        for name, source in sorted(layout.CPU_BUILD_FILES.items()):
            files.put(name=f"Upload the CPU image's {name}", src=shipped(source),
                      dest=f"{stack.paths(s).cpu_build_dir}/{name}")
        if not present:
            server.shell(name=f"Build the serving image {image}", commands=[live(image_plan.cpu_build_command(s))])
        return
    if present:
        return
    pulled = server.shell(name=f"Pull the serving image {image}", commands=[f"docker pull {image}"])
    if s.profile == "cuda":
        # Preflight could not read the GPU before the image existed: the same query here, before any model download,
        # stops where preflight would have (a card without bf16 for a provisional bfloat16, too little memory).
        choice = gpu.choose_dtype(s.dtype, s.profile, None)
        server.shell(
            name="Check the GPU inside a container",
            commands=[gpu.pulled_check_command(s, image, choice)],
            _if=pulled.did_change,
        )
