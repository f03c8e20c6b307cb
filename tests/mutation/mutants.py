"""Mutants of a Python module or a bash script: each one small change a test should notice.

Python mutants are made from the syntax tree and spliced into the original text at the node's
position, so the rest of the file stays byte for byte the same. The operators are the usual ones
(mutmut's and cosmic-ray's core set): comparison, boolean and arithmetic operators swapped, `not`
dropped, conditions negated, constants changed, return values replaced by None, calls and raises
removed, break and continue swapped. Docstrings, annotations and lines marked `# pragma: no mutate`
are left alone. Every mutant compiles (bash: passes `bash -n`); one that does not is dropped.
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root
    line: int  # 1-based, where the change starts
    end_line: int
    operator: str
    before: str  # the changed text, for the report
    after: str
    source: str  # the whole mutated file

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}:{self.operator}:{hashlib.sha1(self.source.encode()).hexdigest()[:8]}"


COMPARE_SWAPS = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
                 ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.Pow: ast.Mult}
SKIP_MARK = "pragma: no mutate"


class _Splicer:
    """Replaces a node's text (ast positions: 1-based lines, UTF-8 byte columns) in the source."""

    def __init__(self, source: str):
        self.lines = source.encode().splitlines(keepends=True)
        self.offsets = [0]
        for line in self.lines:
            self.offsets.append(self.offsets[-1] + len(line))
        self.data = source.encode()

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offsets[node.lineno - 1] + node.col_offset,
                self.offsets[node.end_lineno - 1] + node.end_col_offset)

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.data[start:end].decode()

    def replace(self, node: ast.AST, new: str) -> str:
        start, end = self.span(node)
        return (self.data[:start] + new.encode() + self.data[end:]).decode()


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def _annotations(tree: ast.AST) -> set[int]:
    """Nodes inside type annotations: changing them changes nothing at run time."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots.append(node.returns)
            args = node.args
            roots += [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a]
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(sub) for root in roots if root is not None for sub in ast.walk(root)}


def _in_fstring(tree: ast.AST) -> set[int]:
    return {id(sub) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for sub in ast.walk(node)
            if isinstance(sub, ast.Constant)}


def _python_changes(tree: ast.AST, splice: _Splicer):
    """(node, operator name, replacement text) for every mutation of the tree."""
    skip = _docstrings(tree) | _annotations(tree) | _in_fstring(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    ops = [*node.ops]
                    ops[i] = COMPARE_SWAPS[type(op)]()
                    yield node, "compare", f"({ast.unparse(ast.Compare(node.left, ops, node.comparators))})"
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield node, "boolean", f"({ast.unparse(ast.BoolOp(other, node.values))})"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "drop-not", f"({splice.text(node.operand)})"
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
            yield node, "arithmetic", f"({ast.unparse(ast.BinOp(node.left, BINOP_SWAPS[type(node.op)](), node.right))})"
        elif isinstance(node, ast.AugAssign) and type(node.op) in BINOP_SWAPS:
            yield node, "arithmetic", ast.unparse(ast.AugAssign(node.target, BINOP_SWAPS[type(node.op)](), node.value))
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                yield node, "constant", repr(not value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                yield node, "constant", repr(value + 1)
            elif isinstance(value, str):
                yield node, "string", repr(f"XX{value}XX")
        elif isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            test = node.test
            if not isinstance(test, (ast.Compare, ast.BoolOp, ast.UnaryOp)):
                yield test, "negate", f"(not {splice.text(test)})"
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield node.value, "return-none", "None"
        elif isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await)):
            yield node, "drop-call", "pass"
        elif isinstance(node, ast.Raise):
            yield node, "drop-raise", "pass"
        elif isinstance(node, ast.Break):
            yield node, "break-continue", "continue"
        elif isinstance(node, ast.Continue):
            yield node, "break-continue", "break"


def python_mutants(path: str, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    splice = _Splicer(source)
    lines = source.splitlines()
    found: dict[str, Mutant] = {}
    for node, operator, new in _python_changes(tree, splice):
        if any(SKIP_MARK in lines[n - 1] for n in range(node.lineno, node.end_lineno + 1)):
            continue
        mutated = splice.replace(node, new)
        if mutated == source or mutated in found:
            continue
        try:
            compile(mutated, path, "exec")
        except SyntaxError:
            continue
        found[mutated] = Mutant(path, node.lineno, node.end_lineno, operator, splice.text(node), new, mutated)
    return sorted(found.values(), key=lambda m: (m.line, m.operator, m.after))


# bash: word-level swaps, each occurrence on its own, and each command line removed.
SHELL_SWAPS = [
    (r"(?<![=!<>])==(?!=)", "!="), (r"!=", "=="), (r"-eq\b", "-ne"), (r"-ne\b", "-eq"), (r"-gt\b", "-le"),
    (r"-lt\b", "-ge"), (r"-ge\b", "-lt"), (r"-le\b", "-gt"), (r"(?<=\s)>=(?=\s)", "<"), (r"&&", "||"),
    (r"\|\|", "&&"), (r"\bexit 0\b", "exit 1"), (r"\bexit 1\b", "exit 0"), (r"\bexit 2\b", "exit 0"),
    (r"\[\[ -f\b", "[[ ! -f"), (r"\[\[ -d\b", "[[ ! -d"), (r"\bif (?!!)", "if ! "), (r"\buntil\b", "while"),
    (r"\bwhile\b", "until"), (r"\breturn 0\b", "return 1"), (r"(?<![\w$-])(\d+)(?![\w])", None),
]
NOT_A_COMMAND = re.compile(r"^\s*(#|$|fi\b|done\b|esac\b|;;|then\b|else\b|do\b|\{|\}|\)|case\b|[\w-]+\)|\*\)|"
                           r"[\w-]+\(\)|set -|while\b|until\b|if\b|elif\b|for\b)")


def shell_mutants(path: str, source: str) -> list[Mutant]:
    lines = source.splitlines(keepends=True)
    candidates: list[tuple[int, str, str, str]] = []  # line index, operator, before, after
    for i, line in enumerate(lines):
        body = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        if not body.strip() or i == 0 or SKIP_MARK in line:
            continue
        for pattern, replacement in SHELL_SWAPS:
            for match in re.finditer(pattern, body):
                new = str(int(match.group(1)) + 1) if replacement is None else replacement
                after = body[:match.start()] + new + body[match.end():] + line[len(body):]
                candidates.append((i, "constant" if replacement is None else "swap", line, after))
        if not NOT_A_COMMAND.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            candidates.append((i, "drop-line", line, f"{indent}:\n"))
    found: dict[str, Mutant] = {}
    for i, operator, before, after in candidates:
        mutated = "".join([*lines[:i], after, *lines[i + 1:]])
        if mutated == source or mutated in found:
            continue
        if subprocess.run(["bash", "-n"], input=mutated, text=True, capture_output=True).returncode != 0:
            continue
        found[mutated] = Mutant(path, i + 1, i + 1, operator, before.rstrip("\n"), after.rstrip("\n"), mutated)
    return sorted(found.values(), key=lambda m: (m.line, m.operator, m.after))


def mutants(path: str, source: str) -> list[Mutant]:
    return shell_mutants(path, source) if path.endswith(".sh") else python_mutants(path, source)
