"""The serving stack's plan: pure functions from settings to what lands on the host.

The compose file, the secrets env file, the vLLM arguments, the adapter manifest and the
commands that start it are computed from `Settings` alone, so unit tests call them directly
and the deployer only moves their output onto the host.
"""

from __future__ import annotations

import json
import shlex

import jinja2
import yaml

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.hashing import sha256_hex, shipped_bytes
from lorafleet.deploy.settings import Settings, vllm_flag
from lorafleet.deploy.stack import base_model_identity, container_name, host_script, paths, serving_image, version_link


def vllm_args(s: Settings) -> list[str]:
    """The `vllm serve` arguments; adapters are added at start-up from the manifest."""
    args = [
        s.base_model_dir,
        "--served-model-name", s.served_model_name,
        "--host", "0.0.0.0",
        "--port", str(s.port),
        "--enable-lora",
        "--max-loras", str(s.max_loras),
        "--max-lora-rank", str(s.max_lora_rank),
        "--max-cpu-loras", str(s.max_cpu_loras),
        "--max-num-seqs", str(s.max_num_seqs),
        "--max-model-len", str(s.max_model_len),
    ]
    # On by default in vLLM's V1 engine; explicit so a future default change cannot silently drop them.
    if s.enable_prefix_caching:
        args.append("--enable-prefix-caching")
    if s.enable_chunked_prefill:
        args.append("--enable-chunked-prefill")
    if s.enable_tool_calling:
        if s.tool_call_parser == layout.PROJECT_TOOL_PARSER:
            args += ["--tool-parser-plugin", layout.container_script("functiongemma_tool_parser.py")]
        args += ["--enable-auto-tool-choice", "--tool-call-parser", s.tool_call_parser]
    for middleware in layout.MIDDLEWARE:
        args += ["--middleware", middleware]
    if s.profile == "cuda":
        args += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    if s.served_dtype:  # dtype = "auto" on the cpu profile passes none: vLLM's CPU backend chooses, as before
        args += ["--dtype", s.served_dtype]
    return args + list(s.extra_vllm_args)


def vllm_environment(s: Settings) -> dict[str, str]:
    """Non-secret environment of the vLLM container."""
    env = {
        "HF_HOME": layout.cache_dir(s.cache_root, "HF_HOME"),
        "VLLM_CACHE_ROOT": layout.cache_dir(s.cache_root, "VLLM_CACHE_ROOT"),
        # Models are fetched by the deploy, never by the server at start-up.
        "HF_HUB_OFFLINE": "1",
        # Lets the deploy add and remove adapters on the running server (zero downtime).
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "LORAFLEET_MANIFEST": layout.CONTAINER_MANIFEST,
        "LORAFLEET_PORT": str(s.port),
    }
    if s.profile == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(s.cpu_kvcache_space_gib)
        # Measured (benchmarks/adapter_change.py): adding an adapter under full load took 77 s at normal
        # priority, 32 s at nice 10; alone on the machine vLLM loses nothing by it.
        env["LORAFLEET_NICE"] = "10"
    else:
        # vLLM turns pinned memory off under WSL2 unless asked; its default model runner is built on it (README).
        env["VLLM_WSL2_ENABLE_PIN_MEMORY"] = "1" if s.wsl_pin_memory else "0"
    env.update(dict(s.vllm_env))
    return env


def volumes(s: Settings, engine: EngineView = SAME_PATHS, read_only: bool = False) -> list[str]:
    """Storage roots inside vLLM at the paths the deploy writes them, bound from the engine's view; serve files read-only.

    `read_only`: the cache too, for a container that must change nothing (the image check).
    """
    return [
        engine.bind(s.models_root, mode="ro"),
        engine.bind(s.adapters_root, mode="ro"),
        engine.bind(s.cache_root, mode="ro" if read_only else ""),
        engine.bind(paths(s).serve_dir, layout.CONTAINER_SERVE_DIR, "ro"),
    ]


def serve_files_hash() -> str:
    """The serve files vLLM's container runs, by content."""
    return sha256_hex(*(shipped_bytes(p) for name, p in sorted(layout.SERVE_FILES.items())
                        if name not in layout.NOT_RUN_BY_VLLM))


def server_hash(s: Settings) -> str:
    """Changes exactly when the vLLM container must be recreated: image, weights, flags, environment, entrypoint."""
    # The CPU set joins the hash only when set: a deploy that sets none keeps the hash it had before it existed.
    return sha256_hex(serving_image(s), base_model_identity(s), json.dumps(vllm_args(s)),
                      json.dumps(vllm_environment(s)), serve_files_hash(), *([s.vllm_cpuset] if s.vllm_cpuset else []))


