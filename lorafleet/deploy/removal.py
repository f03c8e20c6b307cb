"""What remove.py removes and what it keeps, as pure functions of settings and facts.

Removed: the serving stack's containers and networks (the fleet's router's too, on its host), and what
the deploy wrote in the stack folder for them (`stack_files`), the secrets env files among them.
Kept: the stack folder itself; everything of the gateway's, which the run connects through (its
container, its project in {stack_dir}/gateway, its key in {stack_dir}/secrets); the images; and the
storage roots, unless remove_purge names one: then what the deploy put there goes (`purge_targets`),
and the root itself and anything else in it stay. The steps' deployers carry these out.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Iterable, Mapping

from lorafleet.deploy import layout
from lorafleet.deploy.rules import PURGEABLE_ROOTS
from lorafleet.deploy.settings import Settings

# vLLM stops in seconds on SIGTERM (its init forwards the signal); one that hangs is killed after this.
STOP_SECONDS = 30


def project_commands(found: Mapping[str, list[str]], keep: Iterable[str]) -> list[str]:
    """Stop and remove a compose project's containers, then its networks; [] when the engine has none of them.

    `found`: the ComposeProject fact. `keep`: containers never touched, whatever their label (the gateways);
    if one of them carries the project's label, its networks stay too (a gateway may be attached to them).
    """
    keep = set(keep)
    containers = sorted(set(found.get("containers", ())) - keep)
    commands = []
    if containers:
        commands.append(f"{shlex.join(['docker', 'stop', '--time', str(STOP_SECONDS), *containers])} >/dev/null && "
                        f"{shlex.join(['docker', 'rm', '-v', *containers])} >/dev/null")
    if found.get("networks") and not keep & set(found.get("containers", ())):
        commands.append(f"{shlex.join(['docker', 'network', 'rm', *sorted(found['networks'])])} >/dev/null")
    return commands


def stack_files(s: Settings, routes: bool) -> tuple[list[str], list[str]]:
    """The files and the folders the deploy wrote in the stack folder for what this host runs: (files, folders).

    Never the gateway's project (gateway/) or key (secrets/gateway.env, secrets/router-gateway.env), the
    router gateway's compose file, nor the deploy lock (the lock step takes and gives it back).
    """
    p = layout.StackPaths(s.stack_dir)
    files, folders = [], [p.bin_dir]
    if s.serve_models:
        files += [p.compose_file, p.last_good, p.failed, p.env_file, p.hub_env_file, p.env_applied]
        folders += [p.serve_dir, p.cpu_build_dir, p.demo_builder_dir]
    if routes:
        files.append(p.router_compose_file)
        folders += [p.router_build_dir, p.router_run_dir]
    return files, folders


def purge_roots(s: Settings) -> dict[str, str]:
    """The storage roots remove_purge names, by setting (`{"cache_root": "/mnt/d/AI_Models/cache"}`).

    None on a host that serves no model: a router-only host has no storage roots.
    """
    if not s.serve_models:
        return {}
    return {PURGEABLE_ROOTS[name]: getattr(s, PURGEABLE_ROOTS[name]) for name in s.remove_purge}


def probed_paths(s: Settings, key: str) -> tuple[str, ...]:
    """Paths below a root's top that the deploy makes without a marker: the StorageContent fact checks each."""
    if key == "models_root" and s.base_model_source == "hub":
        return (s.base_model_dir + layout.STAGING_SUFFIX,)  # a download cut short
    return ()


def _own_names(s: Settings, key: str, entries: Iterable[str]) -> set[str]:
    """Names at a root's top that the deploy makes there, marked or not."""
    entries = set(entries)
    if key == "models_root":
        names = {layout.DEMO_FOLDER}  # the demo build: marked only once complete
        if s.base_model_source == "upload":
            names.add(PurePosixPath(s.base_model_dir).name)
        return names & entries
    if key == "adapters_root":
        # An adapter's name never ends in .partial (settings refuse it): such a folder is a copy cut short.
        return {layout.VERSIONS_DIR, *(e for e in entries if e.endswith(layout.STAGING_SUFFIX))} & entries
    return set(layout.CACHE_FOLDERS.values()) & entries


def purge_targets(s: Settings, key: str, content: Mapping[str, list[str]]) -> tuple[str, ...]:
    """What the deploy put in the root `key` names, from the StorageContent fact: folders holding lorafleet's
    markers (hub downloads, adapters, the demo build), the names it makes there (`_own_names`), and the
    probed paths found present. Each strictly inside the root, none inside another."""
    root = getattr(s, key)
    found = {*content.get("marked", ()), *content.get("present", ()),
             *(f"{root}/{name}" for name in _own_names(s, key, content.get("entries", ())))}
    inside = sorted(p for p in found if p.startswith(root + "/") and ".." not in PurePosixPath(p).parts
                    and PurePosixPath(p) != PurePosixPath(root))
    return tuple(p for p in inside if not any(p.startswith(other + "/") for other in inside))


def purge_commands(root: str, targets: Iterable[str]) -> list[str]:
    """Remove each target; then its folder, if that is not the root and is left empty (a hub repo's revisions)."""
    targets = list(targets)
    parents = {str(PurePosixPath(t).parent) for t in targets} - {root, *targets}
    return ([shlex.join(["rm", "-rf", t]) for t in targets]
            + [f"{shlex.join(['rmdir', parent])} 2>/dev/null || true" for parent in sorted(parents, reverse=True)])
