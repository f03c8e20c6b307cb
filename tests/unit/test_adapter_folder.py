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
