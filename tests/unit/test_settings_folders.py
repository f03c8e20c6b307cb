"""What the deploy would upload from this laptop must be there: each adapter entry's folder and an
uploaded base, checked on the real disk (files, links that loop or lead nowhere), each named."""

from __future__ import annotations

import os

from lorafleet.deploy.settings import Secrets, build_settings
from lorafleet.deploy.settings_folders import check_laptop_folders
from tests.unit.test_adapter_check import adapter

KEY = Secrets(hf_token="hf_x", api_key="k")


def test_every_adapter_entry_that_is_no_folder_here_is_named_with_why(gpu_data, tmp_path):
    good = adapter(tmp_path, "good")
    (tmp_path / "a-file").write_text("x")
    os.symlink(tmp_path / "loop-b", tmp_path / "loop-a")
    os.symlink(tmp_path / "loop-a", tmp_path / "loop-b")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    declared = [
        "not a mapping", {"path": "/no/name"}, {"name": "hubbed", "hub": "a/b", "revision": "0" * 40},
        {"name": "both", "hub": "a/b", "path": str(tmp_path / "missing")},
        {"name": "demo-too", "demo": True, "path": str(tmp_path / "missing")},
        {"name": "missing", "path": str(tmp_path / "missing")}, {"name": "file", "path": str(tmp_path / "a-file")},
        {"name": "loop", "path": str(tmp_path / "loop-a")}, {"name": "dangling", "path": str(tmp_path / "dangling")},
        {"name": "good", "path": good},
    ]
    s = build_settings({**gpu_data, "adapters": declared[2:3] + declared[5:]}, KEY, check_sources=False)
    _, problems = check_laptop_folders(s, declared)
    where = str(tmp_path)
    assert problems == [
        f"adapters[5] (name='missing'): path='{where}/missing' does not exist on this laptop: fix the path or remove the entry",
        f"adapters[6] (name='file'): path='{where}/a-file' is a file, not a folder: give the adapter's folder (the one "
        "holding adapter_config.json and adapter_model.safetensors)",
        f"adapters[7] (name='loop'): path='{where}/loop-a' is a loop of symlinks: make it point at the adapter's folder",
        f"adapters[8] (name='dangling'): path='{where}/dangling' is a symlink that leads nowhere (No such file or "
        "directory): make it point at the adapter's folder",
    ]


def test_an_uploaded_base_is_resolved_and_must_be_a_folder(gpu_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models" / "fg").mkdir(parents=True)
    os.symlink(tmp_path / "models" / "fg", tmp_path / "fg-link")
    s = build_settings({**gpu_data, "base_model_source": "upload", "base_model": "~/fg-link"}, KEY, check_sources=False)
    resolved, problems = check_laptop_folders(s, [])
    assert problems == [] and resolved.base_model == str(tmp_path / "models" / "fg")
    unresolved, _ = check_laptop_folders(s, [], check=False)
    assert unresolved.base_model == str(tmp_path / "models" / "fg"), "resolved even when not checked"
    missing = build_settings({**gpu_data, "base_model_source": "upload", "base_model": "~/nowhere"}, KEY,
                             check_sources=False)
    assert check_laptop_folders(missing, [])[1] == [
        f"base_model='{tmp_path}/nowhere' (base_model_source='upload') is not a folder on this laptop"]
    hub = build_settings(gpu_data, KEY, check_sources=False)
    assert check_laptop_folders(hub, [])[0].base_model == gpu_data["base_model"], "a hub id is no path"


def test_an_adapters_folder_problems_and_warnings_reach_the_settings(gpu_data, tmp_path):
    bad = adapter(tmp_path, "bad", r=64, base_model_name_or_path=None)
    declared = [{"name": "bad", "path": bad}]
    s = build_settings({**gpu_data, "adapters": declared}, KEY, check_sources=False)
    checked, problems = check_laptop_folders(s, declared)
    assert problems == [f"adapters (name='bad') at {bad}: rank r=64 is above max_lora_rank=32: raise max_lora_rank "
                        "(one of 8, 16, 32, 64, ...) or train the adapter with a smaller rank"]
    assert any("records no base_model_name_or_path" in w for w in checked.warnings)
    assert check_laptop_folders(s, declared, check=False) == (s, [])
