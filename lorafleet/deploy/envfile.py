"""Env files as compose reads them (`env_file:`): every value arrives exactly as given, or is refused.

Compose parses an env file as dotenv does: `$VAR` is interpolated, ` #` starts a comment and quotes
are syntax, so a bare `sk-$HOME #x` would be served as `sk-/root`. A value of plain characters is
written bare (so a generated key's file is the same bytes as ever); any other is single-quoted,
where compose takes every character literally but `\\'`, an escaped quote. What that cannot carry
(a line break, a NUL, a backslash at the end or before a quote: compose would read it as escaping
the quote) is refused.
"""

from __future__ import annotations

import re

PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]*")


def problem(value: str) -> str | None:
    """Why compose cannot read `value` back exactly from an env file, or None."""
    if any(c in value for c in "\n\r\0"):
        return "holds a line break or a NUL character"
    if value.endswith("\\") or "\\'" in value:
        return "has a backslash at its end or before a quote"
    return None


def line(name: str, value: str) -> str:
    """`NAME=value` that compose reads back as exactly `value` (check `problem` first)."""
    assert problem(value) is None, f"{name}: {problem(value)}"
    if PLAIN.fullmatch(value):
        return f"{name}={value}"
    return f"{name}='" + value.replace("'", "\\'") + "'"
