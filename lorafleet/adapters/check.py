"""Checks a LoRA adapter folder before vLLM ever sees it.

Standard library only, so the same file validates laptop folders (imported by
the settings) and hub downloads on the host (run as a script inside a throwaway
container of the serving image):

    python3 adapter_check.py DIR --max-lora-rank 32 [--base-model NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

DEMO_BASE_NAME = "lorafleet/functiongemma-demo"
# vLLM refuses adapters that replace these layers.
FORBIDDEN_MODULES = ("lm_head", "embed_tokens")
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def same_model(trained_on: str, base_model: str) -> bool:
    """True when an adapter's recorded base is the served base (hub id or a local copy of it)."""
    a = trained_on.rstrip("/").lower()
    b = base_model.rstrip("/").lower()
    return a == b or a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1]


def check_adapter_dir(path: str, max_lora_rank: int, base_model: str | None = None) -> list[str]:
    """Return the problems of one adapter folder, each with its fix; empty when it can be served."""
    config_path = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config_path):
        return ["adapter_config.json is missing: save the adapter with peft's save_pretrained()"]
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"adapter_config.json is not valid JSON ({exc}): re-save the adapter"]
    if not isinstance(config, dict):
        return ["adapter_config.json is not a JSON object: re-save the adapter"]

    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type={config.get('peft_type')!r}: only LoRA adapters can be served")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        problems.append(f"rank r={rank!r} is not a positive whole number: re-save the adapter")
    elif rank > max_lora_rank:
        problems.append(
            f"rank r={rank} is above max_lora_rank={max_lora_rank}: raise max_lora_rank "
            "(one of 8, 16, 32, 64, ...) or train the adapter with a smaller rank"
        )
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    saved = config.get("modules_to_save") or []
    bad = sorted({m for m in [*targets, *saved] for f in FORBIDDEN_MODULES if f in str(m)})
    if bad:
        problems.append(
            f"targets {', '.join(bad)}: vLLM cannot serve adapters that change lm_head or embed_tokens; "
            "retrain with target_modules limited to the attention and MLP projections"
        )
    trained_on = config.get("base_model_name_or_path")
    if base_model and trained_on and not same_model(str(trained_on), base_model):
        problems.append(
            f"trained on base_model_name_or_path={trained_on!r}, but the served base is {base_model!r}: "
            "retrain on the served base, or set check_adapter_base = False to serve it anyway"
        )
    problems.extend(_check_weights(path))
    return problems


def _check_weights(path: str) -> list[str]:
    present = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(path, name))]
    if not present:
        return ["no weights: adapter_model.safetensors (or adapter_model.bin) is missing"]
    weights = os.path.join(path, present[0])
    if not os.access(weights, os.R_OK):
        return [f"{present[0]} is not readable: fix its permissions"]
    if not weights.endswith(".safetensors"):
        return []
    # A safetensors file is an 8-byte header length, a JSON header, then the tensors.
    try:
        size = os.path.getsize(weights)
        with open(weights, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end != size:
            raise ValueError(f"expected {8 + header_len + end} bytes, found {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        return [f"{present[0]} is corrupt ({exc}): copy or re-save the adapter"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--max-lora-rank", type=int, required=True)
    parser.add_argument("--base-model")
    parser.add_argument("--name", default=None, help="adapter name, for messages")
    args = parser.parse_args(argv)
    problems = check_adapter_dir(args.path, args.max_lora_rank, args.base_model)
    for problem in problems:
        print(f"adapter {args.name or args.path}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
