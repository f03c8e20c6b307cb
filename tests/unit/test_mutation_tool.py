"""The mutation run's mutants: each a small change in place, the rest of the file byte for byte the same."""

from __future__ import annotations

import difflib

from tests.mutation.__main__ import statement_lines
from tests.mutation.mutants import python_mutants, shell_mutants

PYTHON = '''"""A docstring."""
LIMIT = 3


def check(value: int, names: list[str]) -> str:
    """Not mutated either."""
    if value > LIMIT and not names:
        raise ValueError(f"value {value} too big")
    for name in names:
        if name == "stop":
            break
    log(value)  # pragma: no mutate
    return "ok"
'''

SHELL = '''#!/usr/bin/env bash
set -euo pipefail
if [[ -f $1 && $2 == yes ]]; then
    echo "found"  # a comment stays
    exit 0
fi
exit 1
'''


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]


def test_python_mutants_change_one_place_and_compile():
    found = python_mutants("m.py", PYTHON)
    by_operator = {(m.operator, m.after) for m in found}
    assert ("compare", "(value >= LIMIT)") in by_operator
    assert ("boolean", "(value > LIMIT or not names)") in by_operator
    assert ("drop-not", "(names)") in by_operator
    assert ("constant", "4") in by_operator
    assert ("drop-raise", "pass") in by_operator
    assert ("break-continue", "continue") in by_operator
    assert ("compare", "(name != 'stop')") in by_operator
    assert ("string", "'XXstopXX'") in by_operator
    assert ("return-none", "None") in by_operator
    for mutant in found:
        compile(mutant.source, "m.py", "exec")
        diff = changed_lines(PYTHON, mutant.source)
        assert len([d for d in diff if d.startswith("-")]) == 1, (mutant.operator, diff)
    untouched = "".join(m.source for m in found)
    assert all(m.source.startswith('"""A docstring."""') for m in found), "docstrings are left alone"
    assert all("log(value)  # pragma: no mutate" in m.source for m in found), "marked lines are left alone"
    assert "XXNot mutated" not in untouched and "int | None" not in untouched


def test_shell_mutants_pass_bash_n_and_leave_comments_and_structure():
    found = shell_mutants("s.sh", SHELL)
    afters = {m.after.strip() for m in found}
    assert "if [[ ! -f $1 && $2 == yes ]]; then" in afters
    assert "if [[ -f $1 || $2 == yes ]]; then" in afters
    assert "if [[ -f $1 && $2 != yes ]]; then" in afters
    assert {"exit 1", "exit 0", ":"} <= afters
    assert not any(m.line in (1, 2, 6) for m in found), "shebang, set and fi are not mutated"
    assert all('# a comment stays' in m.source for m in found if m.operator != "drop-line")


def test_a_line_inside_a_statement_maps_to_the_line_coverage_records(tmp_path, monkeypatch):
    import tests.mutation.__main__ as runner

    (tmp_path / "m.py").write_text("x = call(\n    1,\n    2,\n)\nif x:\n    y = 3\n")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    statement_lines.cache_clear()
    try:
        assert statement_lines("m.py") == {1: 1, 2: 1, 3: 1, 4: 1, 5: 5, 6: 6}
    finally:
        statement_lines.cache_clear()
