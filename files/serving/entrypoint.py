"""Start vLLM with the adapters of the manifest, so a restart serves exactly the declared set.

Runs as the container's entrypoint: `python3 /lorafleet/entrypoint.py <vllm serve args>`.
"""

import json
import os
import sys

MANIFEST = os.environ.get("LORAFLEET_MANIFEST", "/lorafleet/adapters.json")
APPLIED = os.environ.get("LORAFLEET_APPLIED", "/tmp/lorafleet-applied.json")  # sync_adapters.py reads it


def main() -> None:
    try:
        with open(MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        manifest = {"adapters": []}
    modules, applied = [], {}
    for adapter in manifest.get("adapters", []):
        if not os.path.isfile(os.path.join(adapter["path"], "adapter_config.json")):
            # One unreadable adapter must not keep every other adapter offline.
            print(f"lorafleet: skipping adapter {adapter['name']}: no adapter_config.json at {adapter['path']}", flush=True)
            continue
        modules.append(json.dumps({"name": adapter["name"], "path": adapter["path"], "base_model_name": manifest.get("base_model")}))
        applied[adapter["name"]] = adapter.get("version", "")
    with open(APPLIED, "w", encoding="utf-8") as f:
        json.dump(applied, f)
    if os.environ.get("LORAFLEET_NICE"):
        # On the CPU profile vLLM keeps every core busy; a lower priority lets the deploy
        # (and the rest of the machine) run while it serves. Its threads inherit this.
        os.nice(int(os.environ["LORAFLEET_NICE"]))
    # vLLM imports --middleware by module name: the modules shipped beside this file must be importable.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    args = ["vllm", "serve", *sys.argv[1:]]
    if modules:
        args += ["--lora-modules", *modules]
    print(f"lorafleet: starting vLLM with {len(modules)} adapters: {', '.join(sorted(applied))}", flush=True)
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
