#!/usr/bin/env bash
# lorafleet's one-time bootstrap of the GPU box. Run it in the WSL distro on the
# Windows PC (Docker Desktop with WSL integration), from a clone of the repo:
#
#     bash files/gateway/bootstrap.sh            # asks for what it needs
#     bash files/gateway/bootstrap.sh --help     # every flag and variable
#
# It checks every prerequisite (Docker, compose v2, the GPU in a container, the
# storage roots and how fast they read), asks for the Tailscale key and keeps it
# in a 0600 file, stages the gateway project in ${STACK_DIR}/gateway and starts
# the gateway (Tailscale + Tailscale SSH + the docker CLI). The laptop's deploy
# reaches the box through that gateway from then on.
#
# Safe to rerun: what is in place is kept; the gateway is recreated only when
# its definition changed (compose's default), and the key only with --rotate-key.
# Human output goes to stderr; the last line on stdout is the laptop's setting:
#     LORAFLEET_GPU_HOST=<tailscale name>
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The gateway project ships beside this script.
GATEWAY_SRC=$SCRIPT_DIR
GATEWAY_FILES=(compose.yaml Dockerfile)

# Defaults: the same as group_data/all.py, so a default bootstrap matches a default deploy.
MODELS_ROOT=/mnt/d/AI_Models/base
ADAPTERS_ROOT=/mnt/e/AI_Models/adapters
CACHE_ROOT=/mnt/d/AI_Models/cache
STACK_DIR=/opt/lorafleet
TS_NAME=function-gemma-server
DEFAULTS="$MODELS_ROOT $ADAPTERS_ROOT $CACHE_ROOT $STACK_DIR"

PROJECT=${LORAFLEET_GATEWAY_PROJECT:-lorafleet-gateway}
CONTAINER=${LORAFLEET_GATEWAY_CONTAINER:-lorafleet-gateway}
OVERRIDE=${LORAFLEET_GATEWAY_OVERRIDE:-}
GPU_PROBE_IMAGE=${LORAFLEET_GPU_PROBE_IMAGE:-ubuntu:24.04}
SKIP_GPU=${LORAFLEET_SKIP_GPU_CHECK:-0}
READ_PROBE_MB=${LORAFLEET_READ_PROBE_MB:-256}
MIN_READ_MBPS=${LORAFLEET_MIN_READ_MBPS:-500}
SLOW_FSTYPES=${LORAFLEET_SLOW_FSTYPES:-9p v9fs drvfs}
TAILNET_WAIT=${LORAFLEET_TAILSCALE_WAIT:-120}
TAGS=${TS_ADVERTISE_TAGS:-}
ASSUME_YES=0
CREATE_ROOTS=0
ROTATE_KEY=0

usage() {
    cat <<EOF
Usage: bash files/gateway/bootstrap.sh [options]

One-time bootstrap of the GPU box, run in its WSL distro. Checks Docker, compose
v2, the GPU and the storage roots; stores the Tailscale key in
STACK_DIR/secrets/gateway.env (0600); starts the Tailscale gateway. Rerunning
it is safe: nothing that is in place is changed.

Options:
  --models-root DIR     base models              (default $MODELS_ROOT)
  --adapters-root DIR   LoRA adapters            (default $ADAPTERS_ROOT)
  --cache-root DIR      HF / vLLM caches         (default $CACHE_ROOT)
  --stack-dir DIR       compose projects, secrets (default $STACK_DIR)
  --hostname NAME       the box's Tailscale name (default $TS_NAME)
  --create-roots        create missing storage roots (asked for when interactive)
  --advertise-tags T    tags for an OAuth client secret, e.g. tag:gpu (comma-separated)
  --skip-gpu-check      do not check the GPU (machines without one; says so)
  --gpu-probe-image IMG image the GPU check runs nvidia-smi in (default $GPU_PROBE_IMAGE)
  --rotate-key          replace the stored Tailscale key (recreates the gateway)
  --yes                 non-interactive: never ask; the key comes from TS_AUTHKEY
  --project-name NAME   compose project of the gateway (default lorafleet-gateway)
  --container-name NAME the gateway's container (default lorafleet-gateway; must
                        equal gateway_container in group_data)
  --compose-override F  an extra compose file merged over the gateway's (test machines)
  -h, --help            this text

Environment (for non-interactive runs and tests):
  TS_AUTHKEY            the Tailscale key: tskey-auth-... or an OAuth client secret tskey-client-...
  TS_ADVERTISE_TAGS     same as --advertise-tags
  GATEWAY_IMAGE         use this image for the gateway instead of building lorafleet/gateway
  LORAFLEET_GATEWAY_PROJECT, LORAFLEET_GATEWAY_CONTAINER, LORAFLEET_GATEWAY_OVERRIDE,
  LORAFLEET_GPU_PROBE_IMAGE, LORAFLEET_SKIP_GPU_CHECK=1   as the flags above
  LORAFLEET_READ_PROBE_MB   size of the read-speed test file (default $READ_PROBE_MB; 0 skips it)
  LORAFLEET_MIN_READ_MBPS   warn below this sequential read speed (default $MIN_READ_MBPS MB/s)
  LORAFLEET_SLOW_FSTYPES    file systems treated as slow Windows mounts (default "$SLOW_FSTYPES")
  LORAFLEET_TAILSCALE_WAIT  seconds to wait for the gateway to join the tailnet (default $TAILNET_WAIT)

