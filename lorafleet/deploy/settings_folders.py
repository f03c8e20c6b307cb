"""The settings' checks that read this laptop's disk: what the deploy uploads must be there.

Apart from settings.py's checks, which are pure; `build_settings` runs these after them.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from lorafleet.adapters.declared import folder_problems_of, served_base

if TYPE_CHECKING:
    from lorafleet.deploy.settings import Settings


def check_laptop_folders(settings: Settings, declared_adapters: Any, check: bool = True) -> tuple[Settings, list[str]]:
    """`settings` with an `upload` base model's folder made absolute (~ expanded, links resolved), and the problems
    of the folders this laptop would upload.

    `declared_adapters`: the `adapters` setting as written (a problem names an entry by its index).
    `check=False` (a host read for another's sake, or one that serves no model): the folder is resolved, not checked.
    """
    problems: list[str] = []
    if check:
        problems += _upload_missing(settings)
        problems += _adapter_folders_missing(declared_adapters)
    if settings.base_model_source == "upload":
        settings = replace(settings, base_model=str(Path(settings.base_model).expanduser().resolve()))
    if check:
        present = tuple(a for a in settings.adapters if a.kind != "path" or Path(a.source).is_dir())
        found, warned = folder_problems_of(present, settings.max_lora_rank,
                                           served_base(settings.base_model_source, settings.base_model),
                                           settings.check_adapter_base)
        problems += found
        settings = replace(settings, warnings=settings.warnings + tuple(warned))
    return settings, problems


def _upload_missing(s: Settings) -> list[str]:
    if s.base_model_source == "upload" and not Path(s.base_model).expanduser().is_dir():
        return [f"base_model={s.base_model!r} (base_model_source='upload') is not a folder on this laptop"]
    return []


def _adapter_folders_missing(declared: Any) -> Iterator[str]:
    """Each adapter entry whose one source is a `path` that is no folder here (entries as parse_adapters reads them)."""
    for index, entry in enumerate(declared if isinstance(declared, (list, tuple)) else ()):
        if not isinstance(entry, Mapping) or "name" not in entry:
            continue
        sources = [k for k in ("path", "hub", "demo") if entry.get(k)]
        if sources != ["path"]:
            continue
        where, folder = f"adapters[{index}] (name={str(entry['name'])!r}): path={entry['path']!r}", \
            Path(str(entry["path"])).expanduser()
        why = _not_a_folder(folder)
        if why:
            yield f"{where} {why}"


def _not_a_folder(folder: Path) -> str:
    """Why `folder` is no folder here, with the fix; empty when it is one."""
    try:
        if folder.is_dir():
            return ""
        folder.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # a loop of links: RuntimeError up to Python 3.12, ELOOP from 3.13
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            return "is a loop of symlinks: make it point at the adapter's folder"
        if folder.is_symlink():
            return f"is a symlink that leads nowhere ({exc.strerror}): make it point at the adapter's folder"
        return "does not exist on this laptop: fix the path or remove the entry"
    return ("is a file, not a folder: give the adapter's folder (the one holding adapter_config.json and "
            "adapter_model.safetensors)")
