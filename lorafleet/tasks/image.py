"""The serving image: pull the pinned CUDA image, or build the CPU image from files/vllm-cpu."""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import files, server

from lorafleet import plan
from lorafleet.facts import ImageId
from lorafleet.settings import Settings


def ensure(s: Settings) -> None:
    image = plan.serving_image(s)
    present = bool(host.get_fact(ImageId, image=image))
    if s.profile == "cpu":
        files.put(
            name="Upload the CPU image's Dockerfile",
            src=str(plan.CPU_DOCKERFILE),
            dest=f"{plan.paths(s).cpu_build_dir}/Dockerfile",
        )
        if not present:
            server.shell(name=f"Build the serving image {image}", commands=[plan.cpu_build_command(s)])
        return
    if not present:
        pulled = server.shell(name=f"Pull the serving image {image}", commands=[f"docker pull {image}"])
        # Preflight could not test the GPU before the image existed; fail here, before any model download.
        server.shell(
            name="Check the GPU inside a container",
            commands=[f"docker run --rm --gpus all --entrypoint nvidia-smi {image} -L"],
            _if=pulled.did_change,
        )
