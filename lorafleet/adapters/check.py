"""Checks a LoRA adapter folder before vLLM ever sees it.

Standard library only, so the same file validates laptop folders (imported by
the settings) and hub downloads on the host (run as a script inside a throwaway
container of the serving image):

    python3 adapter_check.py DIR --max-lora-rank 32 [--base-model NAME ...] [--base-config JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
from dataclasses import dataclass, field

DEMO_BASE_NAME = "lorafleet/functiongemma-demo"
# The string inits vLLM 0.32 serves (PEFTHelper._init_is_supported): they only set the first weights.
VLLM_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
# vLLM refuses adapters that replace these layers.
FORBIDDEN_MODULES = ("lm_head", "embed_tokens")
# The layers a LoRA of a Gemma 3 (or Llama-shaped) model may change: what vLLM's LoRA slots cover.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Model types whose modules are named as Gemma 3's are (model.layers.N.self_attn.q_proj, ...).
LLAMA_NAMED = ("gemma", "gemma2", "gemma3", "gemma3_text", "llama", "mistral", "qwen2", "qwen3")
SAFETENSORS, PICKLE = "adapter_model.safetensors", "adapter_model.bin"
# What identifies a base model in its config.json: a local copy of it has the same values.
IDENTITY = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size")
# The served bases the project knows (lorafleet/deploy/gpu.py's Shape; files/models/demo_models.py for the demo).
KNOWN_BASES = {
    "google/functiongemma-270m-it": {
        "model_type": "gemma3_text", "num_hidden_layers": 18, "hidden_size": 640, "intermediate_size": 2048,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144},
    DEMO_BASE_NAME: {"model_type": "gemma3_text", "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64},
}
CONVERT = ("python -c \"import torch; from safetensors.torch import save_file; "
           "save_file(torch.load('adapter_model.bin', weights_only=True), 'adapter_model.safetensors')\"")


@dataclass(frozen=True)
class Base:
    """The served base as an adapter may record it: its names, its config's identity, its folder (an upload)."""

    names: tuple[str, ...]  # hub ids (or the demo's name) an adapter may record as base_model_name_or_path
    config: dict = field(default_factory=dict)  # IDENTITY values of the served base, when known
    folder: str = ""  # the uploaded base's folder on this laptop

    @classmethod
    def named(cls, name: str) -> "Base":
        return cls(names=(name,), config=dict(KNOWN_BASES.get(name.lower(), {})))

    @property
    def record(self) -> str:
        """What an adapter should record as its base: a hub id of it when one is known, else its first name."""
        return next((name for name in self.names if name and not _looks_like_path(name)), self.names[0])


def identity(config: dict) -> dict:
    """The values of a config.json that identify its model (see IDENTITY)."""
    return {key: config[key] for key in IDENTITY if key in config}


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_adapter_dir(path: str, max_lora_rank: int, base: Base | str | None = None, check_base: bool = True) -> list[str]:
    """Return the problems of one adapter folder, each with its fix; empty when it can be served."""
    return check_adapter(path, max_lora_rank, base, check_base)[0]


def check_adapter(path: str, max_lora_rank: int, base: Base | str | None = None,
                  check_base: bool = True) -> tuple[list[str], list[str]]:
    """The problems (each with its fix) and the warnings of one adapter folder.

    `base`: the served base (or its hub id), whose module names resolve target_modules and, with
    `check_base` (check_adapter_base), whose identity the adapter's recorded base must have.
    """
    if isinstance(base, str):
        base = Base.named(base)
    config_path = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config_path):
        return ["adapter_config.json is missing: save the adapter with peft's save_pretrained()"], []
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"adapter_config.json is not valid JSON ({exc}): re-save the adapter"], []
    if not isinstance(config, dict):
        return ["adapter_config.json is not a JSON object: re-save the adapter"], []

    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type={config.get('peft_type')!r}: only LoRA adapters can be served")
    if config.get("use_dora"):
        problems.append("use_dora=true: a DoRA adapter, which vLLM cannot serve ('vLLM does not yet support DoRA'); "
                        "retrain it as a plain LoRA (use_dora=False)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']!r}: vLLM serves only the LoRA matrices and refuses "
                        "whole saved modules ('vLLM only supports modules_to_save being None'); retrain without "
                        "modules_to_save")
    if config.get("lora_bias"):
        problems.append("lora_bias=true: vLLM refuses LoRA biases ('vLLM does not support LoRA bias'); retrain with "
                        "lora_bias=False")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower() not in VLLM_INITS:
        problems.append(f"init_lora_weights={init!r}: vLLM refuses it, as this init changes the base's weights when "
                        "peft loads the adapter; convert it to a plain LoRA (peft's "
                        "path_initial_model_for_weight_conversion), or set init_lora_weights to true if the served "
                        "base already holds the changed weights")
    problems += _rank_problems(config, max_lora_rank)
    problems += _target_problems(config, base.config if base else {})
    warnings = []
    if base is not None and check_base:
        trained_on = config.get("base_model_name_or_path")
        if not trained_on:
            warnings.append(f"adapter_config.json records no base_model_name_or_path, so its base cannot be checked: "
                            f"write the served base's hub id there ({base.record!r}) to have it checked")
        else:
            problems += base_problems(str(trained_on), base)
    problems += _check_weights(path, max_lora_rank)
    return problems, warnings


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _rank_problems(config: dict, max_lora_rank: int) -> list[str]:
    """r and every per-module rank (rank_pattern) within max_lora_rank.

    vLLM 0.32 applies rank_pattern and alpha_pattern per module as peft does (PEFTHelper.get_rank_and_scaling),
    so a pattern's scale needs no check of its own.
    """
    rank, problems = config.get("r"), []
    raise_it = "raise max_lora_rank (one of 8, 16, 32, 64, ...) or train the adapter with a smaller rank"
    if not _whole(rank):
        return [f"rank r={rank!r} is not a positive whole number: re-save the adapter"]
    if rank > max_lora_rank:
        problems.append(f"rank r={rank} is above max_lora_rank={max_lora_rank}: {raise_it}")
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    if not isinstance(ranks, dict) or not isinstance(alphas, dict):
        return problems + ["rank_pattern and alpha_pattern must be JSON objects of module to value: re-save the adapter"]
    for key, value in sorted(ranks.items()):
        if not _whole(value):
            problems.append(f"rank_pattern[{key!r}]={value!r} is not a positive whole number: re-save the adapter")
        elif value > max_lora_rank:
            problems.append(f"rank_pattern[{key!r}]={value} is above max_lora_rank={max_lora_rank}: {raise_it}")
    return problems


