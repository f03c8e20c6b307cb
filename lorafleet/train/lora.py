"""LoRA training shared by ``lorafleet train`` and the demo model builder: options, masking, loop, save.

Standard library at import time; torch and peft are imported inside the functions that need
them. Standalone on purpose (it imports nothing from lorafleet): the demo builder
(files/models/build_demo_model.py) loads this file by path inside a throwaway container of
the serving image, where the lorafleet package is not installed.

The pieces, in the order a run uses them:

- :class:`LoraOptions` and :func:`check_options`: what vLLM can serve (rank, targets), refused
  before any training with the option to change;
- :func:`assistant_segments` and :func:`encode_segments`: a conversation rendered by the base
  model's own chat template, cut into the assistant's turns (trained) and everything else
  (masked with ``IGNORE``); each piece is tokenized on its own, as vLLM tokenizes a prompt;
- :func:`lora_model`, :func:`train` and :func:`save_adapter`: peft around the base, AdamW with a
  short warm-up and a cosine decay, the adapter folder vLLM loads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

# vLLM's --max-lora-rank takes only these values; an adapter of another rank takes the next slot anyway.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The attention and MLP projections of Gemma 3 (FunctionGemma): what vLLM's LoRA layers cover.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# vLLM rejects adapters that replace these layers (its LoRA support covers linear projections only).
FORBIDDEN_MODULES = ("lm_head", "embed_tokens")
IGNORE = -100  # the label of a token the loss skips (torch's cross_entropy ignore_index)

# FunctionGemma: a call ends the model's output with <start_function_response>, the extra stop
# sequence, so the model must learn to write it after its last call.
CALL_END = "<end_function_call>"
CALL_STOP = "<start_function_response>"


class OptionError(ValueError):
    """Training options that would give an adapter vLLM cannot serve."""


@dataclass(frozen=True)
class LoraOptions:
    """The adapter's shape. Defaults are FunctionGemma's usual ones (rank 16, alpha 32, all projections)."""

    rank: int = 16
    alpha: int = 32
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.05
    max_lora_rank: int = 32
    modules_to_save: tuple[str, ...] = field(default=())


def check_options(o: LoraOptions) -> list[str]:
    """The problems of ``o``, each naming the command-line option and the fix; empty when vLLM can serve it."""
    ranks = ", ".join(map(str, VLLM_LORA_RANKS))
    problems = []
    if o.max_lora_rank not in VLLM_LORA_RANKS:
        problems.append(f"--max-lora-rank {o.max_lora_rank}: vLLM's --max-lora-rank takes only {ranks}; "
                        "give the server's max_lora_rank (group_data)")
    if not isinstance(o.rank, int) or o.rank not in VLLM_LORA_RANKS:
        problems.append(f"--rank {o.rank}: not one of vLLM's LoRA ranks ({ranks}); an adapter of another rank "
                        "takes the next one's memory anyway: use --rank 8, 16 or 32")
    elif o.max_lora_rank in VLLM_LORA_RANKS and o.rank > o.max_lora_rank:
        problems.append(f"--rank {o.rank} is above --max-lora-rank {o.max_lora_rank}: the server would refuse the "
                        f"adapter; use --rank {o.max_lora_rank} or lower, or raise max_lora_rank in group_data "
                        "and pass the same --max-lora-rank here")
    if not o.alpha > 0:
        problems.append(f"--alpha {o.alpha}: must be positive (usually twice --rank)")
    if not 0 <= o.dropout < 1:
        problems.append(f"--dropout {o.dropout}: must be at least 0 and below 1")
    if not o.targets:
        problems.append(f"--targets is empty: name the projections to adapt, e.g. {','.join(DEFAULT_TARGETS)}")
    bad = [t for t in o.targets if any(f in t for f in FORBIDDEN_MODULES)]
    if bad:
        problems.append(f"--targets {','.join(bad)}: vLLM cannot serve adapters that change lm_head or "
                        f"embed_tokens; keep to the projections ({','.join(DEFAULT_TARGETS)})")
    if o.modules_to_save:
        problems.append(f"--modules-to-save {','.join(o.modules_to_save)}: vLLM cannot serve adapters that carry "
                        "full copies of layers; drop it (train the projections with LoRA only)")
    return problems


# --------------------------------------------------------------------------------------------
# Masking: which tokens the loss sees
# --------------------------------------------------------------------------------------------

Render = Callable[[list, Any, bool], str]  # (messages, tools, add_generation_prompt) -> text


class TemplateError(ValueError):
    """The chat template renders a conversation in a way the assistant's turns cannot be cut from."""


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation; ``message`` is the assistant message it renders, if trained."""

    text: str
    trained: bool
    message: int | None = None


def assistant_segments(render: Render, messages: list[dict], tools: Any = None,
                       trained: Callable[[dict], bool] = lambda m: True) -> list[Segment]:
    """Cut the rendered conversation into the assistant's turns (trained) and the rest (masked).

    An assistant turn is what the template adds for it: the text between the conversation up to
    it rendered with the generation prompt and the conversation including it. A turn ending in a
    FunctionGemma call also trains the stop that follows (``<start_function_response>``): the
    template writes it before a tool response; at the end of the conversation it is added.
    """
    full = render(messages, tools, False)
    pieces: list[Segment] = []
    pos = 0
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or not trained(m):
            continue
        prompt = render(messages[:i], tools, True)
        upto = render(messages[: i + 1], tools, False)
        if not (upto.startswith(prompt) and full.startswith(upto)) or len(prompt) < pos:
            raise TemplateError(
                f"message {i}: the chat template does not render the conversation as a growing prefix "
                "(the text before this assistant turn changes once it is added), so its tokens cannot be "
                "told from the prompt's: end this example with that assistant turn (a line per turn to learn), "
                "or train on a base whose chat template renders a conversation as a growing prefix")
        start, end = len(prompt), len(upto)
        if full.startswith(CALL_STOP, end) and full[start:end].endswith(CALL_END):
            end += len(CALL_STOP)
        pieces.append(Segment(full[pos:start], False))
        pieces.append(Segment(full[start:end], True, i))
        pos = end
    if pieces and pos == len(full) and pieces[-1].text.endswith(CALL_END):
        pieces[-1] = Segment(pieces[-1].text + CALL_STOP, True, pieces[-1].message)
    pieces.append(Segment(full[pos:], False))
    return [p for p in pieces if p.text]


def encode_segments(segments: Sequence[Segment], encode: Callable[[str], list[int]]) -> tuple[list[int], list[int]]:
    """Token ids and labels: each segment tokenized alone; masked segments get ``IGNORE`` labels."""
    ids: list[int] = []
    labels: list[int] = []
    for s in segments:
        t = list(encode(s.text))
        ids += t
        labels += t if s.trained else [IGNORE] * len(t)
    return ids, labels


def trained_tokens(labels: Sequence[int]) -> int:
    return sum(1 for x in labels if x != IGNORE)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

Example = tuple[list[int], list[int]]  # (input ids, labels), labels not shifted


def collate(chunk: Sequence[Example], pad_id: int):
    """(input_ids, attention_mask, labels, prompt_labels), right-padded; prompt_labels are the masked tokens."""
    import torch

    n = max(len(ids) for ids, _ in chunk)
    ids_t = torch.full((len(chunk), n), pad_id, dtype=torch.long)
    labels_t = torch.full((len(chunk), n), IGNORE, dtype=torch.long)
    prompt_t = torch.full((len(chunk), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(chunk), n), dtype=torch.long)
    for r, (ids, labels) in enumerate(chunk):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
        labels_t[r, : len(ids)] = torch.tensor(labels)
        prompt_t[r, : len(ids)] = torch.tensor([t if lab == IGNORE else IGNORE for t, lab in zip(ids, labels)])
    return ids_t, mask, labels_t, prompt_t


def batches(examples: Sequence[Example], batch_size: int, rng, pad_id: int, drop_last: bool = True) -> Iterator:
    """One shuffled pass over ``examples`` in batches (the last, smaller one dropped if ``drop_last``)."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    stop = len(idx) - batch_size + 1 if drop_last else len(idx)
    for i in range(0, stop, batch_size):
        yield collate([examples[j] for j in idx[i : i + batch_size]], pad_id)


