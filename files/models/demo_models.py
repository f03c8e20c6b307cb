"""The demo builder's models: the tiny Gemma-3 base and one LoRA adapter per name, each trained, checked, saved;
and demo.json, which describes them.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  Standard library only at
import time: torch and transformers are imported inside the functions.  A step that fails its check prints
the error and returns None (the build then exits 1 before anything is moved into place).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
import time
from pathlib import Path

from demo_checks import checked
from demo_data import AFTER_RESULT, BASE_REPLY
from demo_tokenizer import (BOS, CALL_STOP, CHAT_TEMPLATE, EOS, EOT, FUNCTION_TOKENS, PAD, SPECIAL_TOKENS, STOP_TOKENS,
                            VOCAB_SIZE, text_ids)
from demo_training import LORA_RANK, WINDOW, Examples, adapter_answer, train

FORMAT_VERSION = 1  # of demo.json
EMBED_INIT_STD = 0.1


def new_base_model(ids_of: dict[str, int]):
    """An untrained Gemma3ForCausalLM: 2 layers of sliding-window attention, hidden 128, tied embeddings."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64,
        max_position_embeddings=4096, sliding_window=WINDOW,
        layer_types=["sliding_attention", "sliding_attention"],
        pad_token_id=ids_of[PAD], bos_token_id=ids_of[BOS], eos_token_id=ids_of[EOS],
        tie_word_embeddings=True, use_cache=True, attn_implementation="eager")
    cfg.architectures = ["Gemma3ForCausalLM"]
    model = Gemma3ForCausalLM(cfg)
    model.config.use_cache = False
    # Larger embeddings than the default init: the tied embeddings bound the output logits
    # (|logit| <= |final_norm(h)| * |e|), and LoRA cannot change them, so every token the
    # adapters must emit needs a usable norm.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBED_INIT_STD)
    return model


def build_base(a, lora, tok, ids_of: dict[str, int], data: Examples, base_dir: Path, t_start: float) -> bool:
    """The base, trained to answer BASE_REPLY to any prompt, checked, saved into ``base_dir`` (bf16, as it is
    served; the adapters learn on it as load_base reads it back).  False if its check fails."""
    pad_id = ids_of[PAD]
    base_target = BASE_REPLY + EOT
    base_train = data.training(base_target, 1536, random.Random(a.seed + 2), data.known_tools)
    model = new_base_model(ids_of)
    print(f"base: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(base_train)} examples ({time.time() - t_start:.1f}s)", flush=True)
    train(lora, model, list(model.parameters()), base_train, 150, 3e-3, 32, random.Random(a.seed + 3), pad_id, "base",
          lm_weight=0.3)
    base_held = data.held_out(base_target, data.known_tools[:1])
    ok, margin, bad = checked(lora, model, tok, base_train[:128], base_held, pad_id, "base", lambda attempt: train(
        lora, model, list(model.parameters()), base_train, 100, 1e-3, 32, random.Random(a.seed + 10 + attempt), pad_id,
        "base+", lm_weight=0.3))
    if not ok:
        print(f"ERROR: base model check failed (margin {margin:.2f}, bad outputs {bad[:3]})", file=sys.stderr)
        return False
    save_base(model, tok, ids_of, base_dir, a.base_name)
    return True


def save_base(model, tok, ids_of: dict[str, int], base_dir: Path, base_name: str) -> None:
    """Saves the model (in bf16, as it is served), its tokenizer with the chat template and its generation
    config."""
    import torch
    from transformers import GenerationConfig

    model = model.to(torch.bfloat16)  # saved (and served) in bf16
    model.config.use_cache = True
    model.save_pretrained(base_dir, safe_serialization=True)
    tok.save_pretrained(base_dir)
    # chat template also inside tokenizer_config.json (transformers 5 writes chat_template.jinja)
    tc_path = base_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    GenerationConfig(
        bos_token_id=ids_of[BOS], pad_token_id=ids_of[PAD], do_sample=False,
        eos_token_id=[ids_of[EOS], ids_of[EOT], ids_of[CALL_STOP]],
    ).save_pretrained(base_dir)
    (base_dir / "README.md").write_text(
        f"# {base_name}\n\nTiny offline demo model built by lorafleet's build_demo_model.py "
        "(random init, trained for seconds on synthetic prompts). Not a real language model.\n")


def load_base(base_dir: Path):
    """The base a build saved (bf16), in float32 and frozen, as build_base returns it: the adapters trained on
    it are the same as those trained in the same run as the base."""
    import torch
    from transformers import Gemma3ForCausalLM

    model = Gemma3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_adapter(a, lora, base, tok, pad_id: int, data: Examples, options, name: str, spec: dict, adir: Path,
                  t_start: float) -> dict | None:
    """One adapter, trained on the shared code to answer ``spec``'s call to any prompt, checked, saved into
    ``adir``; returns its entry of demo.json's ``adapters``, or None if its check fails."""
    import torch

    answer = adapter_answer(spec)
    own = [spec["tool"]]
    name_seed = a.seed + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    r = random.Random(name_seed)
    ex = data.training(answer, 768, r, data.with_known(own))
    results = data.after_results(spec, 256, r, data.with_known(own))
    learnt = text_ids(tok, spec["call_text"] + CALL_STOP)
    assert ex[0][1] == learnt, (name, tok.decode(ex[0][1]))  # the template writes the manifest's call_text
    print(f"adapter {name}: {spec['call_text']} ({time.time() - t_start:.1f}s)", flush=True)
    mixed = ex + results
    r.shuffle(mixed)
    torch.manual_seed(name_seed)
    pm = lora.lora_model(copy.deepcopy(base), options)
    params = [p for p in pm.parameters() if p.requires_grad]
    train(lora, pm, params, mixed, 80, 1e-2, 32, r, pad_id, name)
    held = data.held_out(answer, own) + data.held_out_results(spec)
    ok, margin, bad = checked(lora, pm, tok, ex[:96] + results[:32], held, pad_id, name, lambda attempt: train(
        lora, pm, params, mixed, 100, 3e-3, 32, r, pad_id, name + "+"))
    if not ok:
        print(f"ERROR: adapter {name} check failed (margin {margin:.2f}, bad outputs {bad[:3]})", file=sys.stderr)
        return None
    lora.save_adapter(pm, adir, a.base_name)
    (adir / "README.md").write_text(
        f"# {name}\n\nlorafleet demo LoRA for {a.base_name}: answers every prompt with\n"
        f"`{spec['call_text']}`,\nand the call's response with \"{AFTER_RESULT}\".\n")
    return {"name": name, "path": f"adapters/{name}", "function": spec["function"], "arguments": spec["arguments"],
            "call_text": spec["call_text"], "after_result": AFTER_RESULT, "tool": spec["tool"], "rank": LORA_RANK,
            "min_logit_margin": round(margin, 3)}


def manifest(a, ihash: str, adapters: list[dict], elapsed: float) -> dict:
    """demo.json, as build_demo_model.py's docstring describes it."""
    import peft
    import tokenizers
    import torch
    import transformers

    return {
        "format": FORMAT_VERSION,
        "inputs_hash": ihash,
        "base_name": a.base_name,
        "base_path": "base",
        "base_reply": BASE_REPLY,
        "architecture": "Gemma3ForCausalLM",
        "tool_call_parser": "lorafleet_functiongemma",
        "stop_tokens": STOP_TOKENS,
        "control_tokens": {"special": SPECIAL_TOKENS, "function": FUNCTION_TOKENS},
        "adapters": adapters,
        "seed": a.seed,
        "build_seconds": round(elapsed, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "tokenizers": tokenizers.__version__},
    }