def module_names(base_config: dict) -> list[str]:
    """The module names peft sees in the base (Gemma3ForCausalLM's, as named_modules() lists them).

    For a base of another family, or without its layer count, only the two modules vLLM refuses, as
    every model named in the Llama fashion names them.
    """
    names = ["lm_head", "model.embed_tokens"]
    layers = base_config.get("num_hidden_layers")
    if base_config.get("model_type") not in LLAMA_NAMED or not _whole(layers):
        return names
    names += ["", "model", "model.layers", "model.norm", "model.rotary_emb", "model.rotary_emb_local"]
    for i in range(layers):
        layer = f"model.layers.{i}"
        names += [layer, f"{layer}.self_attn", f"{layer}.mlp", f"{layer}.mlp.act_fn"]
        names += [f"{layer}.self_attn.{p}" for p in (*PROJECTIONS[:4], "q_norm", "k_norm")]
        names += [f"{layer}.mlp.{p}" for p in PROJECTIONS[4:]]
        names += [f"{layer}.{norm}" for norm in ("input_layernorm", "post_attention_layernorm",
                                                 "pre_feedforward_layernorm", "post_feedforward_layernorm")]
    return names


def _matcher(value, what: str):
    """peft's rule (tuners_utils.check_target_module_exists): a string is a regex the whole module name must match,
    a list names modules by their last parts."""
    if isinstance(value, str):
        pattern = re.compile(value)
        return lambda name: pattern.fullmatch(name) is not None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return lambda name: any(name == v or name.endswith("." + v) for v in value)
    raise ValueError(f"{what} must be a list of module names or one regular expression")


def _target_problems(config: dict, base_config: dict) -> list[str]:
    """target_modules resolved against the base's module names: never lm_head or embed_tokens, some projection."""
    targets, exclude = config.get("target_modules"), config.get("exclude_modules")
    if not targets or targets == "all-linear":  # peft's all-linear leaves the output layer out
        return []
    try:
        targeted, excluded = _matcher(targets, "target_modules"), _matcher(exclude or [], "exclude_modules")
    except (re.error, ValueError) as exc:
        return [f"target_modules={targets!r} / exclude_modules={exclude!r}: {exc}: re-save the adapter"]
    known = module_names(base_config)
    names = [name for name in known if targeted(name) and not excluded(name)]
    bad = [name for name in names if name.rsplit(".", 1)[-1] in FORBIDDEN_MODULES]
    if bad:
        return [f"target_modules={targets!r} reaches {', '.join(bad)}: vLLM cannot serve adapters that change lm_head or "
                "embed_tokens; retrain with target_modules limited to the attention and MLP projections "
                f"({', '.join(PROJECTIONS)})"]
    if len(known) > 2 and not any(name.rsplit(".", 1)[-1] in PROJECTIONS for name in names):
        return [f"target_modules={targets!r} matches no projection of the served base (whose are "
                f"model.layers.N.self_attn.q_proj ... mlp.down_proj): it was trained for another model; retrain on the "
                "served base"]
    return []


def _looks_like_path(name: str) -> bool:
    """A folder, not a hub id ('owner/name'): absolute, relative, home, Windows, or deeper than owner/name."""
    return name.startswith(("/", "~", ".")) or "\\" in name or re.match(r"^[A-Za-z]:", name) is not None \
        or name.count("/") > 1


