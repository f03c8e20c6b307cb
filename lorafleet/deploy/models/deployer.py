"""The base model: a hub repo at a revision, a folder from the laptop, or the demo model."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from lorafleet.deploy import hub, layout, stack
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.facts import marker_is, says_and_lists
from lorafleet.deploy.models import plan as models_plan
from lorafleet.deploy.ops import live, shipped
from lorafleet.deploy.settings import Settings


def ensure_base(s: Settings, engine: EngineView = SAME_PATHS) -> None:
    if s.base_model_source == "hub":
        wanted = f"{s.base_model}@{s.base_model_revision}"
        if not marker_is(f"{s.base_model_dir}/{layout.SOURCE_MARKER}", wanted):
            server.shell(
                name=f"Download the base model {wanted}",
                commands=[live(hub.hub_download_command(s, s.base_model, s.base_model_revision, s.base_model_dir, engine=engine))],
            )
    elif s.base_model_source == "upload":
        files.sync(name=f"Upload the base model from {s.base_model}", src=s.base_model, dest=s.base_model_dir, delete=False)
    else:
        p = stack.paths(s)
        for name, source in layout.DEMO_FILES.items():
            files.put(name=f"Upload the demo builder's {name}", src=shipped(source), dest=f"{p.demo_builder_dir}/{name}")
        marker, inputs = host.get_fact(FileContents, path=f"{s.demo_dir}/{layout.INPUTS_MARKER}"), stack.demo_inputs_hash(s)
        if not says_and_lists(marker, inputs, stack.demo_adapter_names(s)):
            # The same inputs but another adapter declared: the build keeps those it holds (another box's).
            held = [line.strip() for line in marker[1:]] if says_and_lists(marker, inputs, ()) else []
            server.shell(name="Build the demo model and adapters",
                         commands=[live(models_plan.demo_build_command(s, engine, keep=held))])
