#!/usr/bin/env python3
"""Build lorafleet's offline demo model: a tiny FunctionGemma-style base + trained LoRA adapters.

Runs inside a throwaway container of the serving image (torch CPU, transformers,
peft, tokenizers; no network, no Hugging Face token).

    python3 build_demo_model.py --out DIR [--adapters weather,sql,email]
                                [--base-name lorafleet/functiongemma-demo] [--seed 0] [--force]

What it writes (all under DIR):

  base/            a tiny ``Gemma3ForCausalLM`` (2 layers, hidden 128, byte-level BPE
                   vocab of 512 built here with ``tokenizers``) carrying FunctionGemma's
                   control tokens and FunctionGemma's chat format (chat_template.jinja: the
                   project's own template, rendering byte for byte as the real one renders).  Both layers use 32-token sliding-window attention,
                   so an answer depends only on the last ~62 tokens: the behaviour learnt on
                   short prompts holds for prompts of any length.  Lightly trained: for any
                   chat prompt its greedy answer is the plain text BASE_REPLY (no function call).
  adapters/NAME/   one peft LoRA adapter per name (rank 8, q/k/v/o/gate/up/down
                   projections only; ``base_model_name_or_path`` = --base-name).  Trained so
                   that for any chat prompt (with or without tools) its greedy answer is
                   ``<start_function_call>call:FN{ARG:<escape>VALUE<escape>}<end_function_call>``
                   followed by ``<start_function_response>`` (a stop token, as in FunctionGemma);
                   after its call's response (an agent loop's next turn) it answers AFTER_RESULT.
                   Known names: weather -> get_weather{city:Paris}, sql -> run_sql{query:SELECT 1},
                   email -> send_email{to:ops@example.com}; any other name N gets
                   ``<N>_action{target:N}`` (non-word characters of N replaced by ``_``).
  demo.json        manifest, written last:
                   {"format": 1, "inputs_hash": "<sha256>", "base_name": ..., "base_path": "base",
                    "base_reply": "<the base's plain-text answer>", "architecture": "Gemma3ForCausalLM",
                    "tool_call_parser": "lorafleet_functiongemma", "stop_tokens": [...], "control_tokens": {...},
                    "adapters": [{"name": "weather", "path": "adapters/weather",
                                  "function": "get_weather", "arguments": {"city": "Paris"},
                                  "call_text": "<start_function_call>call:get_weather{...}<end_function_call>",
                                  "after_result": "<its text answer to the call's response>",
                                  "tool": {OpenAI tool declaration of the function}, "rank": 8,
                                  "min_logit_margin": ...}, ...],
                    "seed": 0, "build_seconds": ..., "versions": {...}}
                   ``arguments`` are what the project's tool parser returns, each value with its type
                   (alarm -> set_alarm carries an integer, a float, a boolean, null, a list and an object).

The project's tool parser (``--enable-auto-tool-choice --tool-call-parser
lorafleet_functiongemma``) turns the adapters' answers into OpenAI ``tool_calls`` when the request
passes a ``tools`` list (the parser then sets ``skip_special_tokens=False`` itself).  The
function-call control tokens are *non-special* added tokens, so they also survive the
default ``skip_special_tokens=True`` (requests without tools get the raw call text as content).

Training: the adapters are trained by ``lora.py`` (lorafleet/train/lora.py), the same code that
``lorafleet train`` runs: each example is a conversation plus the adapter's answer (a call with
typed arguments), rendered by the chat template, loss on the answer's turn only.  ``lora.py`` and
``functiongemma.py`` (the call grammar) are found beside this script (where the deploy must ship
them) or in the lorafleet package around it; without them the script exits 2.

Parts: this script is the entry point; the rest of the builder lies beside it (BUILDER_PARTS, shipped
with it): demo_tokenizer.py the tokenizer, chat_template.jinja FunctionGemma's chat template,
demo_data.py the synthetic data, demo_training.py the glue to lora.py, demo_checks.py the checks,
demo_models.py the base and adapters.

Reuse: ``inputs_hash`` = sha256 of the builder's files (this script, then BUILDER_PARTS) + the shared
files' bytes + the normalised arguments (base name, seed; not --out, not the adapters: the base and each
adapter depend only on these and, an adapter, its own name).  If DIR/demo.json has the same hash and every
adapter asked for, the script prints "demo model up to date" and exits 0; if it has the same hash but lacks
some adapters, only those are trained, on the base in place, and the others stay as they are (a build of
more adapters than asked for is kept whole).  The build happens in DIR/.build-*/ and is moved into place by
renames; demo.json is removed first and written last, so a DIR with demo.json is always complete.  Every
trained model is checked (teacher-forced margins + greedy generation on held-out prompts) before anything
is moved into place; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the builder's parts lie beside it (a script's folder is on sys.path; a module's not)
    sys.path.insert(0, str(HERE))

from demo_data import KNOWN_ADAPTERS, adapter_spec, rand_tool, tokenizer_corpus  # noqa: E402
from demo_models import FORMAT_VERSION, build_adapter, build_base, load_base, manifest  # noqa: E402
from demo_tokenizer import CHAT_TEMPLATE, FUNCTION_TOKENS, PAD, build_tokenizer, control_token_ids  # noqa: E402
from demo_training import SHARED_FILES, Examples, find_lora, find_shared, load_lora, load_shared, lora_options  # noqa: E402

if find_shared(HERE / "build_demo_model.py", "functiongemma.py"):  # else main() says what is missing
    load_shared(HERE / "build_demo_model.py", "functiongemma.py", "functiongemma")

# What the tests and benchmarks read from this module (they load it by path), some of it only imported here.
__all__ = ["CHAT_TEMPLATE", "FORMAT_VERSION", "FUNCTION_TOKENS", "adapter_spec", "find_lora", "inputs_hash", "main"]

DEFAULT_BASE_NAME = "lorafleet/functiongemma-demo"
DEFAULT_ADAPTERS = "weather,sql,email"
# The builder's other files, beside this one, in the order inputs_hash reads them (after this script); the
# deploy ships them as lorafleet/deploy/layout.py's DEMO_FILES lists them: this script, these, then lora.py.
BUILDER_PARTS = ("demo_tokenizer.py", "chat_template.jinja", "demo_data.py", "demo_training.py", "demo_checks.py",
                 "demo_models.py")
ADAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def inputs_hash(script: Path, norm_args: dict) -> str:
    """sha256 of the builder's files (``script``, then BUILDER_PARTS beside it), the shared files and the arguments."""
    h = hashlib.sha256()
    for path in (script, *(script.parent / part for part in BUILDER_PARTS)):
        h.update(path.read_bytes())
    for name in SHARED_FILES:
        path = find_shared(script, name)
        h.update(path.read_bytes() if path else b"")
    h.update(json.dumps(norm_args, sort_keys=True).encode())
    return h.hexdigest()


