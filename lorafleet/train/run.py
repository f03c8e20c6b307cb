"""One training run of ``lorafleet train``: load, encode, train, save, card, check. Needs torch.

Runs where the user is: on the laptop's CPU, or on the GPU box in a throwaway container of the
serving image (which has torch, transformers and peft; docs/training.md has the command).
The adapter is written to a hidden folder beside ``--out`` and moved into place only once it
has passed the same check the deploy makes (``check_adapter_dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from lorafleet.adapters.check import check_adapter_dir
from lorafleet.functiongemma import CallSyntaxError, parse_calls
from lorafleet.train import card, lora
from lorafleet.train.cli import base_name_for, options
from lorafleet.train.data import DataError, Example, fingerprint, load_examples
from lorafleet.train.prepare import STOP_TEXTS, prepare, template_render
from lorafleet.train.score import score, summarise


def fail(message: str, code: int = 2) -> int:
    print(f"lorafleet train: {message}", file=sys.stderr)
    return code


class TrainError(Exception):
    """A reason to stop, said to the user as it is; `code` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def train_command(args: argparse.Namespace) -> int:
    """Train per ``args`` (already checked by lorafleet.train.cli); 0 when the adapter is in place."""
    try:
        return _train(args)
    except TrainError as exc:
        return fail(str(exc), exc.code)


def _train(args: argparse.Namespace) -> int:
    examples, heldout = _load_data(args)
    base_name = base_name_for(args.base, args.base_name)
    if not base_name:
        raise TrainError(f"--base {args.base} is a folder without a recorded name: give --base-name, the name the "
                         "server serves the base under (e.g. google/functiongemma-270m-it); it goes into "
                         "adapter_config.json, where the deploy checks it")
    libs = _import_training_libraries()
    torch, transformers = libs["torch"], libs["transformers"]
    t0 = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.utils.logging.disable_progress_bar()
    device = _device(args.device, torch)
    tok = transformers.AutoTokenizer.from_pretrained(args.base)
    if not getattr(tok, "chat_template", None):
        raise TrainError(f"--base {args.base} has no chat template: the examples are rendered with the base model's "
                         "own template (FunctionGemma ships one)")
    render = template_render(tok)
    prepared = _prepare(args, examples, render, lambda text: tok(text, add_special_tokens=False)["input_ids"])

    torch.manual_seed(args.seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32,
                                                              attn_implementation="eager")
    try:
        model = lora.lora_model(model, options(args))
    except lora.OptionError as exc:
        raise TrainError(str(exc)) from None
    model.to(device)
    steps = args.max_steps or lora.steps_for(len(prepared.examples), args.batch_size, args.epochs)
    losses, train_seconds = _fit(args, libs, model, tok, prepared, steps, device)
    run = {"t0": t0, "steps": steps, "losses": losses, "train_seconds": train_seconds, "device": device}
    out, record = _write_adapter(args, libs, model, tok, render, heldout, prepared, base_name, run)
    _print_summary(args, out, record)
    return 0


def _load_data(args: argparse.Namespace) -> tuple[list[Example], list[Example] | None]:
    try:
        examples = load_examples(args.data)
        heldout = load_examples(args.eval, require_final_assistant=True) if args.eval else None
    except DataError as exc:
        raise TrainError(str(exc)) from None
    return examples, heldout


def _import_training_libraries() -> dict:
    try:
        import peft
        import torch
        import transformers
        from tqdm import tqdm
    except ImportError as exc:
        raise TrainError(f"{exc.name} is not installed: pip install 'lorafleet[train]', or train in a container of "
                         "the serving image (docs/training.md)") from None
    return {"peft": peft, "torch": torch, "transformers": transformers, "tqdm": tqdm}


def _device(asked: str, torch) -> str:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if asked == "auto" else asked
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: torch sees no GPU here (in a container: docker run --gpus all)")
    return device


def _prepare(args: argparse.Namespace, examples: list[Example], render, encode):
    try:
        prepared = prepare(examples, render, encode, args.max_length)
    except lora.TemplateError as exc:
        raise TrainError(str(exc)) from None
    if prepared.too_long:
        print(f"lorafleet train: left out {len(prepared.too_long)} example(s) over --max-length {args.max_length} "
              f"tokens (lines {', '.join(map(str, prepared.too_long[:10]))})", file=sys.stderr)
    if not prepared.examples:
        raise TrainError("no example left to train on (every one is over --max-length or has no trained turn)")
    return prepared


