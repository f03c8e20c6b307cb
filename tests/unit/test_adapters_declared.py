"""Adapter entries as the user declares them: every shape parsed, written out against a golden file.

tests/fixtures/adapters_declared.txt holds, for each `adapters` value, the records kept and every
problem reported; then the served base each base source yields, and the laptop folders' messages.
After a deliberate change, write it anew with LORAFLEET_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorafleet.adapters.check import DEMO_BASE_NAME, KNOWN_BASES
from lorafleet.adapters.declared import folder_problems_of, parse_adapters, served_base
from tests.unit.test_adapter_check import SERVED, adapter
from tests.support.golden import matches_golden

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "adapters_declared.txt"
SHA = "0123456789abcdef0123456789abcdef01234567"

DECLARED = [
    ("not a list", "sql", "hub"),
    ("a mapping, not a list", {"name": "sql"}, "hub"),
    ("empty", [], "hub"),
    ("one of each source", [{"name": "sql", "hub": "acme/sql-lora", "revision": SHA}, {"name": "w", "path": "~/w"},
                            {"name": "d", "demo": True}], "demo"),
    ("a hub adapter without revision", [{"name": "sql", "hub": "acme/sql-lora"}], "hub"),
    ("a hub adapter with an empty revision", [{"name": "sql", "hub": "acme/sql-lora", "revision": ""}], "hub"),
    ("a bad hub id and revision", [{"name": "sql", "hub": "not a repo", "revision": "a b"}], "hub"),
    ("a demo adapter on a hub base", [{"name": "d", "demo": True}], "hub"),
    ("no source", [{"name": "sql"}], "hub"),
    ("two sources", [{"name": "sql", "hub": "a/b", "path": "/x"}], "hub"),
    ("a false source", [{"name": "sql", "demo": False}], "demo"),
    ("an entry without a name", [{"hub": "a/b"}], "hub"),
    ("an entry that is a string", ["sql"], "hub"),
    ("a nameless entry, then a good one", [{"hub": "a/b"}, {"name": "sql", "hub": "a/b", "revision": SHA}], "hub"),
    ("an entry without a source, then a good one", [{"name": "x"}, {"name": "sql", "hub": "a/b", "revision": SHA}], "hub"),
    ("names: unsafe, too long, .partial, empty", [{"name": n, "hub": "a/b", "revision": SHA}
                                                  for n in ("../x", "a" * 65, "a" * 64, "x.partial", "", "-x", "x y")], "hub"),
    ("the served name, a metrics label, duplicates by case", [
        {"name": n, "hub": "a/b", "revision": SHA} for n in ("served-name", "unauthorized", "UNKNOWN_MODEL", "Sql", "sql", "sql")], "hub"),
]


def test_every_declaration_reads_as_the_golden_file_says(tmp_path, monkeypatch):
    lines = []
    for name, raw, source in DECLARED:
        problems: list[str] = []
        adapters = parse_adapters(raw, "served-name", source, problems)
        lines.append(f"== {name} (base_model_source={source})")
        lines += [f"  {a!r}" for a in adapters] + [f"! {p}" for p in problems]
    upload = tmp_path / "my-base"
    upload.mkdir()
    (upload / "config.json").write_text(json.dumps({**KNOWN_BASES["google/functiongemma-270m-it"],
                                                    "_name_or_path": "google/functiongemma-270m-it"}))
    odd = tmp_path / "odd-base"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "llama", "_name_or_path": "/content/x"}))
    finetuned = tmp_path / "finetuned"
    finetuned.mkdir()
    (finetuned / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "_name_or_path": "ana/fg-tuned"}))
    named_by_a_folder = tmp_path / "named-by-a-folder"
    named_by_a_folder.mkdir()
    # Named like a hub id, but a folder here: a copy's own folder, which is no name of the base.
    (tmp_path / "ana" / "local-copy").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    (named_by_a_folder / "config.json").write_text(json.dumps({"_name_or_path": "ana/local-copy"}))
    for source, base in [("demo", "ignored"), ("hub", "google/functiongemma-270m-it"), ("upload", str(upload)),
                         ("upload", str(odd)), ("upload", str(tmp_path / "missing")), ("upload", str(finetuned)),
                         ("upload", str(named_by_a_folder))]:
        lines.append(f"== served base of {source} {base}: {served_base(source, base)!r}")
    good, bad = adapter(tmp_path, "good"), adapter(tmp_path, "bad", r=64, base_model_name_or_path=None)
    problems, warnings = folder_problems_of(parse_adapters(
        [{"name": "hubbed", "hub": "a/b"}, {"name": "good", "path": good}, {"name": "bad", "path": bad}],
        "served-name", "hub", []), 32, SERVED)
    lines += ["== laptop folders"] + [f"! {p}" for p in problems] + [f"? {w}" for w in warnings]
    text = "\n".join(lines).replace(str(tmp_path), "<dir>").replace(os.path.expanduser("~"), "<home>") + "\n"
    matches_golden(GOLDEN, text)


def test_a_demo_base_is_known_by_the_demo_name():
    assert served_base("demo", "anything").names == (DEMO_BASE_NAME,)


def test_a_declared_adapter_cannot_change_once_read():
    from dataclasses import FrozenInstanceError

    [sql] = parse_adapters([{"name": "sql", "hub": "a/b", "revision": SHA}], "served", "hub", [])
    with pytest.raises(FrozenInstanceError):
        sql.name = "other"  # type: ignore[misc]
