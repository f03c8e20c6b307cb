"""The base model: a hub repo at a revision, a folder from the laptop, or the demo model."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from lorafleet import plan
from lorafleet.settings import Settings


def marker_is(path: str, expected: str) -> bool:
    lines = host.get_fact(FileContents, path=path)
    return bool(lines) and lines[0].strip() == expected


def ensure_base(s: Settings) -> None:
    if s.base_model_source == "hub":
        wanted = f"{s.base_model}@{s.base_model_revision}"
        if not marker_is(f"{s.base_model_dir}/.lorafleet-source", wanted):
            server.shell(
                name=f"Download the base model {wanted}",
                commands=[plan.hub_download_command(s, s.base_model, s.base_model_revision, s.base_model_dir)],
            )
    elif s.base_model_source == "upload":
        files.sync(name=f"Upload the base model from {s.base_model}", src=s.base_model, dest=s.base_model_dir, delete=False)
    else:
        p = plan.paths(s)
        files.put(name="Upload the demo model builder", src=str(plan.DEMO_BUILDER), dest=p.demo_builder)
        if not marker_is(f"{s.demo_dir}/.lorafleet-inputs", plan.demo_inputs_hash(s)):
            server.shell(name="Build the demo model and adapters", commands=[plan.demo_build_command(s)])
