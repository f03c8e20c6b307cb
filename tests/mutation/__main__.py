"""Mutation testing of the deploy's logic and the scripts it runs on hosts, by the fast tests.

    python -m tests.mutation                      # map, then try every mutant; prints the table per module
    python -m tests.mutation --only lorafleet/deploy/rules.py --jobs 2
    python -m tests.mutation --reuse-map --retry-survivors   # after adding tests: only what survived

1. The map: the fast suite (tests/unit, tests/plan) runs once under coverage, each test's lines
   recorded under its id, in the pytest process and in every Python process it starts.
2. Each mutant is written into a private copy of the repository and only the tests that ran its
   lines are run there, quickest first, stopping at the first failure or when a budget of their
   measured time is spent (see `within`). A failure, an error or a timeout kills the mutant (the
   report counts timeouts apart); a mutant no test runs survives as "not run by any test".
   Lines that run at import time (constants, tables, signatures) are tried by the tests that ran
   their module's functions (see `import_time_tests`). A host script the tests run in a shell or a
   process of their own is tried by all of its own tests (SCRIPT_TESTS).

Results go to /var/tmp/lorafleet-mutation (results.jsonl, one line a mutant; report.md).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tests.mutation.mutants import Mutant, mutants

ROOT = Path(__file__).resolve().parents[2]
FAST_SUITE = ["tests/unit", "tests/plan"]
TARGETS = [
    "lorafleet/deploy/settings.py",
    "lorafleet/deploy/settings_table.py",
    "lorafleet/deploy/settings_folders.py",
    "lorafleet/deploy/rules.py",
    "lorafleet/deploy/envfile.py",
    "lorafleet/deploy/serving/plan.py",  # what render.py was: the compose file, flags and env files
    "lorafleet/adapters/check.py",
    "lorafleet/adapters/folder.py",
    "lorafleet/adapters/declared.py",
    "lorafleet/deploy/credentials.py",
    "lorafleet/deploy/decide.py",
    "lorafleet/deploy/fleet.py",
    "lorafleet/deploy/router/plan.py",
    "lorafleet/deploy/router/config.py",
    "files/serving/start.sh",
    "files/lock/lock.sh",
    "files/serving/sync_adapters.py",
]
IMPORT_TIME = "(import)"
# The host scripts' own tests, which run them for real (in bash, or as a process against a stand-in).
SCRIPT_TESTS = {"files/serving/start.sh": "tests/unit/test_start_script.py", "files/lock/lock.sh": "tests/unit/test_lock.py",
                "files/serving/sync_adapters.py": "tests/unit/test_sync_adapters.py"}
DURATIONS: dict[str, float] = {}  # test id -> seconds, from the map's run
# Seconds of tests (as the map's run measured them) a mutant gets: all that ran its line, up to
# BUDGET_RAN; for a line run at import, whose tests are chosen by name, BUDGET_NAMED.
BUDGET_RAN, BUDGET_NAMED = 12.0, 6.0


def out_dir(args) -> Path:
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fast_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    return {**env, **(extra or {})}


def build_map(out: Path) -> None:
    """Run the fast suite under coverage with per-test contexts; write map.json and durations.json."""
    cov_dir = out / "cov"
    shutil.rmtree(cov_dir, ignore_errors=True)
    cov_dir.mkdir()
    include = ",".join(str(ROOT / t) for t in TARGETS if t.endswith(".py"))
    rc = cov_dir / "coveragerc"
    rc.write_text(f"[run]\nparallel = true\ndata_file = {cov_dir}/.coverage\ncontext = ${{LF_MUTATION_TEST-}}\n"
                  f"include = {include}\n")
    startup = cov_dir / "startup"
    startup.mkdir()
    (startup / "sitecustomize.py").write_text("import coverage\ncoverage.process_startup()\n")
    env = fast_env({"COVERAGE_PROCESS_START": str(rc), "LF_MUTATION_DURATIONS": str(out / "durations.json"),
                    "PYTHONPATH": os.pathsep.join([str(startup), str(ROOT)])})
    started = time.monotonic()
    print(f"mutation: mapping the fast suite's tests to lines ({' '.join(FAST_SUITE)})", flush=True)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                             "tests.mutation.contexts", *FAST_SUITE], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"mutation: the fast suite fails without mutants; fix it first:\n{result.stdout[-4000:]}")
    import coverage

    cov = coverage.Coverage(config_file=str(rc), data_file=str(cov_dir / ".coverage"))
    cov.combine(data_paths=[str(cov_dir)])
    data = cov.get_data()
    lines: dict[str, dict[str, list[str]]] = {}
    for measured in data.measured_files():
        relative = str(Path(measured).resolve().relative_to(ROOT))
        by_line = data.contexts_by_lineno(measured)
        lines[relative] = {str(n): sorted({c.split("|")[-1] or IMPORT_TIME for c in ctxs}) for n, ctxs in by_line.items()}
    (out / "map.json").write_text(json.dumps(lines, sort_keys=True))
    print(f"mutation: map done in {time.monotonic() - started:.0f} s", flush=True)


def tests_for(mutant: Mutant, line_map: dict, durations: dict, suite_files: list[str]) -> list[str]:
    """The tests that try a mutant, quickest first, cut at a budget of their measured time."""
    if mutant.path in SCRIPT_TESTS:
        # a host script the tests run in a shell or a process of their own: its own tests, all of them
        return sorted((t for t in durations if t.split("::")[0] == SCRIPT_TESTS[mutant.path]),
                      key=lambda t: (durations[t], t))
    by_line = line_map.get(mutant.path, {})
    first_lines = statement_lines(mutant.path)
    tests: set[str] = set()
    for n in range(mutant.line, mutant.end_line + 1):
        tests |= set(by_line.get(str(first_lines.get(n, n)), []))
    if IMPORT_TIME in tests:
        tests.discard(IMPORT_TIME)
        return within(BUDGET_NAMED, tests | import_time_tests(mutant.path, line_map, suite_files), durations)
    return within(BUDGET_RAN, tests, durations)


def within(budget: float, tests: set[str], durations: dict) -> list[str]:
    """Quickest first, as many as fit in `budget` seconds (at least one). A mutant most tests would kill
    dies in the first ones; the budget bounds what a survivor costs. Fewer tests can only count fewer
    mutants killed, never more."""
    chosen, spent = [], 0.0
    for test in sorted(tests, key=lambda t: (durations.get(t, 0.0), t)):
        spent += durations.get(test, 0.0)
        if chosen and spent > budget:
            break
        chosen.append(test)
    return chosen


def import_time_tests(path: str, line_map: dict, suite_files: list[str]) -> set[str]:
    """Who tries a mutant of a line run at import (a constant, a table row, a default): the tests in the
    files that name the module, and the tests that ran its functions or, for a module of constants
    (rules.py), its users' functions. Every test would be too slow; fewer tests can only count fewer
    mutants killed, never more."""
    module = path.removesuffix(".py").replace("/", ".")
    package, _, name = module.rpartition(".")
    pattern = re.compile(rf"\b{re.escape(module)}\b|from {re.escape(package)} import [^\n]*\b{name}\b|"
                         rf"\b{re.escape(Path(path).name)}\b")
    files = [f for f in suite_files if pattern.search((ROOT / f).read_text())]
    named = {t for t in DURATIONS if t.split("::")[0] in files}
    inside = function_body_lines(path)
    ran = {t for n, ctxs in line_map.get(path, {}).items() if int(n) in inside for t in ctxs if t != IMPORT_TIME}
    if not ran:
        users = [t for t in TARGETS if t != path and t.endswith(".py") and module in (ROOT / t).read_text()]
        ran = set().union(*(import_time_tests(u, line_map, suite_files) for u in users))
    return named | ran


@functools.cache
def function_body_lines(path: str) -> set[int]:
    """Lines that run when a function is called, not when the module is imported."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in node.body:
                lines.update(range(statement.lineno, statement.end_lineno + 1))
    return lines


