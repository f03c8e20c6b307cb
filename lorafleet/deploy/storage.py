"""Storage: the storage roots, the cache folders, the stack folder and the scripts it serves from; and, for
remove.py, the stack folder's files removed and the roots remove_purge names emptied of what the deploy put there."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.operations import files, server

from lorafleet.deploy import layout, removal, stack
from lorafleet.deploy.facts import StorageContent
from lorafleet.deploy.rules import PURGEABLE_ROOTS
from lorafleet.deploy.ops import shipped
from lorafleet.deploy.settings import Settings


def ensure(s: Settings) -> None:
    p = stack.paths(s)
    folders = [*(layout.cache_dir(s.cache_root, v) for v in layout.CACHE_FOLDERS), p.stack_dir, p.serve_dir, p.bin_dir]
    if not s.serve_models:  # a router-only host: the stack folder and the scripts (build.sh builds the router)
        folders = [p.stack_dir, p.bin_dir]
    elif s.create_storage_roots:
        folders = [s.models_root, s.adapters_root, s.cache_root, *folders]
    for folder in folders:
        files.directory(name=f"Ensure folder {folder}", path=folder, present=True)
    files.directory(name=f"Ensure private folder {p.secrets_dir}", path=p.secrets_dir, mode="700", present=True)
    # Needed before the adapters step: hub downloads are checked with adapter_check.py.
    for name, source in sorted(layout.SERVE_FILES.items()) if s.serve_models else ():
        files.put(name=f"Upload {name}", src=shipped(source), dest=f"{p.serve_dir}/{name}")
    for name, source in sorted(layout.HOST_SCRIPTS.items()):
        files.put(name=f"Upload {name}", src=shipped(source), dest=f"{p.bin_dir}/{name}", mode="755")


def remove(s: Settings, routes: bool) -> None:
    """Remove what the deploy wrote in the stack folder for this host's stack (removal.stack_files); the folder stays."""
    paths, folders = removal.stack_files(s, routes)
    for path in paths:
        files.file(name=f"Remove {path}", path=path, present=False)
    for folder in folders:
        files.directory(name=f"Remove {folder}", path=folder, present=False)


def purge(s: Settings) -> None:
    """Empty each root remove_purge names of what the deploy put there (removal.purge_targets); say which roots stay."""
    roots = removal.purge_roots(s)
    for key, root in roots.items():
        content = host.get_fact(StorageContent, root=root, paths=removal.probed_paths(s, key))
        targets = removal.purge_targets(s, key, content)
        if targets:
            server.shell(name=f"Purge {key}: what the deploy put in {root}", commands=removal.purge_commands(root, targets))
    kept = [f"{key}={getattr(s, key)}" for key in PURGEABLE_ROOTS.values() if key not in roots]
    if s.serve_models and kept:
        logger.info(f"{host.name}: kept {', '.join(kept)} (remove_purge names the roots to empty: {', '.join(PURGEABLE_ROOTS)})")
