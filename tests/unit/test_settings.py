"""Settings: the defaults validate, and every bad input is refused with a message naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.deploy.settings import Secrets, SettingsError, build_settings, default_max_cpu_loras
from tests.conftest import group_data
from tests.support.golden import matches_golden

TOKEN = Secrets(hf_token="hf_token_for_tests", api_key="key-for-tests")


def make_adapter(tmp_path, name="sql", rank=8, targets=("q_proj", "v_proj"), base="google/functiongemma-270m-it", weights=True):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "target_modules": list(targets), "base_model_name_or_path": base})
    )
    if weights:
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (folder / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return str(folder)


def test_gpu_defaults_follow_the_plan(gpu_data):
    s = build_settings(gpu_data, TOKEN)
    assert s.profile == "cuda" and s.base_model == "google/functiongemma-270m-it"
    assert (s.max_loras, s.max_lora_rank, s.max_num_seqs, s.port) == (20, 32, 256, 8000)
    assert s.cuda_image == "vllm/vllm-openai:v0.32.0"
    assert s.models_root == "/mnt/d/AI_Models/base" and s.adapters_root == "/mnt/e/AI_Models/adapters"
    assert s.cache_root.startswith("/mnt/d/AI_Models/")


def test_local_defaults_validate(local_data):
    s = build_settings(local_data, Secrets(api_key="k"))
    assert s.profile == "cpu" and s.base_model_source == "demo" and len(s.adapters) >= 2
    assert s.max_cpu_loras >= len(s.adapters)


def test_max_cpu_loras_default_holds_every_adapter_and_moves_only_at_powers_of_two(gpu_data, tmp_path):
    gpu_data["adapters"] = [{"name": f"a{i}", "path": make_adapter(tmp_path, f"a{i}")} for i in range(25)]
    assert build_settings(gpu_data, TOKEN).max_cpu_loras == 64
    # Adding or removing an adapter must not change an engine flag (that would restart vLLM).
    assert {default_max_cpu_loras(4, n) for n in range(0, 65)} == {64}
    assert default_max_cpu_loras(4, 65) == default_max_cpu_loras(4, 128) == 128
    assert default_max_cpu_loras(100, 3) == 100


BAD_INPUTS = [
    ("rank not allowed", {"max_lora_rank": 24}, "max_lora_rank=24"),
    ("cpu cache below max_loras", {"max_cpu_loras": 4}, "max_cpu_loras=4 is below max_loras=20"),
    ("relative storage path", {"models_root": "AI_Models/base"}, "models_root='AI_Models/base' is not an absolute path"),
    ("port out of range", {"port": 70000}, "port=70000 is out of range"),
    ("port zero", {"port": 0}, "port=0 is out of range"),
    ("gpu fraction zero", {"gpu_memory_utilization": 0}, "gpu_memory_utilization=0"),
    ("gpu fraction above one", {"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5"),
    ("unknown profile", {"profile": "rocm"}, "profile='rocm' is not allowed"),
    ("image not pinned", {"cuda_image": "vllm/vllm-openai:latest"}, "cuda_image='vllm/vllm-openai:latest' must name a pinned tag"),
    ("duplicate adapter names", {"adapters": [{"name": "sql", "hub": "a/b"}, {"name": "sql", "hub": "a/c"}]}, "two adapters are named 'sql'"),
    ("unsafe adapter name", {"adapters": [{"name": "../etc", "hub": "a/b"}]}, "name is not a safe identifier"),
    ("adapter named like the base", {"adapters": [{"name": "functiongemma-270m-it", "hub": "a/b"}]}, "equals served_model_name"),
    ("adapter named like a metrics label", {"adapters": [{"name": "Unknown_Model", "hub": "a/b"}]},
     "the per-adapter metrics keep"),
    ("missing adapter source", {"adapters": [{"name": "sql", "path": "/nonexistent/sql-lora"}]}, "does not exist on this laptop"),
    ("adapter with two sources", {"adapters": [{"name": "sql", "path": "/x", "hub": "a/b"}]}, "give exactly one source"),
    ("space at a name's edge in a storage path", {"adapters_root": "/mnt/e/AI /adapters"}, "adapters_root='/mnt/e/AI /adapters' must be a folder"),
    ("dollar in a storage path", {"adapters_root": "/mnt/e/$HOME/adapters"}, "adapters_root='/mnt/e/$HOME/adapters' must be a folder"),
    ("colon in a storage path", {"cache_root": "/mnt/d/a:b"}, "cache_root='/mnt/d/a:b' must be a folder"),
    ("the root folder", {"models_root": "/"}, "models_root='/' must be a folder"),
    ("overlapping roots", {"adapters_root": "/mnt/d/AI_Models/base/adapters"}, "overlap: give each its own folder"),
    ("revision with shell characters", {"base_model_revision": "main;id"}, "base_model_revision='main;id' is not allowed"),
    ("adapter revision with shell characters", {"adapters": [{"name": "sql", "hub": "a/b", "revision": "$(id)"}]}, "is not a branch, tag or commit sha"),
    ("image with shell characters", {"cuda_image": "vllm/vllm-openai:v0.32.0;id"}, "must name a pinned tag"),
    ("compose project with capitals", {"compose_project": "LoraFleet"}, "compose_project='LoraFleet' is not allowed"),
    ("adapter name ending in .partial", {"adapters": [{"name": "sql.partial", "hub": "a/b"}]}, "name is not a safe identifier"),
    ("empty served name", {"served_model_name": ""}, "served_model_name=''"),
    ("required setting left at None", {"port": None}, "port is not set"),
    ("a typo in a setting's name", {"max_lora": 99}, "max_lora is not a lorafleet setting: did you mean max_loras?"),
    ("a setting nobody knows", {"colour": "blue"}, "colour is not a lorafleet setting"),
    ("adapter name ending in a newline", {"adapters": [{"name": "sql\n", "hub": "a/b"}]}, "name is not a safe identifier"),
    ("stack_dir ending in a newline", {"stack_dir": "/opt/lorafleet\n"}, "stack_dir="),
    ("revision ending in a newline", {"base_model_revision": "main\n"}, "base_model_revision="),
    ("publish_address not an address", {"publish_address": "not an ip"}, "publish_address='not an ip' is not an IP address"),
    ("a newline in the tags", {"tailscale_advertise_tags": "tag:gpu\nTS_AUTHKEY=x"}, "tailscale_advertise_tags="),
    ("a tag without tag:", {"tailscale_advertise_tags": "gpu"}, "must be comma-separated Tailscale tags"),
    ("endpoint_host with a space", {"endpoint_host": "gpu box"}, "endpoint_host='gpu box' is not allowed"),
    ("gateway container with a slash", {"gateway_container": "a/b"}, "gateway_container='a/b' is not allowed"),
    ("create_storage_roots not a flag", {"create_storage_roots": "yes"}, "create_storage_roots='yes' must be True or False"),
    ("adapter names differing by case", {"adapters": [{"name": "Sql", "hub": "a/b"}, {"name": "sql", "hub": "a/c"}]}, "names are compared ignoring case"),
    ("a storage path with ..", {"models_root": "/mnt/d/../../etc"}, "models_root='/mnt/d/../../etc' contains '..'"),
    ("a system folder as a root", {"cache_root": "/etc"}, "cache_root='/etc' is a system folder"),
    ("a folder under a system folder", {"cache_root": "/usr/local/cache"}, "cache_root='/usr/local/cache' is a system folder"),
    ("the logs as a cache", {"cache_root": "/var/log"}, "cache_root='/var/log' is a system folder"),
    ("a folder under the logs", {"cache_root": "/var/log/lorafleet"}, "is a system folder"),
    ("the stack in root's .ssh", {"stack_dir": "/root/.ssh"}, "stack_dir='/root/.ssh' is inside a folder of secrets"),
    ("a root in a user's .ssh", {"models_root": "/home/me/.ssh/models"}, "is inside a folder of secrets"),
    ("a revision of ..", {"base_model_revision": ".."}, "base_model_revision='..' is not allowed"),
    ("a revision climbing out", {"base_model_revision": "main/../../x"}, "is not allowed"),
    ("a revision of .", {"base_model_revision": "."}, "is not allowed"),
    ("roots overlapping once normalised", {"adapters_root": "/mnt/d/AI_Models/./base//adapters/"}, "overlap: give each its own folder"),
    ("publish beyond loopback without opting in", {"network_mode": "publish", "publish_address": "0.0.0.0"}, "set publish_beyond_loopback = True"),
    ("the key switched off in vllm_env", {"vllm_env": {"VLLM_API_KEY": ""}}, "vllm_env sets VLLM_API_KEY"),
    ("the key on the command line", {"extra_vllm_args": ["--api-key", "x"]}, "extra_vllm_args carries --api-key"),
    ("the key on the command line, joined", {"extra_vllm_args": ["--api-key=x"]}, "extra_vllm_args carries --api-key"),
    ("the key with underscores", {"extra_vllm_args": ["--api_key", "x"]}, "extra_vllm_args carries --api-key"),
    ("the key with underscores, joined", {"extra_vllm_args": ["--api_key=x"]}, "extra_vllm_args carries --api-key"),
    ("a managed flag again", {"extra_vllm_args": ["--max-loras", "8"]}, "extra_vllm_args carries --max-loras, which the deploy sets itself: remove it; set max_loras instead"),
    ("a managed flag with underscores", {"extra_vllm_args": ["--max_model_len=99"]}, "carries --max_model_len, which the deploy sets itself: remove it; set max_model_len instead"),
    ("a managed switch negated", {"extra_vllm_args": ["--no-enable-prefix-caching"]}, "set enable_prefix_caching instead"),
    ("the port again", {"extra_vllm_args": ["--port=9000"]}, "set port instead"),
    ("the dtype as a flag", {"extra_vllm_args": ["--dtype", "half"]}, "carries --dtype, which the deploy sets itself: remove it; set dtype instead"),
    ("pinned memory in vllm_env", {"vllm_env": {"VLLM_WSL2_ENABLE_PIN_MEMORY": "1"}}, "set wsl_pin_memory instead"),
    ("a dtype vLLM does not take", {"dtype": "half"}, "dtype='half' is not allowed: use one of auto, bfloat16, float32, float16"),
    ("pinned memory not a flag", {"wsl_pin_memory": "yes"}, "wsl_pin_memory='yes' must be True or False"),
    ("the served name again", {"extra_vllm_args": ["--served_model_name", "x"]}, "set served_model_name instead"),
    ("the cache moved by vllm_env", {"vllm_env": {"HF_HOME": "/tmp/hf"}}, "vllm_env sets HF_HOME, which the deploy sets itself: remove it; set cache_root instead"),
    ("runtime LoRA updating switched off", {"vllm_env": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "False"}}, "vllm_env sets VLLM_ALLOW_RUNTIME_LORA_UPDATING"),
    ("the manifest moved", {"vllm_env": {"LORAFLEET_MANIFEST": "/tmp/x.json"}}, "vllm_env sets LORAFLEET_MANIFEST"),
    ("online mode", {"vllm_env": {"HF_HUB_OFFLINE": "0"}}, "sets HF_HUB_OFFLINE, which the deploy sets itself: remove it (because models are fetched by the deploy"),
    ("a file of flags", {"extra_vllm_args": ["--config", "x.yaml"]}, "carries --config, which the deploy sets itself: remove it (because a file of flags"),
    ("a root to purge as a bare word", {"remove_purge": "cache"}, "remove_purge='cache' is not allowed: use a list"),
    ("a root to purge that does not exist", {"remove_purge": ["stack"]}, "any of \"models\", \"adapters\", \"cache\""),
]


@pytest.mark.parametrize("overrides,expected", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_refused_with_its_setting_named(gpu_data, overrides, expected):
    with pytest.raises(SettingsError) as caught:
        build_settings({**gpu_data, **overrides}, TOKEN)
    assert expected in str(caught.value)
    assert "nothing was changed on the host" in str(caught.value)


def test_no_api_key_needs_its_own_setting(gpu_data):
    no_key = Secrets(hf_token="hf_x")
    with pytest.raises(SettingsError, match="serve_without_api_key = True"):
        build_settings({**gpu_data, "generate_api_key": False}, no_key)
    assert not build_settings({**gpu_data, "serve_without_api_key": True}, no_key).secrets.api_key


def test_publish_beyond_loopback_when_asked_warns(gpu_data):
    s = build_settings({**gpu_data, "network_mode": "publish", "publish_address": "0.0.0.0",
                        "publish_beyond_loopback": True}, TOKEN)
    assert any("not a loopback address" in w for w in s.warnings)


def test_adapter_links_that_leave_the_folder_are_refused(gpu_data, tmp_path):
    folder = make_adapter(tmp_path)
    (tmp_path / "secret").write_text("x")
    (Path(folder) / "notes.txt").symlink_to(tmp_path / "secret")
    (Path(folder) / "dangling.bin").symlink_to(tmp_path / "gone")
    with pytest.raises(SettingsError) as caught:
        build_settings({**gpu_data, "adapters": [{"name": "sql", "path": folder}]}, TOKEN)
    assert "notes.txt is a symlink to" in str(caught.value) and "outside the adapter folder" in str(caught.value)
    assert "dangling.bin is a symlink to" in str(caught.value) and "does not exist" in str(caught.value)


def test_relative_links_inside_the_folder_are_fine(gpu_data, tmp_path):
    folder = make_adapter(tmp_path)
    (Path(folder) / "weights-link.safetensors").symlink_to("adapter_model.safetensors")
    build_settings({**gpu_data, "adapters": [{"name": "sql", "path": folder}]}, TOKEN)


def test_connector_keys_are_not_settings(gpu_data):
    build_settings({**gpu_data, "ssh_port": 2222, "ssh_key": "/k", "fake_responses": {}, "_sudo": True}, TOKEN)


def test_a_plan_without_hf_token_warns_instead(gpu_data):
    s = build_settings(gpu_data, Secrets(api_key="k"), plan_only=True)
    assert any("the real deploy will stop here" in w and "HF_TOKEN is not set" in w for w in s.warnings)


def test_gated_model_without_hf_token_is_refused(gpu_data):
    with pytest.raises(SettingsError, match="gated on the Hugging Face hub and HF_TOKEN is not set"):
        build_settings(gpu_data, Secrets(api_key="k"))


BAD_ADAPTERS = [
    ("rank above max", {"rank": 64}, "rank r=64 is above max_lora_rank=32"),
    ("lm_head targeted", {"targets": ("q_proj", "lm_head")}, "target_modules=['q_proj', 'lm_head'] reaches lm_head"),
    ("embed_tokens targeted", {"targets": ("embed_tokens",)}, "target_modules=['embed_tokens'] reaches model.embed_tokens"),
    ("wrong base", {"base": "meta-llama/Llama-3.2-1B"}, "trained on base_model_name_or_path='meta-llama/Llama-3.2-1B'"),
    ("no weights", {"weights": False}, "no weights"),
]


@pytest.mark.parametrize("kwargs,expected", [row[1:] for row in BAD_ADAPTERS], ids=[row[0] for row in BAD_ADAPTERS])
def test_bad_adapter_folder_is_refused(gpu_data, tmp_path, kwargs, expected):
    gpu_data["adapters"] = [{"name": "sql", "path": make_adapter(tmp_path, **kwargs)}]
    with pytest.raises(SettingsError) as caught:
        build_settings(gpu_data, TOKEN)
    assert expected in str(caught.value) and "name='sql'" in str(caught.value)


def test_corrupt_weights_are_refused(gpu_data, tmp_path):
    folder = make_adapter(tmp_path)
    with open(f"{folder}/adapter_model.safetensors", "r+b") as f:
        f.truncate(20)
    gpu_data["adapters"] = [{"name": "sql", "path": folder}]
    with pytest.raises(SettingsError, match="adapter_model.safetensors is corrupt"):
        build_settings(gpu_data, TOKEN)


def test_wrong_base_is_allowed_when_the_user_opts_out(gpu_data, tmp_path):
    gpu_data["adapters"] = [{"name": "sql", "path": make_adapter(tmp_path, base="other/model")}]
    gpu_data["check_adapter_base"] = False
    assert build_settings(gpu_data, TOKEN).adapters[0].name == "sql"


def test_every_problem_is_reported_at_once(gpu_data):
    with pytest.raises(SettingsError) as caught:
        build_settings({**gpu_data, "port": -1, "max_lora_rank": 3}, TOKEN)
    assert len(caught.value.problems) == 2


def test_secrets_never_show_in_repr(gpu_data):
    assert "hf_token_for_tests" not in repr(build_settings(gpu_data, TOKEN))


def test_more_adapters_than_max_loras_warns(gpu_data, tmp_path):
    gpu_data["adapters"] = [{"name": f"a{i}", "path": make_adapter(tmp_path, f"a{i}")} for i in range(3)]
    gpu_data["max_loras"] = 2
    s = build_settings(gpu_data, TOKEN)
    assert s.warnings and "max_loras=2 is below the 3 declared adapters" in s.warnings[0]


def test_more_adapters_than_max_cpu_loras_is_refused(gpu_data, tmp_path):
    gpu_data["adapters"] = [{"name": f"a{i}", "path": make_adapter(tmp_path, f"a{i}")} for i in range(3)]
    gpu_data.update(max_loras=2, max_cpu_loras=2)
    with pytest.raises(SettingsError, match="max_cpu_loras=2 is below the 3 declared adapters"):
        build_settings(gpu_data, TOKEN)


def test_what_vllm_env_and_extra_vllm_args_may_add(gpu_data):
    s = build_settings({**gpu_data, "vllm_env": {"VLLM_USE_V2_MODEL_RUNNER": "0", "LORAFLEET_NICE": "0"},
                        "extra_vllm_args": ["--enforce-eager", "--seed", "0", "--max-logprobs=5"]}, Secrets(hf_token="hf_x", api_key="k"))
    assert dict(s.vllm_env) == {"VLLM_USE_V2_MODEL_RUNNER": "0", "LORAFLEET_NICE": "0"}


@pytest.mark.parametrize("groups", [("gpu",), ("local",)])
def test_every_variable_and_flag_the_deploy_sets_is_guarded(groups):
    """The rules cannot drift from the plan: whatever the deploy sets, vllm_env and extra_vllm_args cannot undo."""
    from lorafleet.deploy.serving import plan as serving_plan
    from lorafleet.deploy.settings import APPENDED_FLAGS, MANAGED_ENV, MANAGED_FLAGS, TUNABLE_ENV, vllm_flag

    s = build_settings(group_data(*groups), Secrets(hf_token="hf_x", api_key="k"), check_sources=False)
    assert set(serving_plan.vllm_environment(s)) <= set(MANAGED_ENV) | set(TUNABLE_ENV)
    flags = {vllm_flag(arg) for arg in serving_plan.vllm_args(s)} - {None}
    assert flags and flags <= set(MANAGED_FLAGS) | set(APPENDED_FLAGS)


@pytest.mark.parametrize("key, near", [
    ("MAX_LORAS", "max_loras"), ("Max_Loras", "max_loras"), ("ssh_usr", None), ("local_models_root", "models_root"),
    ("docker_images", None), ("fake_anything", None),
])
def test_unknown_settings_are_refused_whatever_their_case_or_prefix(gpu_data, key, near):
    with pytest.raises(SettingsError) as err:
        build_settings({**gpu_data, key: 99}, Secrets(hf_token="hf_x", api_key="k"))
    assert f"{key} is not a lorafleet setting" in str(err.value)
    if near:
        assert f"did you mean {near}?" in str(err.value)


def test_pyinfras_own_keys_and_the_users_helpers_are_not_settings_and_not_refused(gpu_data):
    data = {**gpu_data, "ssh_user": "root", "ssh_key": "~/.ssh/id", "ssh_port": 22, "fake_responses": {},
            "_sudo": True, "_env": {}, "_my_roots": ["/x"], "helper": lambda: 1, "docker_image": "x:1",
            "chroot_directory": "/c"}
    build_settings(data, Secrets(hf_token="hf_x", api_key="k"))


def test_an_adapter_path_that_is_a_file_or_a_loop_says_so(gpu_data, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    gpu_data["adapters"] = [{"name": "file", "path": str(tmp_path / "weights.safetensors")},
                            {"name": "loop", "path": str(tmp_path / "loop-a")},
                            {"name": "gone", "path": str(tmp_path / "nothing")}]
    with pytest.raises(SettingsError) as caught:
        build_settings(gpu_data, TOKEN)
    file, loop, gone = caught.value.problems
    assert "adapters[0] (name='file')" in file and "is a file, not a folder: give the adapter's folder" in file
    assert "adapters[1] (name='loop')" in loop and "is a loop of symlinks" in loop
    assert "adapters[2] (name='gone')" in gone and "does not exist on this laptop" in gone


def test_a_loop_of_links_inside_an_adapter_is_reported_with_its_name(gpu_data, tmp_path):
    folder = Path(make_adapter(tmp_path))
    (folder / "a").symlink_to("b")
    (folder / "b").symlink_to("a")
    with pytest.raises(SettingsError) as caught:
        build_settings({**gpu_data, "adapters": [{"name": "sql", "path": str(folder)}]}, TOKEN)
    assert all("adapters (name='sql')" in p and "part of a loop of links" in p for p in caught.value.problems)
    assert len(caught.value.problems) == 2


def test_an_adapter_without_a_recorded_base_warns_naming_it(gpu_data, tmp_path):
    folder = make_adapter(tmp_path)
    config = json.loads(Path(folder, "adapter_config.json").read_text())
    del config["base_model_name_or_path"]
    Path(folder, "adapter_config.json").write_text(json.dumps(config))
    s = build_settings({**gpu_data, "adapters": [{"name": "sql", "path": folder}]}, TOKEN)
    assert any("adapters (name='sql')" in w and "records no base_model_name_or_path" in w for w in s.warnings)


SHA = "0123456789abcdef0123456789abcdef01234567"


def test_hub_sources_without_a_pinned_revision_warn_and_may_be_required(gpu_data):
    gpu_data["adapters"] = [{"name": "email", "hub": "you/email-lora"}, {"name": "sql", "hub": "you/sql-lora",
                                                                           "revision": SHA}]
    warnings = [w for w in build_settings(gpu_data, TOKEN).warnings if "is not pinned" in w]
    assert len(warnings) == 2
    assert warnings[0].startswith("base_model='google/functiongemma-270m-it' is not pinned: revision 'main'")
    assert "set base_model_revision to the commit sha that `git ls-remote https://huggingface.co/" in warnings[0]
    assert warnings[1].startswith("adapters (name='email'): hub='you/email-lora' is not pinned: revision 'main'")
    with pytest.raises(SettingsError) as caught:
        build_settings({**gpu_data, "require_pinned_revisions": True}, TOKEN)
    assert [p.split(":")[0] for p in caught.value.problems] == ["base_model='google/functiongemma-270m-it' is not pinned",
                                                                "adapters (name='email')"]
    pinned = {**gpu_data, "base_model_revision": SHA, "require_pinned_revisions": True,
              "adapters": [{"name": "sql", "hub": "you/sql-lora", "revision": SHA}]}
    assert not [w for w in build_settings(pinned, TOKEN).warnings if "pinned" in w]


def test_storage_roots_with_a_space_and_an_apostrophe_are_accepted_and_reach_the_gateway_env_exactly(gpu_data):
    from lorafleet.deploy.gateway.plan import render_gateway_env

    roots = {"models_root": "/mnt/d/Ana's models/base", "adapters_root": "/mnt/e/Ana's models/adapters",
             "cache_root": "/mnt/d/Ana's models/cache", "stack_dir": "/opt/lora fleet"}
    s = build_settings({**gpu_data, **roots}, TOKEN)
    assert {key: getattr(s, key) for key in roots} == roots
    env = render_gateway_env(s, "box")
    assert "MODELS_ROOT='/mnt/d/Ana\\'s models/base'\n" in env and "STACK_DIR='/opt/lora fleet'\n" in env
    assert "GATEWAY_CONTAINER=lorafleet-gateway\n" in env, "a plain value stays bare: a bootstrapped .env is unchanged"


def _golden_cases() -> list[tuple[str, dict, Secrets]]:
    from lorafleet.deploy.settings import MANAGED_ENV, MANAGED_FLAGS

    key = Secrets(hf_token="hf_x", api_key="k")
    cases = [(name, overrides, TOKEN) for name, overrides, _ in BAD_INPUTS]
    cases += [(f"vllm_env sets {name}", {"vllm_env": {name: "x"}}, TOKEN) for name in MANAGED_ENV]
    cases += [(f"extra_vllm_args carries --{flag}", {"extra_vllm_args": [f"--{flag}", "x"]}, TOKEN) for flag in MANAGED_FLAGS]
    cases += [
        ("no key and none asked for", {"generate_api_key": False}, Secrets(hf_token="hf_x")),
        ("a key on two lines", {}, Secrets(hf_token="hf_x", api_key="sk-a\nb")),
        ("a token on two lines", {}, Secrets(hf_token="hf_a\nb", api_key="k")),
        ("a base that is no hub id", {"base_model": "not a repo"}, key),
        ("gateway mode without its container", {"network_mode": "gateway", "gateway_container": ""}, key),
        ("published beyond loopback on purpose", {"network_mode": "publish", "publish_address": "0.0.0.0",
                                                  "publish_beyond_loopback": True}, key),
        ("float16", {"dtype": "float16"}, key),
        ("unpinned hub sources", {"adapters": [{"name": "sql", "hub": "a/b"}]}, key),
        ("unpinned hub sources, pinning required", {"adapters": [{"name": "sql", "hub": "a/b"}],
                                                    "require_pinned_revisions": True}, key),
        ("a gated base without a token", {"base_model_gated": True}, Secrets(api_key="k")),
        ("more adapters than max_loras", {"max_loras": 1, "adapters": [
            {"name": f"a{i}", "hub": "a/b", "revision": "0" * 40} for i in range(2)]}, key),
        ("more adapters than a set max_cpu_loras", {"max_loras": 1, "max_cpu_loras": 1, "adapters": [
            {"name": f"a{i}", "hub": "a/b", "revision": "0" * 40} for i in range(2)]}, key),
        ("the cache holding the stack", {"cache_root": "/srv/lf", "stack_dir": "/srv/lf/stack"}, key),
        ("as many adapters as max_loras", {"max_loras": 2, "adapters": [
            {"name": f"a{i}", "hub": "a/b", "revision": "0" * 40} for i in range(2)]}, key),
        ("published on an address that is none", {"network_mode": "publish", "publish_address": "not an ip"}, key),
        ("a key ending in a backslash", {}, Secrets(hf_token="hf_x", api_key="sk-a\\")),
        ("a key with a backslash before a quote", {}, Secrets(hf_token="hf_x", api_key="sk-a\\'b")),
        ("the cache inside the models", {"cache_root": "/mnt/d/AI_Models/base/cache"}, key),
    ]
    return cases


def test_every_refusal_and_warning_reads_as_the_golden_file_says(gpu_data):
    """The whole text the user reads for each bad input, against tests/fixtures/settings_messages.txt: a
    message that loses its setting, value or fix shows in the diff. After a deliberate change, write it
    anew with LORAFLEET_UPDATE_GOLDEN=1 and review the diff."""

    golden = Path(__file__).resolve().parents[1] / "fixtures" / "settings_messages.txt"
    lines = []
    for name, overrides, secrets in _golden_cases():
        lines.append(f"== {name}")
        try:
            settings = build_settings({**gpu_data, **overrides}, secrets)
        except SettingsError as refused:
            lines.append(str(refused))
        else:
            lines += ["accepted, warnings:", *(f"  - {w}" for w in settings.warnings)]
    text = "\n".join(lines) + "\n"
    matches_golden(golden, text)


def test_each_managed_variable_and_flag_names_a_real_setting_or_why():
    from lorafleet.deploy.settings import MANAGED_ENV, MANAGED_FLAGS, setting_names

    for owner in [*MANAGED_ENV.values(), *MANAGED_FLAGS.values()]:
        named = [part for part in owner.replace(",", " ").split() if part in setting_names()]
        assert owner.startswith("because ") or owner.startswith("LORAFLEET_API_KEY (the 0600 env file)") or named, owner


def test_settings_and_secrets_cannot_be_changed_once_read(gpu_data):
    """One deploy's steps all read the same settings: none can change them on the way."""
    from dataclasses import FrozenInstanceError

    s = build_settings(gpu_data, TOKEN)
    with pytest.raises(FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        s.secrets.api_key = "other"  # type: ignore[misc]
    assert repr(s.secrets) == "Secrets(<hidden>)" and "key-for-tests" not in repr(s)


def test_adapters_must_be_trained_on_the_served_base(gpu_data, local_data):
    from lorafleet.adapters.check import DEMO_BASE_NAME

    assert build_settings(gpu_data, TOKEN).adapter_base_name == gpu_data["base_model"]
    assert build_settings({**local_data, "base_model": "my-demo"}, TOKEN).adapter_base_name == DEMO_BASE_NAME


@pytest.mark.parametrize("dtype, served", [("auto", ""), ("bfloat16", "bfloat16"), ("float32", "float32")])
def test_auto_leaves_the_dtype_to_the_gpu_check(gpu_data, dtype, served):
    assert build_settings({**gpu_data, "dtype": dtype}, TOKEN).served_dtype == served


# What pyinfra 3.10's connectors put in host data without declaring it (chroot, docker, the server groups).
@pytest.mark.parametrize("key", ["chroot_directory", "docker_image", "docker_container_id", "server_group",
                                 "server_group_node_ips"])
def test_host_data_pyinfras_connectors_set_without_declaring_it_is_not_refused(gpu_data, key):
    build_settings({**gpu_data, key: "x"}, TOKEN)


def test_a_helper_of_the_users_does_not_hide_a_typo_after_it(gpu_data):
    with pytest.raises(SettingsError, match="zz_colour is not a lorafleet setting"):
        build_settings({**gpu_data, "_helper": 1, "zz_colour": "blue"}, TOKEN)


def test_a_cpu_cache_with_exactly_one_slot_per_adapter_is_enough(gpu_data):
    adapters = [{"name": f"a{i}", "hub": "a/b", "revision": "0" * 40} for i in range(3)]
    build_settings({**gpu_data, "adapters": adapters, "max_loras": 2, "max_cpu_loras": 3}, TOKEN)
