"""Adapter entries as declared in group_data: parsed, checked, and their laptop folders validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lorafleet.adapters.check import DEMO_BASE_NAME, KNOWN_BASES, Base, check_adapter, identity, read_json
from lorafleet.adapters.folder import folder_problems
from lorafleet.deploy.rules import HUB_REPO, REVISION, SAFE_NAME

# The fixed `model` label values of files/serving/lorafleet_metrics.py (FIXED_LABELS): no adapter may take them.
METRICS_LABELS = ("unknown_model", "unauthorized")


@dataclass(frozen=True)
class Adapter:
    """One declared LoRA adapter: its served name and where it comes from."""

    name: str
    kind: str  # "path" (folder on the laptop), "hub" (repo at revision) or "demo"
    source: str = ""  # laptop folder or hub repo id; empty for demo adapters
    revision: str = "main"


def parse_adapters(raw: Any, served: str, source: str | None, problems: list[str]) -> list[Adapter]:
    """The `adapters` setting as Adapter records; each bad entry adds a problem naming it and the fix."""
    if not isinstance(raw, (list, tuple)):
        problems.append(f"adapters={raw!r} must be a list of {{'name': ..., 'path'|'hub'|'demo': ...}} entries")
        return []
    adapters: list[Adapter] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"adapters[{index}]"
        if not isinstance(entry, Mapping) or "name" not in entry:
            problems.append(f"{where}={entry!r} must be a mapping with a 'name'")
            continue
        name = str(entry["name"])
        where = f"adapters[{index}] (name={name!r})"
        if not SAFE_NAME.fullmatch(name) or len(name) > 64 or name.endswith(".partial"):
            problems.append(
                f"{where}: the name is not a safe identifier: use letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit, not ending in .partial)"
            )
        if name == served:
            problems.append(f"{where}: the name equals served_model_name; give the adapter its own name")
        if name.lower() in METRICS_LABELS:
            problems.append(f"{where}: the name is one the per-adapter metrics keep for requests of no adapter "
                            f"({', '.join(METRICS_LABELS)}); give the adapter another name")
        if name.lower() in seen:
            problems.append(
                f"{where}: two adapters are named {name!r} (names are compared ignoring case: they would share "
                "a folder on a Windows drive); names must be unique"
            )
        seen.add(name.lower())
        kinds = [k for k in ("path", "hub", "demo") if entry.get(k)]
        if len(kinds) != 1:
            problems.append(f"{where}: give exactly one source: 'path' (laptop folder), 'hub' (repo id) or 'demo': True")
            continue
        kind = kinds[0]
        if kind == "demo":
            if source != "demo":
                problems.append(f"{where}: demo adapters need base_model_source='demo'")
            adapters.append(Adapter(name=name, kind="demo"))
        elif kind == "hub":
            repo = str(entry["hub"])
            if not HUB_REPO.fullmatch(repo):
                problems.append(f"{where}: hub={repo!r} is not a repo id like 'you/sql-lora'")
            revision = str(entry.get("revision") or "main")
            if not REVISION.fullmatch(revision):
                problems.append(f"{where}: revision={revision!r} is not a branch, tag or commit sha")
            adapters.append(Adapter(name=name, kind="hub", source=repo, revision=revision))
        else:
            folder = str(Path(str(entry["path"])).expanduser())  # whether it exists: settings_folders.py
            adapters.append(Adapter(name=name, kind="path", source=folder))
    return adapters


def served_base(source: str, base_model: str) -> Base:
    """The served base as adapters record it: the demo's name, the hub id, or an uploaded folder.

    An uploaded folder is also known by the hub id in its config.json (`_name_or_path`) and by each
    known base (check.KNOWN_BASES) whose identity its config.json has.
    """
    if source == "demo":
        return Base.named(DEMO_BASE_NAME)
    if source != "upload":
        return Base.named(base_model)
    config = read_json(str(Path(base_model) / "config.json")) or {}
    mine = identity(config)
    names = [base_model]
    recorded = str(config.get("_name_or_path") or "")
    if HUB_REPO.fullmatch(recorded) and not Path(recorded).exists():
        names.append(recorded)
    names += [name for name, known in KNOWN_BASES.items() if mine and all(mine.get(k) == v for k, v in known.items())]
    return Base(names=tuple(dict.fromkeys(names)), config=mine, folder=base_model)


def folder_problems_of(adapters: Sequence[Adapter], max_lora_rank: int, base: Base,
                       check_base: bool = True) -> tuple[list[str], list[str]]:
    """Validate every laptop-side adapter folder before anything is uploaded: its problems and its warnings."""
    problems, warnings = [], []
    for adapter in adapters:
        if adapter.kind != "path":
            continue
        where = f"adapters (name={adapter.name!r}) at {adapter.source}"
        found, warned = check_adapter(adapter.source, max_lora_rank, base, check_base)
        problems += [f"{where}: {issue}" for issue in found + folder_problems(adapter.source)]
        warnings += [f"{where}: {warning}" for warning in warned]
    return problems, warnings