def compose_literal(value):
    """`value` as compose reads it back from a compose file: a `$` would start an interpolation, `$$` is one `$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: compose_literal(v) for key, v in value.items()}
    return [compose_literal(v) for v in value]


def render_compose(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """The serving compose project. Changes only with the server (image, base model, flags)."""
    # vllm_env and extra_vllm_args are the user's: a value with `$` reaches vLLM as written, not interpolated.
    args = compose_literal(vllm_args(s))
    environment = compose_literal(vllm_environment(s))
    image = serving_image(s)
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(layout.COMPOSE_TEMPLATE.parent)), undefined=jinja2.StrictUndefined, autoescape=False
    ).get_template(layout.COMPOSE_TEMPLATE.name)
    text = template.render(
        s=s,
        image=image,
        container=container_name(s),
        args=args,
        environment=environment,
        env_file=paths(s).env_file,
        volumes=volumes(s, engine),
        entrypoint=layout.container_script("entrypoint.py"),
        # The label makes compose recreate the container when the weights or the entrypoint change too. It keeps
        # its first name, lorafleet.engine: a new name would recreate every deployed server once, for nothing.
        server_hash=server_hash(s),
    ) + "\n"
    check_compose(text, s, engine)
    return text


def check_compose(text: str, s: Settings, engine: EngineView = SAME_PATHS) -> None:
    """Read the rendered file back as compose will: what the template meant is what lands, and no secret."""
    vllm = yaml.safe_load(text)["services"]["vllm"]
    expected = {"image": serving_image(s), "command": compose_literal(vllm_args(s)),
                "environment": compose_literal(vllm_environment(s)),
                "volumes": volumes(s, engine), "env_file": [paths(s).env_file]}
    wrong = [key for key, value in expected.items() if vllm.get(key) != value]
    secrets = [v for v in (s.secrets.api_key, s.secrets.hf_token) if v and v in text]
    if wrong or secrets:
        raise AssertionError(f"lorafleet: the rendered compose file is wrong in {wrong or 'its secrets'}: a bug, please report it")


def manifest(s: Settings, versions: dict[str, str]) -> dict:
    """The adapter manifest vLLM's entrypoint loads at start-up and the sync applies at runtime."""
    return {
        "base_model": s.served_model_name,
        "adapters": [
            {"name": a.name, "path": version_link(s, a.name, versions[a.name]), "version": versions[a.name]}
            for a in s.adapters
        ],
    }


def render_manifest(s: Settings, versions: dict[str, str]) -> str:
    return json.dumps(manifest(s, versions), indent=2, sort_keys=True) + "\n"


# The flags of `vllm serve` that name what vLLM loads beyond its own code; check_image.py takes them by the same names.
PLUGIN_FLAGS = ("tool-parser-plugin", "tool-call-parser", "middleware", "chat-template")


def plugin_args(s: Settings) -> list[str]:
    """What vLLM will load beyond its own code, as check_image.py's arguments: the tool parser plugin and the parser
    it names, every --middleware (the deploy's and any in extra_vllm_args), a --chat-template of the user's."""
    args, found = vllm_args(s), []
    for i, arg in enumerate(args):
        flag = vllm_flag(arg)
        if flag in PLUGIN_FLAGS:
            _, eq, value = arg.partition("=")
            found += [f"--{flag}", value if eq else (args[i + 1] if i + 1 < len(args) else "")]
    return found


def image_check_command(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """Prove the image vLLM is about to run imports every plugin and renders the chat template (check_image.py).

    A throwaway container of the image, as vLLM's would be but changing nothing: no network, every bind
    read-only (the serve files where vLLM's container has them), the same environment, the GPU on the cuda
    profile; python3 as its entrypoint. It exits 1 naming the plugin, the error and the image.
    """
    image = serving_image(s)
    command = ["docker", "run", "--rm", "--network", "none", *(["--gpus", "all"] if s.profile == "cuda" else [])]
    for volume in volumes(s, engine, read_only=True):
        command += ["-v", volume]
    for name, value in sorted(vllm_environment(s).items()):
        command += ["-e", f"{name}={value}"]
    command += ["--entrypoint", "python3", image, layout.container_script("check_image.py"),
                "--image", image, "--model", s.base_model_dir, *plugin_args(s)]
    return shlex.join(command)


def start_with_rollback_command(s: Settings, force_recreate: bool = False) -> str:
    """`compose up --wait` (start.sh); if vLLM is not healthy in time, the last good compose file comes back."""
    p = paths(s)
    args = ["bash", host_script(s, "start.sh"), "--compose-file", p.compose_file, "--project", s.compose_project,
            "--container", container_name(s), "--timeout", str(s.health_timeout_seconds),
            "--last-good", p.last_good, "--failed", p.failed, "--env-file", p.env_file, "--env-applied", p.env_applied]
    if force_recreate:
        args.append("--force-recreate")
    return shlex.join(args)
