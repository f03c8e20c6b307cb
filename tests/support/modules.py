"""Load a script the project ships (a serve file, the demo builder) as a module, as its host imports it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(name: str, path: Path | str, register: bool = False) -> ModuleType:
    """The module `name` from `path`; `register`: also as sys.modules[name], where vLLM's import would put it."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
