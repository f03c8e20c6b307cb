"""An adapter folder's version: streamed, cached by size and mtime, changed by any byte or name."""

from __future__ import annotations

import json
import os

from lorafleet.adapters import folder


def make(tmp_path):
    d = tmp_path / "sql"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(b"\1" * 1000)
    return d


def test_version_changes_with_content_and_names(tmp_path):
    d = make(tmp_path)
    first = folder.folder_version(str(d))
    assert folder.folder_version(str(d)) == first
    (d / "adapter_model.safetensors").write_bytes(b"\2" * 1000)
    second = folder.folder_version(str(d))
    assert second != first
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    assert folder.folder_version(str(d)) != second


def test_cache_skips_unchanged_files_and_rereads_changed_ones(tmp_path, monkeypatch):
    d = make(tmp_path)
    cache = tmp_path / "state" / "fingerprints.json"
    first = folder.folder_version(str(d), cache)
    reads = []
    real = folder.hashlib.file_digest
    monkeypatch.setattr(folder.hashlib, "file_digest", lambda f, alg: reads.append(f.name) or real(f, alg))
    assert folder.folder_version(str(d), cache) == first and reads == []
    weights = d / "adapter_model.safetensors"
    weights.write_bytes(b"\3" * 1000)
    os.utime(weights, ns=(1, 1))
    assert folder.folder_version(str(d), cache) != first
    assert reads == [str(weights)]


def test_a_version_is_16_hex_digits_and_its_cache_makes_its_own_folders(tmp_path):
    d = make(tmp_path)
    cache = tmp_path / "state" / "deeper" / "fingerprints.json"
    version = folder.folder_version(str(d), cache)
    assert len(version) == 16 and int(version, 16) >= 0 and version == folder.folder_version(str(d))
    assert list(json.loads(cache.read_text())) == sorted(str(p.resolve()) for p in d.iterdir())


def test_each_link_the_upload_cannot_carry_is_named_with_its_fix(tmp_path):
    d = make(tmp_path)
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(d / "adapter_config.json", d / "absolute.json")  # inside the folder, but by an absolute path
    os.symlink("adapter_config.json", d / "relative.json")  # fine
    os.symlink("../outside.json", d / "outside.json")
    os.symlink("nowhere.json", d / "dangling.json")
    os.symlink("loop-b", d / "loop-a")
    os.symlink("loop-a", d / "loop-b")
    assert sorted(folder.folder_problems(str(d))) == [
        f"absolute.json is an absolute symlink ({d}/adapter_config.json): make it relative so it holds on the host too",
        "dangling.json is a symlink to nowhere.json, which does not exist: copy the file in or remove the link",
        "loop-a is a symlink to loop-b, part of a loop of links: remove the link or point it at a file",
        "loop-b is a symlink to loop-a, part of a loop of links: remove the link or point it at a file",
        "outside.json is a symlink to ../outside.json, outside the adapter folder: it would not exist on the host; "
        "copy the file into the folder instead of linking it",
    ]
