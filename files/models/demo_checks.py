"""The demo builder's checks of a trained model: teacher-forced logit margins and greedy generation.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  Every model is checked
before anything is moved into place.  Standard library only at import time: torch is imported inside.
"""

from __future__ import annotations

import copy

from demo_training import as_example

MIN_MARGIN = 2.0  # the smallest (target logit - best other logit) a check accepts
ATTEMPTS = 4  # checks (each after more training) before a build gives up


def min_margin(lora, model, examples, pad_id) -> float:
    """Smallest (target logit - best other logit) over all target positions (teacher forcing)."""
    import torch
    worst = float("inf")
    with torch.no_grad():
        for i in range(0, len(examples), 16):
            chunk = [as_example(lora, p, t) for p, t in examples[i:i + 16]]
            ids, mask, labels, _ = lora.collate(chunk, pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            tgt = labels[:, 1:]
            sel = tgt != lora.IGNORE
            lg = logits[sel]
            t = tgt[sel]
            tl = lg.gather(1, t[:, None])[:, 0]
            lg = lg.scatter(1, t[:, None], float("-inf"))
            worst = min(worst, (tl - lg.max(1).values).min().item())
    return worst


def greedy_ok(model, tok, examples, dtype) -> list[str]:
    """Greedy-decode each held-out prompt in `dtype`; returns the list of mismatching outputs."""
    import torch
    m = copy.deepcopy(model).to(dtype)
    bad = []
    with torch.no_grad():
        for p, t in examples:
            ids = list(p)
            for _ in range(len(t)):
                logits = m(input_ids=torch.tensor([ids])).logits[0, -1]
                ids.append(int(logits.argmax()))
            if ids[len(p):] != t:
                bad.append(tok.decode(ids[len(p):]))
    return bad


def check(lora, model, tok, train_like, held_out, pad_id, label, min_ok=MIN_MARGIN):
    """(ok, smallest margin, mismatching bf16 greedy outputs) on training-like and held-out examples."""
    import torch
    margin = min(min_margin(lora, model, train_like, pad_id), min_margin(lora, model, held_out, pad_id))
    bad = greedy_ok(model, tok, held_out, torch.bfloat16)
    print(f"  [{label}] min logit margin {margin:.2f}; bf16 greedy mismatches {len(bad)}/{len(held_out)}", flush=True)
    return margin >= min_ok and not bad, margin, bad


def checked(lora, model, tok, train_like, held_out, pad_id, label, train_more):
    """Checks the model up to ATTEMPTS times, calling ``train_more(attempt)`` after each failed check
    (the last one too): (ok, margin, bad) of the last check."""
    for attempt in range(ATTEMPTS):
        ok, margin, bad = check(lora, model, tok, train_like, held_out, pad_id, label)
        if ok:
            break
        train_more(attempt)
    return ok, margin, bad