Exit status: 0 done; 1 a prerequisite is missing or a step failed (the output
says what is wrong and how to fix it); 2 bad usage.
EOF
}

# -- output -----------------------------------------------------------------

say() { printf '%s\n' "$*" >&2; }
section() { printf '\n== %s\n' "$*" >&2; }
ok() { printf '  [ok]   %s\n' "$*" >&2; }
note() { printf '  [..]   %s\n' "$*" >&2; }
skipped() { printf '  [skip] %s\n' "$*" >&2; }
indent() { fold -s -w 96 | sed 's/^/         /' >&2; }
WARNINGS=0
warn() {
    printf '  [warn] %s\n' "$1" >&2
    if (($# > 1)); then printf 'how to fix: %s\n' "$2" | indent; fi
    WARNINGS=$((WARNINGS + 1))
}
PROBLEMS=()
# problem WHAT FIX: a missing hard prerequisite; reported now, the run stops at the next gate.
problem() {
    printf '  [FAIL] %s\n' "$1" >&2
    printf 'how to fix: %s\n' "$2" | indent
    PROBLEMS+=("$1")
}
gate() {
    ((${#PROBLEMS[@]} == 0)) && return 0
    say ""
    say "bootstrap stopped: ${#PROBLEMS[@]} prerequisite(s) missing ($1). Fix them (see 'how to fix' above) and rerun;"
    say "rerunning is safe."
    exit 1
}
usage_error() {
    say "bootstrap: $*"
    say "Try: bash $0 --help"
    exit 2
}
# Anything a command printed, with Tailscale keys masked, for error messages.
redact() { sed -E 's/tskey-[A-Za-z0-9_-]+(\?[^[:space:]]*)?/tskey-****/g'; }

# -- arguments --------------------------------------------------------------

need_value() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --models-root) need_value "$@"; MODELS_ROOT=$2; shift ;;
        --adapters-root) need_value "$@"; ADAPTERS_ROOT=$2; shift ;;
        --cache-root) need_value "$@"; CACHE_ROOT=$2; shift ;;
        --stack-dir) need_value "$@"; STACK_DIR=$2; shift ;;
        --hostname) need_value "$@"; TS_NAME=$2; shift ;;
        --advertise-tags) need_value "$@"; TAGS=$2; shift ;;
        --gpu-probe-image) need_value "$@"; GPU_PROBE_IMAGE=$2; shift ;;
        --project-name) need_value "$@"; PROJECT=$2; shift ;;
        --container-name) need_value "$@"; CONTAINER=$2; shift ;;
        --compose-override) need_value "$@"; OVERRIDE=$2; shift ;;
        --skip-gpu-check) SKIP_GPU=1 ;;
        --create-roots) CREATE_ROOTS=1 ;;
        --rotate-key) ROTATE_KEY=1 ;;
        -y | --yes) ASSUME_YES=1 ;;
        --models-root=* | --adapters-root=* | --cache-root=* | --stack-dir=* | --hostname=* | --advertise-tags=* | \
            --gpu-probe-image=* | --project-name=* | --container-name=* | --compose-override=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
            continue
            ;;
        *) usage_error "unknown option: $1" ;;
    esac
    shift
done