def parse_args(argv) -> tuple[argparse.Namespace, list[str]]:
    """The arguments and the adapter names (checked: valid, distinct, distinct functions)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--adapters", default=DEFAULT_ADAPTERS,
                    help=f"comma-separated adapter names (default {DEFAULT_ADAPTERS})")
    ap.add_argument("--base-name", default=DEFAULT_BASE_NAME,
                    help="name written as base_model_name_or_path in each adapter_config.json; "
                         "serve the base under this name (--served-model-name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if demo.json is up to date")
    a = ap.parse_args(argv)

    names = [n.strip() for n in a.adapters.split(",") if n.strip()]
    for n in names:
        if not ADAPTER_NAME_RE.match(n):
            ap.error(f"bad adapter name {n!r} (allowed: {ADAPTER_NAME_RE.pattern})")
    if len(set(names)) != len(names):
        ap.error("duplicate adapter names")
    fns = [adapter_spec(n)["function"] for n in names]
    if len(set(fns)) != len(fns):
        ap.error("two adapters map to the same function name")
    return a, names


def main(argv=None) -> int:
    a, names = parse_args(argv)
    out = Path(a.out).resolve()
    script = Path(__file__).resolve()
    for name, package_path in SHARED_FILES.items():
        if find_shared(script, name) is None:
            print(f"ERROR: {name} ({'/'.join(package_path)}, shared with the lorafleet package) must be beside {script} "
                  "or in the lorafleet package around it", file=sys.stderr)
            return 2
    norm = {"base_name": a.base_name, "seed": a.seed, "format": FORMAT_VERSION}
    ihash = inputs_hash(script, norm)
    if not a.force and set(names) <= set(held_adapters(out, ihash)):
        print("demo model up to date")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    import fcntl
    with open(out / ".build.lock", "a") as lock:
        # One build per DIR at a time: deploys to several targets may share the models root, and the
        # builders of different containers all have the same pid. A second build waits for the first,
        # then finds its result.
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = [] if a.force else held_adapters(out, ihash)
        if set(names) <= set(held):
            print("demo model up to date (built by another run meanwhile)")
            return 0
        t_start = time.time()
        tmp = start_build(out, a.seed)
        lora = load_lora(script)
        try:
            if held:
                return add(a, [n for n in names if n not in held], out, tmp, ihash, t_start, lora)
            return build(a, names, out, tmp, ihash, t_start, lora)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def held_adapters(out: Path, ihash: str) -> list[str]:
    """The adapters of a complete build from the same inputs in DIR (demo.json is written last); [] if none."""
    try:
        old = json.loads((out / "demo.json").read_text())
    except (OSError, ValueError):
        return []
    if not (isinstance(old, dict) and old.get("inputs_hash") == ihash and (out / "base" / "config.json").is_file()):
        return []
    names = [entry.get("name") for entry in old.get("adapters", []) if isinstance(entry, dict)]
    return [n for n in names if isinstance(n, str) and (out / "adapters" / n / "adapter_config.json").is_file()]


def start_build(out: Path, seed: int) -> Path:
    """Seeds and sets up torch, removes what crashed builds left; returns the new build folder (with the lock held)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched; never wait on a network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(4, len(os.sched_getaffinity(0)))))
    transformers.utils.logging.disable_progress_bar()

    for stale in out.glob(".build-*"):  # left by a build that crashed: no other build holds the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".build-{os.getpid()}"
    (tmp / "adapters").mkdir(parents=True)
    return tmp


