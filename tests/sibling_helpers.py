"""Helpers of one test folder used by another: each folder's helper module is importable only when
pytest collected that folder first, so load it from its file instead."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).parent


def helper_module(folder: str, name: str) -> ModuleType:
    """``tests/<folder>/<name>.py`` as module ``name`` (the one already imported, if any)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / folder / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"no test helper {folder}/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]