# Paths go into a .env file and compose's short volume syntax (SRC:DST): the deploy's own rule
# (lorafleet/deploy/rules.py SAFE_PATH): a space or an apostrophe inside a name, never ':', '$' or '"'.
SAFE_PATH="^(/[A-Za-z0-9._@+'-]+( [A-Za-z0-9._@+'-]+)*)+\$"
check_path() {
    local name=$1 value=$2
    [[ $value == /* ]] || usage_error "$name '$value' is not an absolute path: the Docker daemon binds it at the same path in the gateway and vLLM; give a path starting with /"
    [[ $value =~ $SAFE_PATH ]] ||
        usage_error "$name '$value' has characters compose cannot bind safely (':', '\$', '\"', a backslash, a space at a name's edge...): use a folder whose path has only letters, digits, . _ - @ + ' and spaces inside a name"
}
# NAME=value as lorafleet/deploy/envfile.py writes it: bare when plain, else single-quoted with \' inside.
env_line() {
    if [[ $2 =~ ^[A-Za-z0-9_./:@+,=-]*$ ]]; then printf '%s=%s\n' "$1" "$2"
    else printf "%s='%s'\n" "$1" "${2//\'/\\\'}"; fi
}
strip_slash() { local v=${1%/}; printf '%s' "${v:-/}"; }
MODELS_ROOT=$(strip_slash "$MODELS_ROOT")
ADAPTERS_ROOT=$(strip_slash "$ADAPTERS_ROOT")
CACHE_ROOT=$(strip_slash "$CACHE_ROOT")
STACK_DIR=$(strip_slash "$STACK_DIR")
check_path --models-root "$MODELS_ROOT"
check_path --adapters-root "$ADAPTERS_ROOT"
check_path --cache-root "$CACHE_ROOT"
check_path --stack-dir "$STACK_DIR"
[[ $TS_NAME =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
    usage_error "--hostname '$TS_NAME' is not a valid Tailscale machine name: lowercase letters, digits and '-', at most 63, e.g. function-gemma-server"
for name in "$PROJECT" "$CONTAINER"; do
    [[ $name =~ ^[a-z0-9][a-z0-9_.-]*$ ]] || usage_error "'$name' is not a valid compose project / container name: lowercase letters, digits, '-', '_' and '.'"
done
[[ $READ_PROBE_MB =~ ^[0-9]+$ ]] || usage_error "LORAFLEET_READ_PROBE_MB='$READ_PROBE_MB' is not a whole number of MB"
[[ $MIN_READ_MBPS =~ ^[0-9]+$ ]] || usage_error "LORAFLEET_MIN_READ_MBPS='$MIN_READ_MBPS' is not a whole number"
[[ $TAILNET_WAIT =~ ^[0-9]+$ ]] || usage_error "LORAFLEET_TAILSCALE_WAIT='$TAILNET_WAIT' is not a whole number of seconds"
case $SKIP_GPU in 1 | true | yes) SKIP_GPU=1 ;; *) SKIP_GPU=0 ;; esac
if [[ -n $OVERRIDE ]]; then
    [[ -f $OVERRIDE ]] || usage_error "--compose-override '$OVERRIDE' is not a file"
    OVERRIDE=$(cd "$(dirname "$OVERRIDE")" && pwd)/$(basename "$OVERRIDE")
fi

# ask QUESTION: yes/no from the user (stdin); never asks with --yes (answers no).
ask() {
    local answer=""
    if ((ASSUME_YES)); then return 1; fi
    printf '%s [y/N] ' "$1" >&2
    read -r answer || true
    [[ $answer =~ ^[Yy]([Ee][Ss])?$ ]]
}

# make_dir DIR: mkdir -p, through sudo (owned by this user) when the parent is root's (e.g. /opt).
make_dir() {
    mkdir -p -- "$1" 2>/dev/null && return 0
    if ((EUID != 0)) && command -v sudo >/dev/null 2>&1; then
        note "creating $1 needs root: sudo install -d -o $(id -un) -g $(id -gn) $1"
        sudo install -d -o "$(id -u)" -g "$(id -g)" -- "$1" && return 0
    fi
    return 1
}

STARTED=$SECONDS
say "lorafleet bootstrap: gateway '$CONTAINER' (compose project '$PROJECT'), Tailscale name '$TS_NAME'"
say "  models $MODELS_ROOT | adapters $ADAPTERS_ROOT | cache $CACHE_ROOT | stack $STACK_DIR"
DISTRO=${WSL_DISTRO_NAME:-}
if grep -qi microsoft /proc/version 2>/dev/null; then
    say "  running in WSL, distro: ${DISTRO:-unknown}"
else
    say "  not running in WSL: fine for a plain Linux Docker host; the Windows advice below still applies to the GPU box"
fi
DISTRO=${DISTRO:-<your distro>}

# ===========================================================================
section "1/7 Docker and compose v2"
DOCKER_OK=0
if ! command -v docker >/dev/null 2>&1; then
    problem "the docker command is not found in this WSL distro (PATH=$PATH)" \
        "install Docker Desktop on Windows (WSL2 backend), then Settings > Resources > WSL integration: turn it on for '$DISTRO', Apply & restart, and open a new terminal. On a plain Linux host: install Docker Engine."
else
    info_err=$(docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null) && server=$(docker info --format '{{.ServerVersion}} on {{.OperatingSystem}}' 2>/dev/null) || server=""
    if [[ -z $server ]]; then
        if [[ $info_err == *"permission denied"* ]]; then
            problem "the Docker engine refused this user: $(printf '%s' "$info_err" | tail -n 1)" \
                "add yourself to the docker group (sudo usermod -aG docker \$USER), then close and reopen the WSL terminal (wsl --shutdown from Windows if that is not enough)."
        else
            problem "the Docker engine is not reachable (docker info failed: $(printf '%s' "$info_err" | tail -n 1))" \
                "start Docker Desktop on Windows and wait for 'Engine running'; check Settings > General > 'Use the WSL 2 based engine' and Settings > Resources > WSL integration for '$DISTRO'."
        fi
    else
        ok "Docker engine $server"
        DOCKER_OK=1
        compose_version=$(docker compose version --short 2>/dev/null || true)
        compose_version=${compose_version#v}
        if [[ -z $compose_version ]]; then
            DOCKER_OK=0
            problem "docker compose v2 is missing ('docker compose version' failed; docker-compose v1 is not enough)" \
                "Docker Desktop ships compose v2: update Docker Desktop. On a plain Linux host: install the docker-compose-plugin package."
        elif [[ ${compose_version%%.*} -lt 2 ]]; then
            DOCKER_OK=0
            problem "docker compose $compose_version is too old: compose v2 is needed" \
                "update Docker Desktop (or the docker-compose-plugin package)."
        else
            ok "docker compose $compose_version"
        fi
    fi
fi

# ===========================================================================
section "2/7 the GPU inside a container"
if ((SKIP_GPU)); then
    skipped "GPU check SKIPPED (--skip-gpu-check / LORAFLEET_SKIP_GPU_CHECK): the 'cuda' profile will not start without a GPU in containers"
elif ((!DOCKER_OK)); then
    skipped "GPU check not run: it needs the Docker engine (see above)"
else
    note "docker run --rm --gpus all $GPU_PROBE_IMAGE nvidia-smi -L (pulls the image on first use)"
    if gpu_out=$(docker run --rm --gpus all -e NVIDIA_DRIVER_CAPABILITIES=compute,utility \
        "$GPU_PROBE_IMAGE" nvidia-smi -L 2>&1) && [[ $gpu_out == *GPU* ]]; then
        while IFS= read -r line; do if [[ $line == GPU* ]]; then ok "$line"; fi; done <<<"$gpu_out"
    else
        problem "a container cannot use the GPU. docker said: $(printf '%s' "$gpu_out" | tail -n 3 | redact | tr '\n' ' ')" \
            "install NVIDIA's Windows driver (Game Ready / Studio, with WSL2 support) on Windows; do NOT install a Linux NVIDIA driver inside WSL. Update WSL (wsl --update in PowerShell), use Docker Desktop's WSL2 backend, restart Docker Desktop, and check 'nvidia-smi' works in PowerShell. If the probe image cannot be pulled, pick one you have: --gpu-probe-image IMAGE. On a machine without a GPU: --skip-gpu-check."
    fi
fi

# ===========================================================================
section "3/7 storage roots"
is_windows_mount() {
    local dir=$1 fstype statfs t
    fstype=$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null | head -n 1 || true)
    statfs=$(stat -f -c %T "$dir" 2>/dev/null || true)
    for t in $SLOW_FSTYPES; do
        if [[ $fstype == "$t" || $statfs == "$t" ]]; then
            printf '%s' "${fstype:-$statfs}"
            return 0
        fi
    done
    return 1
}
SLOW_REMEDY="keep models on the WSL distro's own ext4 disk (for example --models-root /home/$(id -un)/ai/models, and the same for --adapters-root and --cache-root; set models_root etc. in group_data/gpu.py to match), and put that disk on the fastest NVMe: 'wsl --manage $DISTRO --move D:\\WSL\\$DISTRO' in PowerShell (or wsl --export/--import). Docker Desktop's own disk image (images, volumes) moves in Settings > Resources > Advanced > Disk image location."

# read_speed DIR: sequential read MB/s of the largest *.safetensors in DIR, or of a test file written there.
read_speed() {
    local dir=$1 file="" what out bytes secs free_mb
    file=$(find "$dir" -xdev -type f -name '*.safetensors' -size +64M -printf '%s %p\n' 2>/dev/null |
        sort -rn | head -n 1 | cut -d' ' -f2- || true)
    if [[ -n $file ]]; then
        what="the largest *.safetensors ($(basename "$file"))"
    else
        ((READ_PROBE_MB > 0)) || return 1
        free_mb=$(df -Pm "$dir" 2>/dev/null | awk 'NR == 2 {print $4}' || true)
        if [[ -z $free_mb ]] || ((free_mb < READ_PROBE_MB * 2)); then
            note "not measuring read speed: less than $((READ_PROBE_MB * 2)) MB free in $dir"
            return 1
        fi
        file="$dir/.lorafleet-read-test.$$"
        PROBE_FILE=$file
        what="a ${READ_PROBE_MB} MB test file"
        if ! dd if=/dev/urandom of="$file" bs=1M count="$READ_PROBE_MB" iflag=fullblock conv=fsync status=none 2>/dev/null; then
            rm -f -- "$file"
            PROBE_FILE=""
            note "not measuring read speed: could not write a test file in $dir"
            return 1
        fi
    fi
    # At most 1 GB. O_DIRECT bypasses the page cache; where the file system refuses it,
    # drop the file's cached pages first.
    if ! out=$(LC_ALL=C dd if="$file" of=/dev/null bs=4M count=256 iflag=direct 2>&1); then
        LC_ALL=C dd if="$file" iflag=nocache count=0 status=none 2>/dev/null || true
        out=$(LC_ALL=C dd if="$file" of=/dev/null bs=4M count=256 2>&1) || out=""
    fi
    if [[ -n ${PROBE_FILE:-} ]]; then rm -f -- "$PROBE_FILE"; PROBE_FILE=""; fi
    read -r bytes secs < <(printf '%s\n' "$out" | awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s,") print $1, $(i - 1)}') || true
    [[ -n ${bytes:-} && -n ${secs:-} ]] || return 1
    READ_MBPS=$(awk -v b="$bytes" -v s="$secs" 'BEGIN {if (s <= 0) s = 0.000001; printf "%d", b / 1e6 / s}')
    READ_WHAT=$what
}
PROBE_FILE=""
trap 'if [[ -n ${PROBE_FILE:-} ]]; then rm -f -- "$PROBE_FILE"; fi' EXIT

for spec in "models_root:$MODELS_ROOT" "adapters_root:$ADAPTERS_ROOT" "cache_root:$CACHE_ROOT"; do
    key=${spec%%:*}
    dir=${spec#*:}
    if [[ ! -e $dir ]]; then
        if ((CREATE_ROOTS)) || ask "  $key $dir does not exist. Create it?"; then
            if make_dir "$dir"; then
                ok "$key $dir created"
            else
                problem "$key $dir does not exist and could not be created" \
                    "create it yourself (its drive must exist: for /mnt/<x>/..., the Windows drive <X>:) or pick another folder with --${key//_/-}."
                continue
            fi
        else
            problem "$key $dir does not exist" \
                "create it (rerun with --create-roots, or answer y), or pick an existing folder with --${key//_/-} DIR. For /mnt/<x>/... the Windows drive <X>: must exist."
            continue
        fi
    fi
    if [[ ! -d $dir ]]; then
        problem "$key $dir is not a directory" "pick a folder with --${key//_/-} DIR"
        continue
    fi
    if [[ ! -w $dir ]]; then
        problem "$key $dir is not writable by $(id -un)" "sudo chown $(id -un) $dir, or pick another folder with --${key//_/-} DIR"
        continue
    fi
    if slow=$(is_windows_mount "$dir"); then
        warn "$key $dir is on a Windows drive mount ($slow): vLLM memory-maps weights, tens to hundreds of times slower there than on ext4" "$SLOW_REMEDY"
    elif [[ $dir =~ ^/mnt/[a-zA-Z](/|$) ]]; then
        warn "$key $dir looks like a Windows drive (/mnt/<drive>): those are slow 9p mounts in WSL2" "$SLOW_REMEDY"
    else
        ok "$key $dir ($(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null | head -n 1 || echo '?'))"
    fi
    if [[ $key == models_root ]]; then
        READ_MBPS="" READ_WHAT=""
        if read_speed "$dir" && [[ -n $READ_MBPS ]]; then
            if ((READ_MBPS < MIN_READ_MBPS)); then
                warn "$key reads at $READ_MBPS MB/s ($READ_WHAT), below $MIN_READ_MBPS MB/s: model loading and restarts will be slow" "$SLOW_REMEDY"
            else
                ok "$key reads at $READ_MBPS MB/s ($READ_WHAT)"
            fi
        elif ((READ_PROBE_MB == 0)); then
            skipped "read-speed test (LORAFLEET_READ_PROBE_MB=0)"
        fi
    fi
done

gate "nothing else was written"

# ===========================================================================
section "4/7 stack folder and Tailscale key"
SECRETS_DIR="$STACK_DIR/secrets"
SECRETS_FILE="$SECRETS_DIR/gateway.env"
GATEWAY_DIR="$STACK_DIR/gateway"
if [[ -d $STACK_DIR ]] || make_dir "$STACK_DIR"; then
    if [[ -w $STACK_DIR ]]; then
        ok "stack folder $STACK_DIR"
    else
        problem "stack folder $STACK_DIR is not writable by $(id -un)" "sudo chown $(id -un) $STACK_DIR (or pick another with --stack-dir)"
    fi
else
    problem "stack folder $STACK_DIR could not be created" \
        "sudo install -d -o $(id -un) $STACK_DIR (or pick a folder you own with --stack-dir; set stack_dir in group_data/gpu.py to match)"
fi
gate "no key was stored"

# Only the key's line, never the key itself, is ever looked at by this script's output.
stored_value() { sed -n "s/^$1=//p" "$SECRETS_FILE" 2>/dev/null | tail -n 1; }
umask 077
mkdir -p -- "$SECRETS_DIR"
chmod 0700 -- "$SECRETS_DIR"
KEY_FROM=""
if [[ -s $SECRETS_FILE ]] && [[ -n $(stored_value TS_AUTHKEY) ]] && ((!ROTATE_KEY)); then
    chmod 0600 -- "$SECRETS_FILE"
    ok "Tailscale key kept: $SECRETS_FILE (0600; --rotate-key replaces it)"
    if [[ -n ${TS_AUTHKEY:-} ]]; then
        note "TS_AUTHKEY in the environment is ignored: a key is stored already (--rotate-key to use it)"
    fi
    asked_tags=${TAGS//[[:space:]]/}
    TAGS=$(stored_value LORAFLEET_ADVERTISE_TAGS || true)
    if [[ -n $asked_tags && $asked_tags != "$TAGS" ]]; then
        note "tags '$asked_tags' ignored: the tags are stored with the key ('${TAGS:-none}'); --rotate-key to change them"
    fi
else
    key=${TS_AUTHKEY:-}
    if [[ -n $key ]]; then
        KEY_FROM="TS_AUTHKEY"
    elif ((ASSUME_YES)); then
        problem "no Tailscale key: --yes never asks, and TS_AUTHKEY is empty" \
            "export TS_AUTHKEY=tskey-auth-... (admin console > Settings > Keys > Generate auth key) and rerun, or run without --yes to be asked."
        gate "no key"
    else
        say "  Paste the Tailscale key (it is not shown): an auth key tskey-auth-... from"
        say "  https://login.tailscale.com/admin/settings/keys, or an OAuth client secret tskey-client-..."
        printf '  key: ' >&2
        read -r -s key || true
        printf '\n' >&2
        KEY_FROM="the prompt"
    fi
    key=${key//[[:space:]]/}
    case $key in
        tskey-auth-?*) ;;
        tskey-client-?*)
            if [[ -z $TAGS ]] && ((!ASSUME_YES)); then
                say "  An OAuth client secret needs the tags the node will carry (tagOwners in your tailnet policy), e.g. tag:gpu"
                printf '  tags (comma-separated): ' >&2
                read -r TAGS || true
            fi
            TAGS=${TAGS//[[:space:]]/}
            if [[ -z $TAGS ]]; then
                problem "the key from $KEY_FROM is an OAuth client secret (tskey-client-...), which needs --advertise-tags" \
                    "rerun with --advertise-tags tag:gpu (tags your OAuth client may assign), or use an auth key (tskey-auth-...)."
            fi
            [[ $key == *\?* ]] || key="$key?ephemeral=false&preauthorized=true"
            ;;
        "") problem "no Tailscale key was given" "paste it when asked, or set TS_AUTHKEY=tskey-auth-..." ;;
        *) problem "the key from $KEY_FROM does not look like a Tailscale key (expected tskey-auth-... or tskey-client-...; not shown)" \
            "copy the whole key from the admin console (Settings > Keys), including the tskey- prefix." ;;
    esac
    if [[ -n $TAGS ]] && ! [[ $TAGS =~ ^tag:[A-Za-z0-9-]+(,tag:[A-Za-z0-9-]+)*$ ]]; then
        problem "tags '$TAGS' are not Tailscale tags" "give them as tag:name[,tag:other], e.g. --advertise-tags tag:gpu"
    fi
    gate "the key was not stored"
    tmp=$(mktemp "$SECRETS_DIR/.gateway.env.XXXXXX")
    {
        printf '# Tailscale key of the lorafleet gateway (written by bootstrap.sh; 0600). Rotate: bootstrap.sh --rotate-key\n'
        printf 'TS_AUTHKEY=%s\n' "$key"
        if [[ -n $TAGS ]]; then printf 'LORAFLEET_ADVERTISE_TAGS=%s\n' "$TAGS"; fi
    } >"$tmp"
    chmod 0600 -- "$tmp"
    mv -f -- "$tmp" "$SECRETS_FILE"
    unset key
    ok "Tailscale key (from $KEY_FROM) written to $SECRETS_FILE (0600, folder 0700)"
fi
if [[ -n $TAGS ]]; then ok "advertised tags: $TAGS"; fi

# ===========================================================================
section "5/7 gateway project in $GATEWAY_DIR"
for f in "${GATEWAY_FILES[@]}"; do
    [[ -f $GATEWAY_SRC/$f ]] || { say "bootstrap: $GATEWAY_SRC/$f is missing: run this script from a full clone of the repo"; exit 1; }
done
umask 022
mkdir -p -- "$GATEWAY_DIR"
# put_file DEST < content: write only when the content differs, so reruns change nothing.
put_file() {
    local dest=$1 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    if [[ -f $dest ]] && cmp -s -- "$tmp" "$dest"; then
        rm -f -- "$tmp"
        ok "$(basename "$dest") unchanged"
    else
        chmod 0644 -- "$tmp"
        mv -f -- "$tmp" "$dest"
        ok "$(basename "$dest") written"
    fi
}
for f in "${GATEWAY_FILES[@]}"; do put_file "$GATEWAY_DIR/$f" <"$GATEWAY_SRC/$f"; done
# The same keys, order and format as the deploy's plan.render_gateway_env, so a
# deploy that restages this file does not change the gateway's definition.
extra_args=""
if [[ -n $TAGS ]]; then extra_args="--advertise-tags=$TAGS"; fi
{
    env_line GATEWAY_CONTAINER "$CONTAINER"; env_line TS_HOSTNAME "$TS_NAME"; env_line STACK_DIR "$STACK_DIR"
    env_line MODELS_ROOT "$MODELS_ROOT"; env_line ADAPTERS_ROOT "$ADAPTERS_ROOT"; env_line CACHE_ROOT "$CACHE_ROOT"
    if [[ -n $extra_args ]]; then env_line TS_EXTRA_ARGS "$extra_args"; fi
} | put_file "$GATEWAY_DIR/.env"

# compose, with the .env beside the project as the only source of its values.
compose() {
    local files=(-f "$GATEWAY_DIR/compose.yaml")
    if [[ -n $OVERRIDE ]]; then files+=(-f "$OVERRIDE"); fi
    env -u GATEWAY_CONTAINER -u TS_HOSTNAME -u STACK_DIR -u MODELS_ROOT -u ADAPTERS_ROOT -u CACHE_ROOT \
        -u TS_EXTRA_ARGS -u TS_AUTHKEY -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_ENV_FILES \
        docker compose -p "$PROJECT" --project-directory "$GATEWAY_DIR" --env-file "$GATEWAY_DIR/.env" "${files[@]}" "$@"
}
if ! config_err=$(compose config --quiet 2>&1); then
    say "bootstrap: the gateway project does not parse:"
    printf '%s\n' "$config_err" | redact | indent
    exit 1
fi
ok "compose config is valid"

# ===========================================================================
section "6/7 start the gateway"
container_id() { docker inspect --format '{{.Id}}' "$CONTAINER" 2>/dev/null || true; }
old_id=$(container_id)
if [[ -n $old_id ]]; then
    owner=$(docker inspect --format '{{index .Config.Labels "com.docker.compose.project"}}' "$CONTAINER" 2>/dev/null || true)
    if [[ $owner != "$PROJECT" ]]; then
        problem "a container named '$CONTAINER' exists but is not the gateway of compose project '$PROJECT' (its project: '${owner:-none, made by hand}')" \
            "remove it (docker rm -f $CONTAINER) if it is an old gateway, or choose another name with --container-name (and gateway_container in group_data)."
        gate "name conflict"
    fi
fi
image=$(compose config --images 2>/dev/null | head -n 1 || true)
if docker image inspect "$image" >/dev/null 2>&1; then
    ok "image $image present"
else
    note "building $image from $GATEWAY_DIR/Dockerfile (pulls the pinned tailscale image; a minute or two)"
fi
if ! up_out=$(compose up -d 2>&1); then
    printf '%s\n' "$up_out" | redact | indent
    if [[ $up_out == *tun* ]]; then
        problem "the Docker engine could not give the gateway /dev/net/tun (kernel networking for Tailscale)" \
            "Docker Desktop's VM provides /dev/net/tun: update Docker Desktop and WSL (wsl --update), restart Docker Desktop. On a plain Linux host: sudo modprobe tun."
    else
        problem "docker compose up failed for the gateway (output above)" \
            "fix what compose reports and rerun; 'docker compose -p $PROJECT --project-directory $GATEWAY_DIR logs' shows the gateway's log."
    fi
    gate "the gateway did not start"
fi
new_id=$(container_id)
state=$(docker inspect --format '{{.State.Status}}' "$CONTAINER" 2>/dev/null || echo missing)
if [[ $state != running ]]; then
    docker logs --tail 30 "$CONTAINER" 2>&1 | redact | indent
    problem "the gateway container is '$state', not running (its log is above)" \
        "fix what the log says and rerun; a rejected key: bootstrap.sh --rotate-key"
    gate "the gateway is not running"
fi
# The gateway must see each root as this shell does: Docker Desktop's engine resolves bind sources in
# its own VM, where a path of this shell may name another folder (or a new, empty one).
token=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
for root in "$MODELS_ROOT" "$ADAPTERS_ROOT" "$CACHE_ROOT" "$STACK_DIR"; do
    marker="$root/.lorafleet-probe-$token"
    if ! { printf '%s' "$token" >"$marker"; } 2>/dev/null; then
        problem "$root: cannot write a marker there from this shell" "fix the folder's permissions (or run as its owner) and rerun"
        continue
    fi
    seen=$(docker exec "$CONTAINER" cat "$marker" 2>/dev/null || true)
    rm -f "$marker"
    if [[ $seen == "$token" ]]; then
        ok "$root: the gateway sees what this shell writes there"
    else
        source=$(docker inspect --format "{{range .Mounts}}{{if eq .Destination \"$root\"}}{{.Source}}{{end}}{{end}}" "$CONTAINER" 2>/dev/null || true)
        problem "$root: a marker written here is not in the gateway at the same path (the engine bound '${source:-nothing}' there)" \
            "keep the root on the WSL disk or on a Windows drive Docker Desktop shares (Settings > Resources > File sharing), then rerun; 'docker inspect $CONTAINER' shows what the engine bound"
    fi
done
gate "the gateway does not see the storage roots"

GATEWAY_RECREATED=0
if [[ -z $old_id ]]; then
    ok "gateway started: $CONTAINER (${new_id:0:12})"
    GATEWAY_RECREATED=1
elif [[ $old_id != "$new_id" ]]; then
    ok "gateway recreated (its definition changed): $CONTAINER (${new_id:0:12}, was ${old_id:0:12})"
    GATEWAY_RECREATED=1
else
    ok "gateway unchanged and running: $CONTAINER (${new_id:0:12})"
fi
if ((GATEWAY_RECREATED)); then
    # Containers that joined a previous gateway's network namespace (vLLM) have no network now.
    stale=""
    while read -r name mode; do
        [[ $mode == container:* ]] || continue
        ref=${mode#container:}
        [[ $ref == "$new_id" ]] && continue
        if [[ -n $old_id && $ref == "$old_id" ]] || [[ $ref == "$CONTAINER" ]] || ! docker inspect "$ref" >/dev/null 2>&1; then
            stale+="${name#/} "
        fi
    done < <(docker ps -aq | xargs -r docker inspect --format '{{.Name}} {{.HostConfig.NetworkMode}}' 2>/dev/null || true)
    if [[ -n $stale ]]; then
        warn "these containers joined the previous gateway's network and are cut off: $stale" \
            "rerun the deploy from the laptop: it sees the new gateway and recreates vLLM in its network namespace."
    elif [[ -n $old_id ]]; then
        note "if vLLM was deployed, rerun the deploy from the laptop: it recreates vLLM in the new gateway's network"
    fi
fi

# ===========================================================================
section "7/7 the tailnet"
TS_DNS=""
# shellcheck disable=SC2016 # python source, expanded by nobody
TS_STATUS_PY='import json, os, subprocess
socks = [p for p in (os.environ.get("TS_SOCKET"), "/tmp/tailscaled.sock", "/var/run/tailscale/tailscaled.sock") if p and os.path.exists(p)]
cmd = ["tailscale"] + (["--socket", socks[0]] if socks else []) + ["status", "--json", "--peers=false"]
out = subprocess.run(cmd, capture_output=True, text=True).stdout if socks else ""
try:
    d = json.loads(out or "{}")
except ValueError:
    d = {}
s = d.get("Self") or {}
print(d.get("BackendState") or "Starting", (s.get("DNSName") or "").rstrip(".") or "-")'
if ! docker exec "$CONTAINER" sh -c 'command -v tailscale && command -v python3' >/dev/null 2>&1; then
    warn "the gateway image has no tailscale CLI (or python3): cannot confirm it joined the tailnet" \
        "check the admin console (Machines) for '$TS_NAME'"
else
    deadline=$((SECONDS + TAILNET_WAIT))
    backend=Starting
    while :; do
        read -r backend TS_DNS < <(docker exec "$CONTAINER" python3 -c "$TS_STATUS_PY" 2>/dev/null || echo "Starting -") || true
        [[ $backend == Running ]] && break
        ((SECONDS >= deadline)) && break
        sleep 2
    done
    [[ $TS_DNS == - ]] && TS_DNS=""
    if [[ $backend == Running ]]; then
        ok "on the tailnet as ${TS_DNS:-$TS_NAME}"
    else
        docker logs --tail 20 "$CONTAINER" 2>&1 | redact | indent
        case $backend in
            NeedsMachineAuth) fix="approve the machine '$TS_NAME' in the admin console (Machines), or use a pre-approved key; then rerun." ;;
            NeedsLogin) fix="the key was refused or has expired: make a new one and rerun with --rotate-key. For an OAuth client secret, its tags must be allowed (tagOwners) and --advertise-tags given." ;;
            *) fix="look at the gateway's log above (docker logs $CONTAINER); the PC needs outbound internet access to Tailscale." ;;
        esac
        problem "the gateway has not joined the tailnet after ${TAILNET_WAIT}s (state: $backend)" "$fix"
        gate "not on the tailnet"
    fi
fi
host_name=${TS_DNS%%.*}
host_name=${host_name:-$TS_NAME}
if [[ $host_name != "$TS_NAME" ]]; then
    warn "Tailscale named the node '$host_name', not '$TS_NAME' (the name is taken by another machine)" \
        "remove the old machine in the admin console and rerun, or use '$host_name' on the laptop (below)."
fi

# ===========================================================================
summary="done in $((SECONDS - STARTED)) s"
if ((WARNINGS)); then summary+=", $WARNINGS warning(s) above: read them"; fi
section "$summary"
say "Notes for WSL2:"
say "  - The serving container (vLLM) lives in the gateway's network namespace: whenever the gateway is"
say "    recreated (a rerun after a change, --rotate-key, a Docker Desktop reset) rerun the deploy; it"
say "    notices and recreates vLLM. Nothing of vLLM is published on the Windows LAN."
say "  - The gateway needs /dev/net/tun (from Docker Desktop's VM) and NET_ADMIN for kernel networking;"
say "    vLLM runs with ipc: host (WSL2 has little shared memory and no pinned memory)."
defaults_now="$MODELS_ROOT $ADAPTERS_ROOT $CACHE_ROOT $STACK_DIR"
if [[ $defaults_now != "$DEFAULTS" || $CONTAINER != lorafleet-gateway ]]; then
    say "  - Not the defaults: put these in the laptop's group_data/gpu.py so the deploy uses the same paths:"
    say "      models_root = \"$MODELS_ROOT\""
    say "      adapters_root = \"$ADAPTERS_ROOT\""
    say "      cache_root = \"$CACHE_ROOT\""
    say "      stack_dir = \"$STACK_DIR\""
    say "      gateway_container = \"$CONTAINER\""
fi
say "  - Check from the laptop: ssh root@$host_name docker ps  (Tailscale SSH: your tailnet policy must"
say "    allow it with action \"accept\"; \"check\" asks for a browser login the deploy cannot answer)."
say ""
say "On the laptop, put this line in the repo's .secrets.env (or export it), then run the deploy:"
printf 'LORAFLEET_GPU_HOST=%s\n' "$host_name"
