"""The adapter's card: README.md beside the weights, saying how the adapter was made.

A table for people and the same record as JSON in a fenced block, so that a later run (or a
comparison of versions) can read it back with :func:`read_record`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FENCE = "lorafleet-train"
_BLOCK = re.compile(r"```json " + FENCE + r"\n(.*?)\n```", re.DOTALL)


def render_card(name: str, record: dict) -> str:
    """README.md text for an adapter called ``name`` from a training ``record`` (see lorafleet.train.run)."""
    ev = record.get("eval")
    rows = [
        ("base model", f"`{record['base_model']}`"),
        ("rank / alpha / dropout", f"{record['rank']} / {record['alpha']} / {record['dropout']}"),
        ("target modules", ", ".join(record["targets"])),
        ("learning rate / epochs / batch size", f"{record['lr']} / {record['epochs']} / {record['batch_size']}"),
        ("seed", str(record["seed"])),
        ("data", f"`{record['data']}`: {record['examples']} examples, {record['trained_tokens']} trained tokens"),
        ("data fingerprint (sha256)", f"`{record['data_sha256']}`"),
        ("steps", str(record["steps"])),
        ("final loss (mean of the last steps)", f"{record['final_loss']:.4f}"),
    ]
    if ev:
        rows.append(("eval (offline, greedy)",
                     f"`{ev['data']}`: whole call {_pct(ev['call_accuracy'])}, function name "
                     f"{_pct(ev['name_accuracy'])}, no call when none wanted {_pct(ev['no_call_accuracy'])} "
                     f"({ev['examples']} examples)"))
    rows += [
        ("trained on", f"{record['device']}, {record['seconds']} s, "
                       + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        "---\n"
        f"base_model: {record['base_model']}\n"
        "library_name: peft\n"
        "tags: [lora, functiongemma, lorafleet]\n"
        "---\n\n"
        f"# {name}\n\n"
        f"LoRA adapter for `{record['base_model']}`, trained with `lorafleet train` "
        "(loss on the assistant's turns only, rendered with the base model's chat template).\n\n"
        "| | |\n| --- | --- |\n"
        f"{table}\n\n"
        "The same record, for tools:\n\n"
        f"```json {FENCE}\n{json.dumps(record, indent=2, sort_keys=True)}\n```\n"
    )


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def read_record(adapter_dir: str | Path) -> dict | None:
    """The training record from an adapter's README.md, or None if it has none."""
    try:
        text = (Path(adapter_dir) / "README.md").read_text(encoding="utf-8")
    except OSError:
        return None
    m = _BLOCK.search(text)
    return json.loads(m.group(1)) if m else None