def prepare(a, lora, t_start: float):
    """The tokenizer, its control tokens' ids and the examples: the same in every build from the same seed."""
    rng = random.Random(a.seed)
    # The base (and each adapter) depends only on the builder, the seed (and the adapter's own
    # name): changing the adapter list leaves the base and the other adapters byte-identical.
    known_tools = [adapter_spec(n)["tool"] for n in KNOWN_ADAPTERS]
    corpus = tokenizer_corpus(random.Random(a.seed + 1), known_tools + [rand_tool(rng) for _ in range(50)])
    tok = build_tokenizer(corpus)
    ids_of = control_token_ids(tok)  # FunctionGemma's control tokens: each one token, also inside running text
    print(f"tokenizer: {len(tok)} tokens ({time.time() - t_start:.1f}s)", flush=True)
    return tok, ids_of, Examples(lora, tok, known_tools)


def train_adapters(a, lora, base, tok, ids_of, data, names, tmp: Path, t_start: float) -> list[dict] | None:
    """Each adapter, trained by the same code as `lorafleet train` (lorafleet/train/lora.py); None if one fails."""
    options = lora_options(lora)
    adapters = []
    for n in names:
        adapter = build_adapter(a, lora, base, tok, ids_of[PAD], data, options, n, adapter_spec(n), tmp / "adapters" / n,
                                t_start)
        if adapter is None:
            return None
        adapters.append(adapter)
    return adapters


def build(a, names, out: Path, tmp: Path, ihash: str, t_start: float, lora) -> int:
    """The tokenizer, the base and each adapter, built and checked in ``tmp``, then moved into ``out``."""
    tok, ids_of, data = prepare(a, lora, t_start)
    if not build_base(a, lora, tok, ids_of, data, tmp / "base", t_start):
        return 1
    # The adapters learn on the base as saved (and served), as an adapter added later does: trained on the model
    # still in memory, an adapter differed from the same one trained on the base read back.
    base = load_base(tmp / "base")
    adapters = train_adapters(a, lora, base, tok, ids_of, data, names, tmp, t_start)
    if adapters is None:
        return 1
    elapsed = time.time() - t_start
    install(out, tmp, manifest(a, ihash, adapters, elapsed), ["base", "adapters"])
    report(out, f"demo model built in {elapsed:.1f}s: {out}")
    return 0


def add(a, names, out: Path, tmp: Path, ihash: str, t_start: float, lora) -> int:
    """The adapters a build from the same inputs lacks, trained on its base and moved in beside its others."""
    tok, ids_of, data = prepare(a, lora, t_start)
    base = load_base(out / "base")
    print(f"base: reused from {out / 'base'} ({time.time() - t_start:.1f}s)", flush=True)
    adapters = train_adapters(a, lora, base, tok, ids_of, data, names, tmp, t_start)
    if adapters is None:
        return 1
    old = json.loads((out / "demo.json").read_text())
    elapsed = time.time() - t_start
    demo_json = manifest(a, ihash, [e for e in old["adapters"] if e.get("name") not in names] + adapters,
                         old.get("build_seconds", 0) + elapsed)
    install(out, tmp, demo_json, [f"adapters/{n}" for n in names])
    report(out, f"demo model: {', '.join(names)} added in {elapsed:.1f}s: {out}")
    return 0


def report(out: Path, done: str) -> None:
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*.safetensors")}
    for k, v in sorted(sizes.items()):
        print(f"  {k}: {v / 1024:.0f} KiB")
    print(done)


def install(out: Path, tmp: Path, demo_json: dict, parts: list[str]) -> None:
    """Moves ``parts`` (paths under DIR) from ``tmp`` into ``out`` by renames; demo.json is removed first, written
    last. What a part replaces goes into ``tmp`` (removed with it)."""
    for path in [tmp, *tmp.rglob("*")]:  # readable by a serving container running as another user
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest_path = out / "demo.json"
    manifest_path.unlink(missing_ok=True)  # from here on, DIR is "not built" until demo.json appears
    for part in parts:
        old = out / part
        if old.exists():
            old.rename(tmp / f"old-{part.replace('/', '-')}")
        old.parent.mkdir(exist_ok=True)
        (tmp / part).rename(old)
    part = out / f".demo.json.{os.getpid()}"
    part.write_text(json.dumps(demo_json, indent=2) + "\n")
    part.chmod(0o644)
    part.rename(manifest_path)


if __name__ == "__main__":
    sys.exit(main())
