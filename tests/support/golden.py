"""Golden files: what a test renders, compared whole with the file under tests/fixtures/.

After a deliberate change, `LORAFLEET_UPDATE_GOLDEN=1 pytest tests/unit` writes the files anew; review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path


def matches_golden(golden: Path, text: str) -> None:
    if os.environ.get("LORAFLEET_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} changed: see the diff; if meant, LORAFLEET_UPDATE_GOLDEN=1"