def steps_for(examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps for ``epochs`` passes over ``examples`` (the last batch of a pass may be smaller)."""
    return max(1, math.ceil(epochs * math.ceil(examples / batch_size)))


def train(model, params, examples: Sequence[Example], steps: int, lr: float, batch_size: int, rng, pad_id: int, *,
          lm_weight: float = 0.0, drop_last: bool = True, warmup: int = 10,
          on_step: Callable[[int, float], None] | None = None, device=None, autocast_dtype=None) -> list[float]:
    """AdamW on the labelled tokens for ``steps`` steps; returns the loss of every step.

    The learning rate warms up linearly over ``warmup`` steps, then follows a cosine down to a
    tenth of ``lr``. With ``lm_weight`` > 0 the masked (prompt) tokens are learnt too, at that
    weight (the demo base learns every token of the format that way).
    """
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    step, losses = 0, []
    model.train()
    while step < steps:
        for ids, mask, labels, prompt_labels in batches(examples, batch_size, rng, pad_id, drop_last):
            cur = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            for g in opt.param_groups:
                g["lr"] = cur if step >= warmup else lr * (step + 1) / warmup
            if device is not None:
                ids, mask, labels, prompt_labels = (t.to(device) for t in (ids, mask, labels, prompt_labels))
            with torch.autocast(device_type=ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            flat = logits.float().reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(flat, labels[:, 1:].reshape(-1), ignore_index=IGNORE)
            if lm_weight:
                loss = loss + lm_weight * F.cross_entropy(flat, prompt_labels[:, 1:].reshape(-1), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, losses[-1])
            if step >= steps:
                break
    model.eval()
    return losses


def lora_model(model, o: LoraOptions):
    """``model`` wrapped by peft with a LoRA of shape ``o`` (only the LoRA weights train)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout, bias="none",
                        target_modules=list(o.targets), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        if "not found" in str(exc) or "Target module" in str(exc):
            raise OptionError(f"--targets {','.join(o.targets)}: {exc}") from exc
        raise


def save_adapter(peft_model, out_dir: Path | str, base_name: str) -> dict:
    """peft's ``save_pretrained`` into ``out_dir``, the base recorded as ``base_name``; returns adapter_config."""
    out = Path(out_dir)
    peft_model.save_pretrained(out, safe_serialization=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    config["target_modules"] = sorted(config["target_modules"])  # peft writes a set: keep the file stable
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


class Progress:
    """Prints a line every ``every`` steps (for logs; the CLI shows a tqdm bar instead)."""

    def __init__(self, label: str, steps: int, every: int = 50, print_fn=print):
        self.label, self.steps, self.every, self.print = label, steps, every, print_fn
        self.t0 = time.time()

    def __call__(self, step: int, loss: float) -> None:
        if step % self.every == 0 or step == self.steps:
            self.print(f"  [{self.label}] step {step}/{self.steps} loss {loss:.4f} ({time.time() - self.t0:.0f}s)",
                       flush=True)
