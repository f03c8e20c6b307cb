"""Rendering: the compose projects parse, carry the right flags, env, volumes and GPU reservation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from lorafleet.deploy import hub, layout, stack
from lorafleet.deploy.gateway import plan as gateway_plan
from lorafleet.deploy.hashing import sha256_hex
from lorafleet.deploy.serving import plan as serving_plan
from lorafleet.deploy.settings import Secrets, build_settings

SECRETS = Secrets(hf_token="hf_render_test_token", api_key="render-test-api-key")


@pytest.fixture
def gpu(gpu_data):
    return build_settings(gpu_data, SECRETS)


@pytest.fixture
def local(local_data):
    return build_settings(local_data, SECRETS)


def service(s):
    return yaml.safe_load(serving_plan.render_compose(s))["services"]["vllm"]


def test_vllms_own_parser_can_still_be_chosen(gpu_data):
    s = build_settings({**gpu_data, "tool_call_parser": "functiongemma"}, Secrets(hf_token="hf_x", api_key="k"))
    args = serving_plan.vllm_args(s)
    assert args[args.index("--tool-call-parser") + 1] == "functiongemma" and "--tool-parser-plugin" not in args


def test_cuda_compose_has_the_vllm_flags(gpu):
    vllm = service(gpu)
    args = vllm["command"]
    assert vllm["image"] == "vllm/vllm-openai:v0.32.0"
    assert args[0] == gpu.base_model_dir
    for flag, value in [("--max-loras", "20"), ("--max-lora-rank", "32"), ("--max-num-seqs", "256"),
                        ("--port", "8000"), ("--tool-call-parser", "lorafleet_functiongemma"),
                        ("--tool-parser-plugin", "/lorafleet/functiongemma_tool_parser.py"), ("--gpu-memory-utilization", "0.85")]:
        assert args[args.index(flag) + 1] == value
    for flag in ("--enable-lora", "--enable-prefix-caching", "--enable-chunked-prefill", "--enable-auto-tool-choice"):
        assert flag in args
    assert "--lora-modules" not in args, "adapters come from the manifest, so an adapter change never changes compose"
    assert vllm["entrypoint"] == ["python3", "/lorafleet/entrypoint.py"]


def test_cuda_compose_reserves_the_gpu_and_joins_the_gateway(gpu):
    vllm = service(gpu)
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert vllm["network_mode"] == "container:lorafleet-gateway"
    assert "ports" not in vllm, "nothing is published on the Windows host's LAN"
    assert vllm["ipc"] == "host"


def test_cpu_compose_has_no_gpu_reservation_and_publishes_on_loopback(local):
    vllm = service(local)
    assert "deploy" not in vllm
    assert vllm["ports"] == ["127.0.0.1:8000:8000"]
    assert vllm["environment"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert vllm["image"].startswith("lorafleet/vllm-cpu:0.32.0-")
    assert "--gpu-memory-utilization" not in vllm["command"]


def test_environment_and_volumes_keep_path_parity(gpu):
    vllm = service(gpu)
    env = vllm["environment"]
    assert env["HF_HOME"].startswith(gpu.cache_root) and env["VLLM_CACHE_ROOT"].startswith(gpu.cache_root)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    for root in (gpu.models_root, gpu.adapters_root, gpu.cache_root):
        assert any(v.startswith(f"{root}:{root}") for v in vllm["volumes"])
    assert vllm["env_file"] == [f"{gpu.stack_dir}/secrets/serving.env"]


def test_secrets_reach_only_the_env_file(gpu):
    compose = serving_plan.render_compose(gpu)
    assert "hf_render_test_token" not in compose and "render-test-api-key" not in compose
    assert stack.render_env_file(gpu).splitlines()[1:] == ["VLLM_API_KEY=render-test-api-key"]
    assert hub.render_hub_env_file(gpu).splitlines()[1:] == ["HF_TOKEN=hf_render_test_token"]
    assert f"--hub-env {gpu.stack_dir}/secrets/hub.env" in hub.hub_download_command(gpu, "a/b", "main", "/x/b")


def test_adapter_changes_change_the_manifest_not_the_compose(gpu_data, tmp_path):
    from tests.unit.test_settings import make_adapter

    before = build_settings(gpu_data, SECRETS)
    after = build_settings({**gpu_data, "adapters": [{"name": "sql", "path": make_adapter(tmp_path)}]}, SECRETS)
    assert serving_plan.render_compose(before) == serving_plan.render_compose(after)
    assert serving_plan.render_manifest(before, {}) != serving_plan.render_manifest(after, {"sql": "v1"})
    entry = serving_plan.manifest(after, {"sql": "v1"})["adapters"][0]
    assert (entry["name"], entry["version"]) == ("sql", "v1")
    assert entry["path"].startswith(f"{after.adapters_root}/.versions/sql@")
    assert serving_plan.manifest(after, {"sql": "v2"})["adapters"][0]["path"] != entry["path"], (
        "new weights load under a new path, so vLLM's prefix cache cannot serve KV of the old ones"
    )


def test_server_changes_change_the_compose(gpu_data):
    a = serving_plan.render_compose(build_settings(gpu_data, SECRETS))
    b = serving_plan.render_compose(build_settings({**gpu_data, "max_num_seqs": 128}, SECRETS))
    assert a != b


def test_cpu_image_tag_follows_its_inputs(local_data):
    a = stack.serving_image(build_settings(local_data, SECRETS))
    b = stack.serving_image(build_settings({**local_data, "cpu_base_image": "other:1"}, SECRETS))
    assert a != b


def test_gateway_compose_is_the_users_plan(gpu):
    gateway = yaml.safe_load(layout.GATEWAY_FILES["compose.yaml"].read_text())["services"]["gateway"]
    assert gateway["environment"]["TS_EXTRA_ARGS"].startswith("--ssh")
    assert "TS_SSH" not in gateway["environment"]
    assert gateway["devices"] == ["/dev/net/tun:/dev/net/tun"] and gateway["cap_add"] == ["NET_ADMIN"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in gateway["volumes"]
    assert "tailscale-state:/var/lib/tailscale" in gateway["volumes"]
    dockerfile = layout.GATEWAY_FILES["Dockerfile"].read_text()
    assert "tailscale/tailscale:v" in dockerfile and ":latest" not in dockerfile
    for package in ("git", "docker-cli", "docker-cli-compose", "bash"):
        assert package in dockerfile


docker_compose = pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose v2 is not installed: run .ci/setup.sh to check rendered projects with `docker compose config`",
)


@docker_compose
@pytest.mark.parametrize("group", ["gpu", "local"])
def test_docker_compose_config_accepts_the_serving_project(group, gpu, local, tmp_path):
    s = gpu if group == "gpu" else local
    (tmp_path / "compose.yaml").write_text(serving_plan.render_compose(s))
    env_file = tmp_path / "serving.env"
    env_file.write_text(stack.render_env_file(s))
    text = (tmp_path / "compose.yaml").read_text().replace(stack.paths(s).env_file, str(env_file))
    (tmp_path / "compose.yaml").write_text(text)
    result = subprocess.run(["docker", "compose", "-f", str(tmp_path / "compose.yaml"), "config", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@docker_compose
def test_a_dollar_in_vllm_env_and_extra_args_reaches_vllm_as_written(local_data, tmp_path):
    """Read back by the real compose: `$HOME` stays `$HOME` (compose would otherwise interpolate it)."""
    s = build_settings({**local_data, "vllm_env": {"MY_VAR": "a$HOME b"}, "extra_vllm_args": ["--seed", "$RANDOM"]},
                       SECRETS)
    text = serving_plan.render_compose(s).replace(stack.paths(s).env_file, str(tmp_path / "serving.env"))
    (tmp_path / "serving.env").write_text(stack.render_env_file(s))
    (tmp_path / "compose.yaml").write_text(text)
    result = subprocess.run(["docker", "compose", "-f", str(tmp_path / "compose.yaml"), "config", "--format", "json"],
                            capture_output=True, text=True, check=True)
    vllm = json.loads(result.stdout)["services"]["vllm"]
    # compose's output writes a literal $ as $$ (its own escape): undo it to compare
    assert vllm["environment"]["MY_VAR"].replace("$$", "$") == "a$HOME b"
    assert [a.replace("$$", "$") for a in vllm["command"]][-2:] == ["--seed", "$RANDOM"]


@docker_compose
def test_docker_compose_config_accepts_the_gateway_project(gpu, tmp_path):
    for name, source in layout.GATEWAY_FILES.items():
        shutil.copy(source, tmp_path / name)
    stack = tmp_path / "stack"
    (stack / "secrets").mkdir(parents=True)
    (stack / "secrets" / "gateway.env").write_text("TS_AUTHKEY=tskey-test\n")
    (tmp_path / ".env").write_text(gateway_plan.render_gateway_env(gpu, "function-gemma-server").replace(gpu.stack_dir, str(stack)))
    result = subprocess.run(["docker", "compose", "--project-directory", str(tmp_path), "config", "--quiet"],
                            capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr


def test_a_template_that_drops_a_setting_is_caught_before_upload(gpu, tmp_path, monkeypatch):
    broken = tmp_path / "compose.yaml.j2"
    broken.write_text(layout.COMPOSE_TEMPLATE.read_text().replace("    env_file: [{{ env_file | tojson }}]\n", ""))
    monkeypatch.setattr(layout, "COMPOSE_TEMPLATE", broken)
    with pytest.raises(AssertionError, match="env_file"):
        serving_plan.render_compose(gpu)


def test_vllm_runs_under_an_init_that_reaps_its_engine_processes(local, gpu):
    # Without it `docker stop` met a zombie engine process and failed (found by the fleet's e2e).
    assert service(local)["init"] is True and service(gpu)["init"] is True


def test_a_cpu_set_confines_the_container_and_recreates_it_only_when_set(gpu, gpu_data):
    assert "cpuset" not in service(gpu)
    pinned = build_settings({**gpu_data, "vllm_cpuset": "0-3,8"}, SECRETS)
    assert service(pinned)["cpuset"] == "0-3,8"
    assert serving_plan.server_hash(pinned) != serving_plan.server_hash(gpu)
    # None set: the hash a deploy from before the setting existed computed, so the setting alone recreates nothing.
    before = sha256_hex(serving_plan.serving_image(gpu), serving_plan.base_model_identity(gpu),
                        json.dumps(serving_plan.vllm_args(gpu)), json.dumps(serving_plan.vllm_environment(gpu)),
                        serving_plan.serve_files_hash())
    assert serving_plan.server_hash(gpu) == before


def test_preflight_refuses_a_cpu_the_engine_does_not_have():
    from lorafleet.deploy.preflight import cpuset_problems

    assert cpuset_problems("0-3", 4) == [] and cpuset_problems("0-7", None) == []
    (problem,) = cpuset_problems("2-5,9", 4)
    assert problem.startswith("vllm_cpuset='2-5,9' names CPU 4, 5, 9, but the Docker engine has 4 CPUs (0-3")
    assert "leave it empty" in problem


def test_a_demo_build_serves_every_box_that_declares_some_of_its_adapters(local_data, tmp_path):
    # The marker lists what the build holds, so a box declaring a subset (the fleet's boxes share a models root)
    # builds nothing, and one declaring another adapter builds it with those already there: none is lost.
    from lorafleet.deploy.facts import says_and_lists
    from lorafleet.deploy.models import plan as models_plan

    s = build_settings({**local_data, "models_root": str(tmp_path)}, SECRETS)
    built = stack.demo_adapter_names(s)
    assert built == ["weather", "sql", "email", "alarm"]
    for name in built:
        (tmp_path / "lorafleet-demo" / "adapters" / name).mkdir(parents=True)
    subprocess.run(["bash", "-c", models_plan.demo_marker_command(s)], check=True)
    lines = (tmp_path / "lorafleet-demo" / layout.INPUTS_MARKER).read_text().splitlines()
    assert not (tmp_path / "lorafleet-demo" / (layout.INPUTS_MARKER + layout.STAGING_SUFFIX)).exists()
    wanted = stack.demo_inputs_hash(s)
    assert says_and_lists(lines, wanted, built) and says_and_lists(lines, wanted, ["weather", "alarm"])
    assert not says_and_lists(lines, wanted, ["weather", "news"]), "an adapter the build lacks is built"
    assert not says_and_lists(lines, "another-builder-or-image", ["weather"])
    assert not says_and_lists([wanted], wanted, ["weather"]) and not says_and_lists([], wanted, [])
    # The hash leaves the declared names out: a box with fewer adapters has the same build (and base identity).
    fewer = build_settings({**local_data, "models_root": str(tmp_path),
                            "adapters": [{"name": "weather", "demo": True}]}, SECRETS)
    assert stack.demo_inputs_hash(fewer) == wanted
    assert stack.base_model_identity(fewer) == stack.base_model_identity(s)
    more = build_settings({**local_data, "adapters": [{"name": "news", "demo": True}]}, SECRETS)
    command = models_plan.demo_build_command(more, keep=lines[1:])
    assert "--adapters news,alarm,email,sql,weather " in command, command
