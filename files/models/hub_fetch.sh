#!/usr/bin/env bash
# Download a hub repo at a revision on the host, in a throwaway container of the
# serving image, into DEST. It lands in DEST.partial, is checked (adapters), and
# only then renamed into place, so an interrupted download or a bad adapter never
# looks served; the source marker records what is there.
#
#   hub_fetch.sh --image IMG --hub-env FILE --bind SRC:DST[:ro] ... --cache-root DIR --serve-mount PATH \
#                --repo REPO --revision REV --dest DIR --marker NAME \
#                [--check NAME --max-lora-rank N --base-config JSON [--base-model NAME ...]]
#
# Each --bind is given as the engine sees its source (on Docker Desktop, a path in its VM):
# the destination's folder, the cache, and the serve files at --serve-mount.
set -euo pipefail

check_name="" max_rank="" base_config="{}" base_models=() binds=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --image) image=$2 ;;
        --hub-env) hub_env=$2 ;;
        --cache-root) cache_root=$2 ;;
        --bind) binds+=(-v "$2") ;;
        --serve-mount) serve_mount=$2 ;;
        --repo) repo=$2 ;;
        --revision) revision=$2 ;;
        --dest) dest=$2 ;;
        --marker) marker=$2 ;;
        --check) check_name=$2 ;;
        --max-lora-rank) max_rank=$2 ;;
        --base-model) base_models+=(--base-model "$2") ;;
        --base-config) base_config=$2 ;;
        *) echo "hub_fetch.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${image:?}" "${hub_env:?}" "${cache_root:?}" "${serve_mount:?}" "${repo:?}" "${revision:?}" "${dest:?}" "${marker:?}"

staging="$dest.partial"
parent=$(dirname "$dest")
run=(docker run --rm --env-file "$hub_env" -e HF_HUB_OFFLINE=0 -e HF_HUB_DISABLE_PROGRESS_BARS=1 -e "HF_HOME=$cache_root/huggingface"
     "${binds[@]}"
     --entrypoint python3 "$image")

mkdir -p "$parent"
rm -rf "$staging"
progress() {  # a line every 15 s: how much has arrived
    while sleep 15; do
        echo "lorafleet: downloading $repo@$revision: $(du -sm "$staging" 2>/dev/null | cut -f1 || echo 0) MB so far"
    done
}
progress &
progress_pid=$!
trap 'kill "$progress_pid" 2>/dev/null || true' EXIT
"${run[@]}" -c 'import os, sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3], token=os.environ.get("HF_TOKEN") or None)' \
    "$repo" "$revision" "$staging"
kill "$progress_pid" 2>/dev/null || true
if [[ -n $check_name ]]; then
    check=("$serve_mount/adapter_check.py" "$staging" --name "$check_name" --max-lora-rank "$max_rank"
           --base-config "$base_config" ${base_models[@]+"${base_models[@]}"})
    "${run[@]}" "${check[@]}"
fi
printf '%s\n' "$repo@$revision" >"$staging/$marker"
rm -rf "$dest"
mv "$staging" "$dest"