def _fit(args: argparse.Namespace, libs: dict, model, tok, prepared, steps: int, device: str) -> tuple[list[float], float]:
    """The training loop with a progress bar: the losses and the seconds it took."""
    torch = libs["torch"]
    params = [p for p in model.parameters() if p.requires_grad]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    print(f"lorafleet train: {len(prepared.examples)} examples ({prepared.trained_tokens} trained tokens), {steps} "
          f"steps of {args.batch_size} on {device}; base {args.base}", file=sys.stderr)
    bar = libs["tqdm"](total=steps, desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    started = time.time()
    losses = lora.train(model, params, prepared.examples, steps, args.lr, args.batch_size, random.Random(args.seed),
                        pad_id, drop_last=False, on_step=on_step, device=device,
                        autocast_dtype=torch.bfloat16 if bf16 else None)
    bar.close()
    return losses, time.time() - started


def _record(args: argparse.Namespace, libs: dict, prepared, base_name: str, run: dict, ev: dict | None) -> dict:
    """What the adapter's card and --json say: how it was trained, on what, and how it scored."""
    losses, seconds, n = run["losses"], run["train_seconds"], len(prepared.examples)
    tail = losses[-min(10, len(losses)):]
    return {
        "base_model": base_name, "base": args.base, "rank": args.rank, "alpha": args.alpha,
        "dropout": args.dropout, "targets": sorted(args.targets), "lr": args.lr, "epochs": args.epochs,
        "batch_size": args.batch_size, "seed": args.seed, "data": os.path.basename(args.data),
        "data_sha256": fingerprint(args.data), "examples": n, "left_out": len(prepared.too_long),
        "trained_tokens": prepared.trained_tokens, "steps": run["steps"], "final_loss": round(sum(tail) / len(tail), 5),
        "device": run["device"], "seconds": round(time.time() - run["t0"], 1), "train_seconds": round(seconds, 1),
        "examples_per_second": round(run["steps"] * args.batch_size / seconds, 2) if args.max_steps else
        round(n * args.epochs / seconds, 2),
        "versions": {name: libs[name].__version__ for name in ("torch", "transformers", "peft")},
        "eval": ev,
    }


def _write_adapter(args, libs, model, tok, render, heldout, prepared, base_name: str, run: dict) -> tuple[Path, dict]:
    """Save, score, card and check the adapter in a staging folder, then put it in place whole."""
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        lora.save_adapter(model, tmp, base_name)
        ev = None
        if heldout:
            ev = offline_eval(model, tok, render, heldout, run["device"])
            ev["data"] = args.eval
        record = _record(args, libs, prepared, base_name, run, ev)
        (tmp / "README.md").write_text(card.render_card(out.name, record), encoding="utf-8")
        problems = check_adapter_dir(str(tmp), args.max_lora_rank, base_name)
        if problems:
            raise TrainError("the adapter would not be served: " + "; ".join(problems), 1)
        for path in [tmp, *tmp.rglob("*")]:  # readable by a serving container running as another user
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, record


def _print_summary(args: argparse.Namespace, out: Path, record: dict) -> None:
    ev = record["eval"]
    summary = f"adapter written to {out}: {record['steps']} steps, final loss {record['final_loss']:.4f}, " \
              f"{record['examples_per_second']} examples/s"
    if ev:
        summary += (f"; held-out whole call {_pct(ev['call_accuracy'])}, no call when none wanted "
                    f"{_pct(ev['no_call_accuracy'])}")
    print(summary, file=sys.stderr)
    if args.json:
        print(json.dumps(record, indent=2))


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def offline_eval(model, tok, render, heldout: list[Example], device: str, max_new_tokens: int = 160) -> dict:
    """Greedy answers of the trained model to the held-out prompts, scored as ``lorafleet eval`` scores them."""
    import torch

    stop_ids = sorted({i for t in STOP_TEXTS if (i := tok.convert_tokens_to_ids(t)) is not None
                       and i != tok.unk_token_id} | ({tok.eos_token_id} if tok.eos_token_id is not None else set()))
    outcomes = []
    model.eval()
    for ex in heldout:
        prompt = render(ex.messages[:-1], ex.tools, True)
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]], device=device)
        with torch.no_grad():
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stop_ids,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0])
        text = tok.decode(new[0, ids.shape[1]:], skip_special_tokens=False)
        for stop in STOP_TEXTS:  # generation ends at the first stop token
            text = text.split(stop)[0]
        try:
            content, calls = parse_calls(text)
            got = [(c.name, c.arguments) for c in calls]
        except CallSyntaxError:
            content, got = text, [("<unparsable call>", text)]
        outcomes.append(score(ex.line, ex.expected_calls, got, content))
    return summarise(outcomes)
