"""Bring a running vLLM server to the adapter manifest without restarting it.

Runs inside the vLLM container (`docker exec`), where the server is on
localhost and the API key is in the environment:

    python3 /lorafleet/sync_adapters.py            # load, reload and unload to match the manifest
    python3 /lorafleet/sync_adapters.py --served   # print the served adapters and their applied versions as JSON
    python3 /lorafleet/sync_adapters.py --verify   # exit 1 unless served == declared
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

MANIFEST = os.environ.get("LORAFLEET_MANIFEST", "/lorafleet/adapters.json")
# What entrypoint.py started vLLM with and what each sync loaded since; tests point it elsewhere.
APPLIED = os.environ.get("LORAFLEET_APPLIED", "/tmp/lorafleet-applied.json")
BASE_URL = f"http://127.0.0.1:{os.environ.get('LORAFLEET_PORT', '8000')}"


def request(method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("VLLM_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE_URL + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def served() -> dict[str, str]:
    """Adapter name -> parent model, as the server lists them."""
    status, text = request("GET", "/v1/models")
    if status != 200:
        sys.exit(f"lorafleet: GET /v1/models answered {status}: {text[:300]}")
    models = json.loads(text)["data"]
    return {m["id"]: m.get("parent") for m in models if m.get("parent")}


def load_json(path: str, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def sync() -> int:
    manifest = load_json(MANIFEST, {"adapters": []})
    declared = {a["name"]: a for a in manifest["adapters"]}
    applied = load_json(APPLIED, {})
    current = served()
    failures = []

    def load(name: str, inplace: bool = False) -> bool:
        body = {"lora_name": name, "lora_path": declared[name]["path"], "load_inplace": inplace}
        status, text = request("POST", "/v1/load_lora_adapter", body)
        if status != 200:
            failures.append(f"load {name}: HTTP {status}: {text[:300]}")
            return False
        applied[name] = declared[name].get("version", "")
        return True

    for name in sorted(declared):
        if name not in current:
            if load(name):
                print(f"loaded {name}")
        elif applied.get(name) != declared[name].get("version", ""):
            # In place: the adapter keeps answering (old weights, then new) with no 404 in between.
            if load(name, inplace=True):
                print(f"reloaded {name}")
    for name in sorted(set(current) - set(declared)):
        status, text = request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if status == 200:
            applied.pop(name, None)
            print(f"unloaded {name}")
        else:
            failures.append(f"unload {name}: HTTP {status}: {text[:300]}")
    with open(APPLIED, "w", encoding="utf-8") as f:
        json.dump(applied, f)
    for failure in failures:
        print(f"lorafleet: {failure}", file=sys.stderr)
    return 1 if failures else 0


def verify() -> int:
    manifest = load_json(MANIFEST, {"adapters": [], "base_model": None})
    declared = {a["name"] for a in manifest["adapters"]}
    current = served()
    missing, extra = sorted(declared - set(current)), sorted(set(current) - declared)
    wrong_parent = sorted(n for n, p in current.items() if manifest.get("base_model") and p != manifest["base_model"])
    if missing or extra or wrong_parent:
        print(f"lorafleet: served adapters differ from the manifest: missing={missing} extra={extra} "
              f"wrong_parent={wrong_parent}; see `docker logs` of the vLLM container", file=sys.stderr)
        return 1
    print(f"serving {manifest.get('base_model')} with {len(declared)} adapters: {', '.join(sorted(declared))}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--served", action="store_true")
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()
    if args.served:
        print(json.dumps({"served": served(), "applied": load_json(APPLIED, {})}, sort_keys=True))
        return 0
    return verify() if args.verify else sync()


if __name__ == "__main__":
    sys.exit(main())
