"""Every row of the settings table on the same probe values, against a golden file.

tests/fixtures/settings_table_probes.txt is the table's behaviour written out: for each setting and
each probe, the value `Settings` keeps and every problem reported. A bound moved by one (a port of
65536, a rank of 0), a message that loses its setting or its fix, a rule swapped for another: each
shows in the diff. After a deliberate change, write it anew with LORAFLEET_UPDATE_GOLDEN=1 and review
the diff.
"""

from __future__ import annotations

from pathlib import Path

from lorafleet.deploy.settings_table import TABLE
from tests.support.golden import matches_golden

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "settings_table_probes.txt"

# Each kind of value a setting may be given, with the bounds the table uses on both sides.
PROBES = [
    None, True, False, "", "text", "0", -1, 0, 1, 2, 8, 9, 10, 15, 16, 24, 64, 1000, 1001, 3600, 3601, 65535,
    65536, 0.5, 1.0, 1.5, [], ["--seed", "0"], ["--seed", 0], ("cache",), ["cache", "cache"], ["stack"], "cache",
    {}, {"A": 1}, "local", "cuda", "hub", "gateway", "auto", "half", "/srv/lorafleet", "/srv/./lf//", "srv/lf",
    "/srv/../etc", "/", "/etc", "/etc/lf", "/usr/local/lf", "/var/log", "/var/lib/docker/lf", "/home/a/.ssh/lf",
    "/mnt/d/Ana's AI", "/mnt/d/a:b", "/mnt/d/$HOME", "/mnt/d/ a", "127.0.0.1", "0.0.0.0", "::1", "not an ip",
    "tag:gpu", "tag:gpu,tag:lf", "gpu", "vllm/vllm-openai:v0.32.0", "vllm/vllm-openai:latest", "python:3.11-slim",
    "main", "0123456789abcdef0123456789abcdef01234567", "main;id", "..", "lorafleet_functiongemma", "LoraFleet",
    "lorafleet-serving", "function-gemma-server", "gpu box", "google/functiongemma-270m-it", "0-3", "3-0", "0,2,4-7",
    "1,",
]


def probe_table() -> str:
    """Per setting: the probes kept as given, those kept as something else, and each message (the probe's
    value written as <value>) with the probes that got it."""
    lines = []
    for row in TABLE:
        lines.append(f"== {row.name}{' (optional)' if row.optional else ''}")
        as_given, changed, messages = [], [], {}
        for value in PROBES:
            problems: list[str] = []
            kept = row.read({row.name: value}, problems)
            if not problems and kept == value and type(kept) is type(value):
                as_given.append(repr(value))
            elif not problems:
                changed.append(f"{value!r} -> {kept!r}")
            for problem in problems:
                template = problem.replace(repr(value), "<value>") if value not in (None, "") else problem
                messages.setdefault(template, []).append(f"{value!r} (kept as {kept!r})")
        lines.append("kept as given: " + ", ".join(as_given))
        lines.append("kept as: " + ", ".join(changed))
        lines += [f"! {template}\n    for: {', '.join(values)}" for template, values in messages.items()]
    return "\n".join(lines) + "\n"


def test_every_row_on_every_probe_reads_as_the_golden_file_says():
    text = probe_table()
    matches_golden(GOLDEN, text)


def test_a_missing_required_setting_names_where_to_add_it():
    problems: list[str] = []
    port = next(row for row in TABLE if row.name == "port")
    port.read({}, problems)
    assert problems == ["port is not set: add it to group_data/all.py"]
