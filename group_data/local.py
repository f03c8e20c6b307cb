"""The local target (`@local`): CPU profile, demo model, paths any Linux machine with Docker has."""

profile = "cpu"
# The local base .ci/setup.sh builds (for machines that reach no container registry) when the engine
# has one, else python:3.11-slim; resolved on the host when the image step runs.
cpu_base_image = "local"
base_model_source = "demo"  # a tiny FunctionGemma-format model built on the host: no token, no download
base_model = "lorafleet/functiongemma-demo"
base_model_gated = False
served_model_name = "functiongemma-demo"
adapters = [{"name": n, "demo": True} for n in ("weather", "sql", "email", "alarm")]  # alarm: a call with every value type
max_loras = 4
max_lora_rank = 16
max_num_seqs = 32
max_model_len = 1024
models_root = "/var/tmp/lorafleet/models"
adapters_root = "/var/tmp/lorafleet/adapters"
cache_root = "/var/tmp/lorafleet/cache"
stack_dir = "/var/tmp/lorafleet/stack"
create_storage_roots = True
network_mode = "publish"  # no gateway here: publish on loopback only
compose_project = "lorafleet-local"