def base_problems(trained_on: str, base: Base) -> list[str]:
    """The adapter's recorded base against the served one: the same hub id, or a local copy recognised by its config."""
    fix = "retrain on the served base, or set check_adapter_base = False to serve it anyway"
    if trained_on.rstrip("/").lower() in {name.rstrip("/").lower() for name in base.names}:
        return []
    local = os.path.expanduser(trained_on)
    if os.path.isdir(local):
        return _local_copy_problems(trained_on, local, base, fix)
    if _looks_like_path(trained_on):
        return [f"trained on base_model_name_or_path={trained_on!r}, a folder that is not on this machine, so its base "
                f"cannot be recognised: write the served base's hub id ({base.record!r}) there (lorafleet train "
                "--base-name does), or set check_adapter_base = False to serve it anyway"]
    return [f"trained on base_model_name_or_path={trained_on!r}, but the served base is {base.names[0]!r}: {fix}"]


def _local_copy_problems(trained_on: str, local: str, base: Base, fix: str) -> list[str]:
    """A recorded local folder is the served base when it is the uploaded folder or its config.json is the base's."""
    if base.folder and os.path.realpath(local) == os.path.realpath(base.folder):
        return []
    config = read_json(os.path.join(local, "config.json"))
    if config is None:
        return [f"trained on base_model_name_or_path={trained_on!r}, a folder without a readable config.json, so its "
                f"base cannot be recognised: write the served base's hub id ({base.record!r}) there, or set "
                "check_adapter_base = False to serve it anyway"]
    if str(config.get("_name_or_path") or "").lower() in {name.lower() for name in base.names}:
        return []
    mine = identity(config)
    if not base.config:
        return [f"trained on base_model_name_or_path={trained_on!r}, a local model, and the served base "
                f"{base.names[0]!r} has no config known here to compare it with: write the served base's hub id "
                "there, or set check_adapter_base = False to serve it anyway"]
    differ = [f"{key}={mine.get(key)!r} where the served base has {value!r}"
              for key, value in base.config.items() if mine.get(key) != value]
    if not differ:
        return []
    return [f"trained on base_model_name_or_path={trained_on!r}, a local model that is not the served base "
            f"{base.names[0]!r} (its config.json has {', '.join(differ[:3])}): {fix}"]


def _check_weights(path: str, max_lora_rank: int) -> list[str]:
    if os.path.isfile(os.path.join(path, SAFETENSORS)):
        return _check_safetensors(os.path.join(path, SAFETENSORS), max_lora_rank)
    if os.path.isfile(os.path.join(path, PICKLE)):
        return [f"{PICKLE} is a torch pickle, which the check does not open (loading a pickle can run code) and so "
                f"cannot check: convert it once, in the adapter's folder: {CONVERT} ; then delete {PICKLE}"]
    return [f"no weights: {SAFETENSORS} is missing"]


def _check_safetensors(weights: str, max_lora_rank: int) -> list[str]:
    if not os.access(weights, os.R_OK):
        return [f"{SAFETENSORS} is not readable: fix its permissions"]
    # A safetensors file is an 8-byte header length, a JSON header, then the tensors.
    try:
        size = os.path.getsize(weights)
        with open(weights, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(f.read(header_len))
        tensors = {k: t for k, t in header.items() if k != "__metadata__"}
        end = max((t["data_offsets"][1] for t in tensors.values()), default=0)
        if 8 + header_len + end != size:
            raise ValueError(f"expected {8 + header_len + end} bytes, found {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as exc:
        return [f"{SAFETENSORS} is corrupt ({exc}): copy or re-save the adapter"]
    problems = []
    bad = sorted(k for k in tensors if set(k.split(".")) & set(FORBIDDEN_MODULES))
    if bad:
        problems.append(f"{SAFETENSORS} holds {', '.join(bad[:3])}: weights for lm_head or embed_tokens, which vLLM "
                        "cannot serve; retrain with only the attention and MLP projections")
    for key, tensor in sorted(tensors.items()):
        parts, shape = key.split("."), tensor.get("shape") if isinstance(tensor, dict) else None
        if len(parts) > 2 and parts[-2] in ("lora_A", "lora_B") and isinstance(shape, list) and len(shape) == 2:
            rank = shape[0] if parts[-2] == "lora_A" else shape[1]
            if isinstance(rank, int) and rank > max_lora_rank:
                problems.append(f"{SAFETENSORS}: {key} has rank {rank}, above max_lora_rank={max_lora_rank}: raise "
                                "max_lora_rank (one of 8, 16, 32, 64, ...) or train the adapter with a smaller rank")
                break
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--max-lora-rank", type=int, required=True)
    parser.add_argument("--base-model", action="append", default=[],
                        help="a name the adapter may record as its base (repeat for each); none: no base check")
    parser.add_argument("--base-config", default="{}", help="the served base's identity (JSON), for its module names")
    parser.add_argument("--name", default=None, help="adapter name, for messages")
    args = parser.parse_args(argv)
    config = json.loads(args.base_config)
    base = Base(names=tuple(args.base_model) or ("",), config=config)
    problems, warnings = check_adapter(args.path, args.max_lora_rank, base, check_base=bool(args.base_model))
    for warning in warnings:
        print(f"lorafleet: warning: adapter {args.name or args.path}: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"adapter {args.name or args.path}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
