"""The layout the design card draws: what a host receives lives in files/<step>/ and templates/<step>/,
and the steps in lorafleet/deploy/ name those files only through layout.py."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from lorafleet.deploy import layout, ops

STEPS = {p.name for p in layout.PACKAGE_DIR.iterdir() if p.is_dir() and (p / "deployer.py").is_file()}


def tracked(folder: Path) -> set[Path]:
    out = subprocess.run(["git", "ls-files", "-z", str(folder)], cwd=layout.PROJECT_ROOT, capture_output=True,
                         text=True, check=True).stdout
    return {layout.PROJECT_ROOT / name for name in out.split("\0") if name}


def test_every_file_under_files_and_templates_is_shipped_by_a_step():
    on_disk = tracked(layout.FILES_DIR) | tracked(layout.TEMPLATES_DIR)
    assert on_disk, "git lists nothing under files/ or templates/"
    assert sorted(map(str, on_disk - set(layout.shipped_files()))) == []


def test_every_shipped_file_is_in_its_steps_folder_or_a_shared_module():
    for path in layout.shipped_files():
        assert path.is_file(), path
        if path in layout.SHARED_MODULES.values():
            continue
        folder = path.relative_to(layout.PROJECT_ROOT).parts
        assert folder[0] in ("files", "templates") and folder[1] in STEPS, path


def _src_arguments() -> list[tuple[str, str]]:
    found = []
    for module in sorted(layout.PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("put", "script", "template"):
                found += [(module.name, ast.unparse(k.value)) for k in node.keywords if k.arg == "src"]
    return found


def test_a_step_uploads_rendered_text_or_a_file_that_layout_lists():
    sources = _src_arguments()
    assert len(sources) > 10, sources
    wrong = [(module, src) for module, src in sources if not src.startswith(("StringIO(", "shipped("))]
    assert wrong == []


def test_shipping_a_file_from_anywhere_else_stops_the_plan():
    with pytest.raises(AssertionError, match="not listed in layout.py"):
        ops.shipped(layout.PACKAGE_DIR / "settings.py")
    assert ops.shipped(layout.LOCK_SCRIPT) == str(layout.LOCK_SCRIPT)


def test_the_bootstrap_the_readme_names_is_there():
    readme = (layout.PROJECT_ROOT / "README.md").read_text()
    bootstrap = layout.BOOTSTRAP.relative_to(layout.PROJECT_ROOT)
    assert f"bash {bootstrap}" in readme and layout.BOOTSTRAP.is_file()


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


# The one crossing between steps, and why: a server change in a fleet takes the box out of the router first.
STEP_CROSSINGS = {("serving", "router")}


def test_imports_go_down_only():
    wrong = []
    for module in sorted(layout.PROJECT_ROOT.glob("lorafleet/**/*.py")):
        rel = module.relative_to(layout.PROJECT_ROOT)
        step = rel.parts[2] if rel.parts[1] == "deploy" and rel.parts[2] in STEPS else None
        for name in _imports(module):
            parts = name.split(".")
            if parts[0] in ("tests", "benchmarks"):
                wrong.append(f"{rel} imports {name}")
            elif parts[:2] == ["lorafleet", "deploy"] and len(parts) > 2 and parts[2] in STEPS:
                if step != parts[2] and (step, parts[2]) not in STEP_CROSSINGS:
                    wrong.append(f"{rel} imports {name}, another step's")
    for module in sorted(layout.PROJECT_ROOT.glob("tests/**/*.py")):
        wrong += [f"{module.relative_to(layout.PROJECT_ROOT)} imports {name}" for name in _imports(module)
                  if name.split(".")[0] == "benchmarks"]
    assert wrong == []