@functools.cache
def statement_lines(path: str) -> dict[int, int]:
    """Each line -> the first line of the innermost statement holding it: coverage records a statement there."""
    first: dict[int, int] = {}
    for node in ast.walk(ast.parse((ROOT / path).read_text())):  # breadth first: inner statements come later
        if isinstance(node, ast.stmt):
            for n in range(node.lineno, node.end_lineno + 1):
                first[n] = node.lineno
    return first


def suite_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for d in FAST_SUITE for p in (ROOT / d).glob("test_*.py"))


class Workspace:
    """A private copy of the repository where one mutant at a time is written and tried."""

    def __init__(self, path: Path):
        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(ROOT, path, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info",
                                                                  ".pytest_cache", "mutants"))

    def attempt(self, mutant: Mutant, tests: list[str], timeout: float) -> tuple[str, float, str]:
        target = self.path / mutant.path
        original = target.read_text()
        target.write_text(mutant.source)
        started = time.monotonic()
        try:
            result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                    cwd=self.path, env=fast_env({"PYTHONPATH": str(self.path)}),
                                    capture_output=True, text=True, timeout=timeout, start_new_session=True)
            status = "survived" if result.returncode == 0 else "killed"
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
            detail = failed[0] if failed else result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        except subprocess.TimeoutExpired:
            status, detail = "killed", f"timeout after {timeout:.0f} s"
        finally:
            target.write_text(original)
        return status, time.monotonic() - started, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="a target path (repeatable); default: all of TARGETS")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="/var/tmp/lorafleet-mutation")
    parser.add_argument("--reuse-map", action="store_true", help="use the map of the last run")
    parser.add_argument("--retry-survivors", action="store_true",
                        help="keep the last run's killed mutants; try the others again")
    args = parser.parse_args()
    out = out_dir(args)
    targets = args.only or TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        sys.exit(f"mutation: --only {unknown[0]} is not a target; the targets are: {', '.join(TARGETS)}")
    if not (args.reuse_map and (out / "map.json").exists()):
        build_map(out)
    line_map = json.loads((out / "map.json").read_text())
    durations = json.loads((out / "durations.json").read_text())
    DURATIONS.update(durations)
    files = suite_files()

    results_path = out / "results.jsonl"
    previous = {}
    if args.retry_survivors:  # the last run's results, and what an interrupted run had done
        for path in (results_path, out / "progress.jsonl"):
            if path.exists():
                previous.update({r["id"]: r for r in map(json.loads, path.read_text().splitlines())})
    todo, done = [], []
    for target in targets:
        for mutant in mutants(target, (ROOT / target).read_text()):
            prior = previous.get(mutant.id)
            (done if prior and prior["status"] == "killed" else todo).append((mutant, prior))
    print(f"mutation: {len(todo)} mutants to try, {len(done)} killed before, {args.jobs} at a time", flush=True)

    workspaces = [Workspace(out / f"work-{i}") for i in range(args.jobs)]
    free = list(workspaces)
    lock = threading.Lock()
    results = [prior for _, prior in done]
    started = time.monotonic()

    def run(mutant: Mutant) -> dict:
        tests = tests_for(mutant, line_map, durations, files)
        record = {"id": mutant.id, "path": mutant.path, "line": mutant.line, "operator": mutant.operator,
                  "before": mutant.before, "after": mutant.after, "tests": len(tests)}
        if not tests:
            return {**record, "status": "not run by any test", "seconds": 0.0, "detail": ""}
        timeout = 30 + 3 * sum(durations.get(t, 1.0) for t in tests)
        with lock:
            workspace = free.pop()
        try:
            status, seconds, detail = workspace.attempt(mutant, tests, timeout)
        finally:
            with lock:
                free.append(workspace)
        return {**record, "status": status, "seconds": round(seconds, 2), "detail": detail}

    progress = (out / "progress.jsonl").open("a" if args.retry_survivors else "w", encoding="utf-8")
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, record in enumerate(as_completed(pool.submit(run, m) for m, _ in todo), 1):
            record = record.result()
            results.append(record)
            progress.write(json.dumps(record) + "\n")
            progress.flush()
            if i % 25 == 0 or i == len(todo):
                killed = sum(r["status"] == "killed" for r in results)
                print(f"mutation: {i}/{len(todo)} tried, {killed} of {len(results)} killed, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
    progress.close()

    ordered = {t: i for i, t in enumerate(TARGETS)}
    results.sort(key=lambda r: (ordered[r["path"]], r["line"], r["id"]))
    if args.only and results_path.exists():  # keep the other targets' last results
        others = [r for r in map(json.loads, results_path.read_text().splitlines()) if r["path"] not in targets]
        results = sorted(others + results, key=lambda r: (ordered[r["path"]], r["line"], r["id"]))
    results_path.write_text("".join(json.dumps(r) + "\n" for r in results))
    report = render_report(results, time.monotonic() - started)
    (out / "report.md").write_text(report)
    print(report)
    for workspace in workspaces:
        shutil.rmtree(workspace.path, ignore_errors=True)
    return 0


def render_report(results: list[dict], seconds: float) -> str:
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        per[r["path"]][r["status"]] += 1
    for r in results:
        if r["status"] == "killed" and r.get("detail", "").startswith("timeout"):
            per[r["path"]]["of them by timeout"] += 1
    rows = ["| module | mutants | killed | of them by timeout | survived | not run by any test | killed % |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total = defaultdict(int)
    for path, counts in per.items():
        n = counts["killed"] + counts["survived"] + counts["not run by any test"]
        for k, v in counts.items():
            total[k] += v
        rows.append(f"| `{path}` | {n} | {counts['killed']} | {counts['of them by timeout']} | {counts['survived']} "
                    f"| {counts['not run by any test']} | {100 * counts['killed'] / n:.0f}% |")
    n = total["killed"] + total["survived"] + total["not run by any test"]
    rows.append(f"| **all** | {n} | {total['killed']} | {total['of them by timeout']} | {total['survived']} "
                f"| {total['not run by any test']} | **{100 * total['killed'] / max(n, 1):.1f}%** |")
    survivors = [f"- `{r['path']}:{r['line']}` {r['operator']} ({r['status']}): `{r['before'][:90]}` -> `{r['after'][:90]}`"
                 for r in results if r["status"] != "killed"]
    return "\n".join([*rows, "", f"tried in {seconds:.0f} s", "", "## Not killed", *survivors, ""])


if __name__ == "__main__":
    sys.exit(main())
