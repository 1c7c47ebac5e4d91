"""Lazy re-exports for package ``__init__`` modules (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` re-exporting ``name -> module`` on first access.

    Example:
        >>> __all__, __getattr__, __dir__ = lazy_exports("pkg", {"Thing": "pkg.thing"})
        >>> __all__
        ['Thing']
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}; available: {', '.join(names)}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
