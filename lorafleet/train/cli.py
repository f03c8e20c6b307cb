"""``lorafleet train``: its options, their defaults and the checks that need no torch.

    lorafleet train DATA.jsonl --base MODEL_DIR_OR_HUB_ID --out ADAPTER_DIR
                    [--rank 16 --alpha 32 --lr 2e-4 --epochs 3 --seed 0 --max-lora-rank 32 ...]

(also ``python -m lorafleet.train ...``, which is how it runs in a container of the serving
image). Everything here imports without torch; the training itself is :mod:`lorafleet.train.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from lorafleet.train.lora import DEFAULT_TARGETS, LoraOptions, check_options

DEFAULTS = {"rank": 16, "alpha": 32, "dropout": 0.05, "lr": 2e-4, "epochs": 3.0, "batch_size": 8, "seed": 0,
            "max_lora_rank": 32, "max_length": 4096}


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("data", metavar="DATA.jsonl", help="training examples, OpenAI fine-tuning JSONL "
                   "({\"messages\": [...], \"tools\": [...]} a line)")
    p.add_argument("--base", required=True, help="the base model: a local folder or a hub id "
                   "(google/functiongemma-270m-it; gated: export HF_TOKEN)")
    p.add_argument("--out", required=True, help="the adapter folder to write (peft format, plus README.md)")
    p.add_argument("--base-name", help="the served base's name, written as base_model_name_or_path (the deploy "
                   "checks it); default: the hub id, or the demo build's name for a demo base folder")
    p.add_argument("--rank", type=int, default=d["rank"], help=f"LoRA rank (default {d['rank']})")
    p.add_argument("--alpha", type=int, default=d["alpha"], help=f"LoRA alpha (default {d['alpha']})")
    p.add_argument("--targets", type=_names, default=DEFAULT_TARGETS,
                   help=f"comma-separated modules to adapt (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--dropout", type=float, default=d["dropout"], help=f"LoRA dropout (default {d['dropout']})")
    p.add_argument("--modules-to-save", type=_names, default=(),
                   help="refused: vLLM cannot serve adapters with full copies of layers (here so that recipes "
                        "which set it stop with the reason)")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--epochs", type=float, default=d["epochs"], help=f"passes over the data (default {d['epochs']:g})")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"examples per step (default {d['batch_size']})")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"seed of the LoRA init and the shuffling "
                   f"(default {d['seed']})")
    p.add_argument("--max-lora-rank", type=int, default=d["max_lora_rank"],
                   help=f"the server's max_lora_rank: a higher --rank is refused (default {d['max_lora_rank']})")
    p.add_argument("--max-length", type=int, default=d["max_length"],
                   help=f"examples longer than this many tokens are left out, and counted (default {d['max_length']})")
    p.add_argument("--eval", metavar="HELDOUT.jsonl", help="score the adapter on held-out examples after training "
                   "(greedy, offline, like lorafleet eval); the score goes into the card")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto: the GPU if torch sees one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapter folder at --out")
    p.add_argument("--json", action="store_true", help="print the training record as JSON at the end")


def options(args: argparse.Namespace) -> LoraOptions:
    return LoraOptions(rank=args.rank, alpha=args.alpha, targets=tuple(args.targets), dropout=args.dropout,
                       max_lora_rank=args.max_lora_rank, modules_to_save=tuple(args.modules_to_save))


def problems(args: argparse.Namespace) -> list[str]:
    """Every refusal that needs no torch and no data: adapter shape, training knobs, the output folder."""
    found = check_options(options(args))
    if not args.lr > 0:
        found.append(f"--lr {args.lr}: must be positive (FunctionGemma: about 2e-4)")
    if not args.epochs > 0:
        found.append(f"--epochs {args.epochs}: must be positive")
    if args.max_steps is not None and args.max_steps < 1:
        found.append(f"--max-steps {args.max_steps}: must be at least 1")
    if args.batch_size < 1:
        found.append(f"--batch-size {args.batch_size}: must be at least 1")
    if args.max_length < 16:
        found.append(f"--max-length {args.max_length}: too short for any conversation")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        found.append(f"--out {args.out}: is a file; give a folder for the adapter")
    elif out.is_dir() and any(out.iterdir()) and not args.overwrite:
        found.append(f"--out {args.out}: the folder is not empty; give a new folder (a version of its own, e.g. "
                     f"{out.name}-v2) or --overwrite")
    return found


def base_name_for(base: str, given: str | None) -> str | None:
    """The name to record as the adapter's base: --base-name, a hub id, or the demo build's name."""
    if given:
        return given
    folder = Path(base)
    if not folder.exists():
        return base  # a hub id
    try:
        return json.loads((folder.parent / "demo.json").read_text())["base_name"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        name = ""
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists():
        return name
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorafleet train", description="Train a LoRA adapter vLLM can serve, from "
                                "OpenAI fine-tuning JSONL, with the base model's own chat template.")
    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``lorafleet train`` command: refuse early, then train (torch needed from here on)."""
    found = problems(args)
    if found:
        for problem in found:
            print(f"lorafleet train: {problem}", file=sys.stderr)
        return 2
    from lorafleet.train.run import train_command

    return train_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
