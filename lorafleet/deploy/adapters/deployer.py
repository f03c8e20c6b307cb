"""Adapters: each one in place under adapters_root and validated before the server sees it."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

from lorafleet.deploy import hub, layout, stack
from lorafleet.deploy.adapters import plan as adapters_plan
from lorafleet.adapters.folder import folder_version
from lorafleet.deploy.credentials import state_dir
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.facts import ManagedFolders, marker_is
from lorafleet.deploy.layout import PROJECT_ROOT
from lorafleet.deploy.ops import live
from lorafleet.deploy.settings import Settings

# Digests of laptop adapter files by size and mtime: an unchanged 2 GB weights file is not read on every run.
FINGERPRINTS = state_dir(PROJECT_ROOT) / "adapter-fingerprints.json"


def ensure(s: Settings, engine: EngineView = SAME_PATHS) -> dict[str, str]:
    """Put every declared adapter in place; returns each adapter's version for the manifest."""
    versions = {}
    for adapter in s.adapters:
        dest = s.adapter_dir(adapter.name)
        if adapter.kind == "path":
            # Validated on the laptop by the settings. The host copy equals the laptop folder: a file deleted
            # there is deleted here, so an old weights file can never shadow the new one.
            files.sync(name=f"Upload adapter {adapter.name}", src=adapter.source, dest=dest, delete=True,
                       exclude=[f"*/{layout.SOURCE_MARKER}"])
            versions[adapter.name] = folder_version(adapter.source, FINGERPRINTS)
            # The marker says lorafleet put this folder here: only such folders may ever be pruned.
            files.put(
                name=f"Mark adapter {adapter.name}",
                src=StringIO(f"path:{versions[adapter.name]}\n"),
                dest=f"{dest}/{layout.SOURCE_MARKER}",
            )
        elif adapter.kind == "hub":
            wanted = f"{adapter.source}@{adapter.revision}"
            if not marker_is(f"{dest}/{layout.SOURCE_MARKER}", wanted):
                server.shell(
                    name=f"Download and check adapter {adapter.name} ({wanted})",
                    commands=[live(hub.hub_download_command(s, adapter.source, adapter.revision, dest, check_adapter=adapter.name, engine=engine))],
                )
            versions[adapter.name] = wanted
        else:
            wanted = f"demo:{stack.demo_inputs_hash(s)}"
            if not marker_is(f"{dest}/{layout.SOURCE_MARKER}", wanted):
                server.shell(name=f"Install demo adapter {adapter.name}", commands=[adapters_plan.demo_adapter_command(s, adapter.name, wanted)])
            versions[adapter.name] = wanted
        files.link(
            name=f"Link adapter {adapter.name} at its version's path",
            path=stack.version_link(s, adapter.name, versions[adapter.name]),
            target=f"../{adapter.name}",
        )
    return versions


def prune(s: Settings) -> None:
    """Delete folders of adapters no longer declared, only when the user asked (prune_adapters).

    Only folders lorafleet put there (with its marker) are candidates: never a user's own files.
    """
    if not s.prune_adapters:
        return
    declared = {a.name for a in s.adapters}
    for folder in host.get_fact(ManagedFolders, path=s.adapters_root):
        if folder not in declared:
            server.shell(
                name=f"Prune undeclared adapter folder {folder}",
                commands=[
                    f"rm -rf {shlex.quote(s.adapter_dir(folder))}",
                    f"rm -f {shlex.quote(layout.versions_dir(s.adapters_root) + '/' + folder)}@*",
                ],
            )
