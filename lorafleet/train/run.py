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

from lorafleet.deploy.adapters.check import check_adapter_dir
from lorafleet.functiongemma import CallSyntaxError, parse_calls
from lorafleet.train import card, lora
from lorafleet.train.cli import base_name_for, options
from lorafleet.train.data import DataError, Example, fingerprint, load_examples
from lorafleet.train.prepare import STOP_TEXTS, prepare, template_render
from lorafleet.train.score import score, summarise


def fail(message: str, code: int = 2) -> int:
    print(f"lorafleet train: {message}", file=sys.stderr)
    return code


def train_command(args: argparse.Namespace) -> int:
    """Train per ``args`` (already checked by lorafleet.train.cli); 0 when the adapter is in place."""
    try:
        examples = load_examples(args.data)
        heldout = load_examples(args.eval, require_final_assistant=True) if args.eval else None
    except DataError as exc:
        return fail(str(exc))
    base_name = base_name_for(args.base, args.base_name)
    if not base_name:
        return fail(f"--base {args.base} is a folder without a recorded name: give --base-name, the name the "
                    "server serves the base under (e.g. google/functiongemma-270m-it); it goes into "
                    "adapter_config.json, where the deploy checks it")
    try:
        import peft
        import torch
        import transformers
        from tqdm import tqdm
    except ImportError as exc:
        return fail(f"{exc.name} is not installed: pip install 'lorafleet[train]', or train in a container of the "
                    "serving image (docs/training.md)")

    t0 = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.utils.logging.disable_progress_bar()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto"
                                                                                 else args.device)
    if device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda: torch sees no GPU here (in a container: docker run --gpus all)")
    tok = transformers.AutoTokenizer.from_pretrained(args.base)
    if not getattr(tok, "chat_template", None):
        return fail(f"--base {args.base} has no chat template: the examples are rendered with the base model's "
                    "own template (FunctionGemma ships one)")
    render = template_render(tok)

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    try:
        prepared = prepare(examples, render, encode, args.max_length)
    except lora.TemplateError as exc:
        return fail(str(exc))
    if prepared.too_long:
        print(f"lorafleet train: left out {len(prepared.too_long)} example(s) over --max-length {args.max_length} "
              f"tokens (lines {', '.join(map(str, prepared.too_long[:10]))})", file=sys.stderr)
    if not prepared.examples:
        return fail("no example left to train on (every one is over --max-length or has no trained turn)")

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32,
                                                              attn_implementation="eager")
    try:
        model = lora.lora_model(model, options(args))
    except lora.OptionError as exc:
        return fail(str(exc))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    n = len(prepared.examples)
    steps = args.max_steps or lora.steps_for(n, args.batch_size, args.epochs)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    print(f"lorafleet train: {n} examples ({prepared.trained_tokens} trained tokens), {steps} steps of "
          f"{args.batch_size} on {device}; base {args.base}", file=sys.stderr)
    bar = tqdm(total=steps, desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    t_train = time.time()
    losses = lora.train(model, params, prepared.examples, steps, args.lr, args.batch_size, rng, pad_id,
                        drop_last=False, on_step=on_step, device=device,
                        autocast_dtype=torch.bfloat16 if bf16 else None)
    bar.close()
    train_seconds = time.time() - t_train

    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        lora.save_adapter(model, tmp, base_name)
        ev = None
        if heldout:
            ev = offline_eval(model, tok, render, heldout, device)
            ev["data"] = args.eval
        tail = losses[-min(10, len(losses)):]
        record = {
            "base_model": base_name, "base": args.base, "rank": args.rank, "alpha": args.alpha,
            "dropout": args.dropout, "targets": sorted(args.targets), "lr": args.lr, "epochs": args.epochs,
            "batch_size": args.batch_size, "seed": args.seed, "data": os.path.basename(args.data),
            "data_sha256": fingerprint(args.data), "examples": n, "left_out": len(prepared.too_long),
            "trained_tokens": prepared.trained_tokens, "steps": steps, "final_loss": round(sum(tail) / len(tail), 5),
            "device": device, "seconds": round(time.time() - t0, 1), "train_seconds": round(train_seconds, 1),
            "examples_per_second": round(steps * args.batch_size / train_seconds, 2) if args.max_steps else
            round(n * args.epochs / train_seconds, 2),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
            "eval": ev,
        }
        (tmp / "README.md").write_text(card.render_card(out.name, record), encoding="utf-8")
        problems = check_adapter_dir(str(tmp), args.max_lora_rank, base_name)
        if problems:
            return fail("the adapter would not be served: " + "; ".join(problems), 1)
        for path in [tmp, *tmp.rglob("*")]:  # readable by a serving container running as another user
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = f"adapter written to {out}: {steps} steps, final loss {record['final_loss']:.4f}, " \
              f"{record['examples_per_second']} examples/s"
    if ev:
        summary += (f"; held-out whole call {_pct(ev['call_accuracy'])}, no call when none wanted "
                    f"{_pct(ev['no_call_accuracy'])}")
    print(summary, file=sys.stderr)
    if args.json:
        print(json.dumps(record, indent=2))
    return 0


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
