"""Storage: the storage roots, the cache folders, the stack folder and the scripts it serves from."""

from __future__ import annotations

from pyinfra.operations import files

from lorafleet.deploy import layout, stack
from lorafleet.deploy.ops import shipped
from lorafleet.deploy.settings import Settings


def ensure(s: Settings) -> None:
    p = stack.paths(s)
    folders = [f"{s.cache_root}/huggingface", f"{s.cache_root}/vllm", p.stack_dir, p.serve_dir, p.bin_dir]
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
