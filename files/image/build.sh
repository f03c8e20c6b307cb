#!/usr/bin/env bash
# Build an image (the CPU serving image, the fleet's router) with the classic builder (no
# buildx needed), showing only its "Step N/M" lines while it works; the full log is kept
# and printed if it fails.
#
#   build.sh IMAGE CONTEXT_DIR [NAME=VALUE ...]    (each NAME=VALUE is a --build-arg)
set -euo pipefail
image=${1:?image} context=${2:?context}
shift 2
build_args=()
for arg in "$@"; do
    build_args+=(--build-arg "$arg")
done

# One build of an image at a time on this host: deploys of two stacks here (the fleet's boxes on one machine)
# would otherwise each build it, side by side. The second waits, then finds it built.
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/lorafleet-build-$(tr -c 'A-Za-z0-9.-' '_' <<<"$image").lock"
    flock 9
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "lorafleet: $image was built meanwhile by another deploy on this host"
        exit 0
    fi
fi

log="$context/build.log"
started=$SECONDS
set +e
DOCKER_BUILDKIT=0 docker build "${build_args[@]}" -t "$image" "$context" 2>&1 | tee "$log" | while IFS= read -r line; do
    case $line in
        "Step "*) echo "lorafleet: image build $(cut -c1-100 <<<"$line") ($((SECONDS - started)) s)" ;;
    esac
done
status=${PIPESTATUS[0]}
set -e
if ((status != 0)); then
    echo "lorafleet: the image build failed; its last lines ($log):" >&2
    tail -n 40 "$log" >&2
    exit "$status"
fi
echo "lorafleet: built $image in $((SECONDS - started)) s"
