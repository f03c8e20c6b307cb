"""The demo builder's glue to the shared training code (lora.py, lorafleet/train/lora.py): finding and
loading it, the examples, the loop.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  ``lora`` is the shared
training code as load_lora returns it, passed in.  Standard library only at import time.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from demo_data import AFTER_RESULT, HELD_OUT, HELD_OUT_RESULTS, rand_conversation, rand_sentence
from demo_tokenizer import encode_example, text_ids

AFTER_RESULT_ANSWER = {"role": "assistant", "content": AFTER_RESULT}
LORA_FILE = "lora.py"  # lorafleet/train/lora.py: the training code shared with `lorafleet train`
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Both layers use sliding-window attention with a small window, so every answer depends only
# on the last 2*(WINDOW-1) tokens: training on prompts cut to their last PROMPT_CTX tokens is
# then exact for prompts of any length (and keeps the build fast).
WINDOW = 32
PROMPT_CTX = 80


# Modules of the lorafleet package the builder runs: shipped beside it by the deploy (DEMO_FILES), found in
# the package around files/models/ in a checkout. Their bytes are part of the inputs hash, in this order.
SHARED_FILES = {
    "functiongemma.py": ("lorafleet", "functiongemma.py"),  # the call grammar: an adapter's call as the template writes it
    LORA_FILE: ("lorafleet", "train", LORA_FILE),
}


def find_shared(script: Path, name: str) -> Path | None:
    """Shared file ``name``: beside ``script``, the builder's entry point (as the deploy ships it), else in
    the lorafleet package around it."""
    candidates = [script.parent / name]
    parents = script.resolve().parents
    if len(parents) > 2:  # files/models/ in a checkout -> lorafleet/ (the deploy's /demo has no such parent)
        candidates.append(parents[2].joinpath(*SHARED_FILES[name]))
    for path in candidates:
        if path.is_file():
            return path
    return None


def find_lora(script: Path) -> Path | None:
    return find_shared(script, LORA_FILE)


def load_shared(script: Path, name: str, module_name: str):
    """A shared module loaded by path (no package here), registered under ``module_name``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(module_name, find_shared(script, name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def load_lora(script: Path):
    """lorafleet/train/lora.py, the training code ``lorafleet train`` runs."""
    return load_shared(script, LORA_FILE, "lorafleet_train_lora")


def encode_answer(lora, tok, messages, tools, answer: dict):
    """(prompt ids, answer ids) cut by the shared training code, as ``lorafleet train`` cuts a JSONL example:
    the conversation plus ``answer`` rendered by the chat template, only ``answer``'s turn learnt."""
    def render(msgs, tls, add_generation_prompt):
        return tok.apply_chat_template(msgs, tools=tls, add_generation_prompt=add_generation_prompt, tokenize=False)

    segments = lora.assistant_segments(render, messages + [answer], tools, trained=lambda m: m is answer)
    ids, labels = lora.encode_segments(segments, lambda text: text_ids(tok, text))
    k = next(i for i, label in enumerate(labels) if label != lora.IGNORE)
    return ids[:k], ids[k:]


def as_example(lora, prompt, target):
    """(ids, labels) for the shared training loop: the prompt masked, the answer learnt."""
    return prompt + target, [lora.IGNORE] * len(prompt) + target


def train(lora, model, params, examples, steps, lr, batch_size, rng, pad_id, label, lm_weight=0.0):
    """The shared loop (lorafleet/train/lora.py) on (prompt, answer) pairs; with lm_weight > 0 the prompt
    tokens are learnt too (the base learns every token of the format, so that its tied embeddings, which
    LoRA cannot change, are usable by the adapters' answers)."""
    lora.train(model, params, [as_example(lora, p, t) for p, t in examples], steps, lr, batch_size, rng, pad_id,
               lm_weight=lm_weight, on_step=lora.Progress(label, steps))


def lora_options(lora):
    """The adapters' LoRA options (rank 8, every projection), checked by the shared code as `lorafleet train` is."""
    options = lora.LoraOptions(rank=LORA_RANK, alpha=LORA_ALPHA, targets=tuple(LORA_TARGETS), dropout=0.0,
                               max_lora_rank=16)
    assert not lora.check_options(options), lora.check_options(options)
    return options


def adapter_answer(spec: dict) -> dict:
    """An adapter's answer, as a line of lorafleet train's JSONL has it: a call with typed arguments."""
    return {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": spec["function"], "arguments": spec["arguments"]}}]}


def with_result(spec: dict, msgs: list[dict], result: str) -> list[dict]:
    """``msgs`` followed by the adapter's call and a result for it: the next turn of an agent loop."""
    call = adapter_answer(spec)["tool_calls"][0]
    return msgs + [{"role": "assistant", "tool_calls": [{"id": "call_demo", **call}]},
                   {"role": "tool", "tool_call_id": "call_demo", "name": spec["function"], "content": result}]


class Examples:
    """(prompt ids, answer ids) pairs for one tokenizer: random conversations to train on, HELD_OUT to check.

    A target is either text (the base's reply) or an assistant message (an adapter's answer, cut as
    ``lorafleet train`` cuts it)."""

    def __init__(self, lora, tok, known_tools: list[dict]):
        self.lora, self.tok, self.known_tools = lora, tok, known_tools

    def encode(self, msgs, tools, target):
        if isinstance(target, str):
            return encode_example(self.tok, msgs, tools, target)
        return encode_answer(self.lora, self.tok, msgs, tools, dict(target))

    def with_known(self, own: list[dict]) -> list[dict]:
        """The known adapters' tools, then those of ``own`` that are not among them."""
        return self.known_tools + [t for t in own if t not in self.known_tools]

    def training(self, target, count: int, r: random.Random, tools_for_prompts: list[dict]):
        """``count`` random conversations, each prompt cut to about its last PROMPT_CTX tokens."""
        ex = []
        while len(ex) < count:
            msgs, tools = rand_conversation(r, tools_for_prompts)
            p, t = self.encode(msgs, tools, target)
            if len(p) > PROMPT_CTX:
                p = p[-r.randint(PROMPT_CTX - 8, PROMPT_CTX):]
            ex.append((p, t))
        return ex

    def after_results(self, spec: dict, count: int, r: random.Random, tools_for_prompts: list[dict]):
        """``count`` agent-loop turns: a random conversation, the adapter's call and a result, answered with
        AFTER_RESULT (FunctionGemma answers a function's response in text, in the same turn)."""
        ex = []
        while len(ex) < count:
            msgs, tools = rand_conversation(r, tools_for_prompts)
            p, t = self.encode(with_result(spec, msgs, rand_sentence(r)), tools or [spec["tool"]], AFTER_RESULT_ANSWER)
            ex.append((p[-r.randint(PROMPT_CTX - 8, PROMPT_CTX):] if len(p) > PROMPT_CTX else p, t))
        return ex

    def held_out(self, target, own: list[dict]):
        """HELD_OUT's prompts, with no tools, ``own`` tools, or every tool (``all``)."""
        ex = []
        everything = self.with_known(own)
        for msgs, tools_kind in HELD_OUT:
            tools = None if tools_kind is None else (own if tools_kind == "own" else everything)
            ex.append(self.encode(msgs, tools or None, target))
        return ex

    def held_out_results(self, spec: dict):
        """HELD_OUT's first prompts with the adapter's call and a held-out result, to be answered AFTER_RESULT."""
        return [self.encode(with_result(spec, msgs, result), [spec["tool"]], AFTER_RESULT_ANSWER)
                for (msgs, _), result in zip(HELD_OUT, HELD_OUT_RESULTS)]
