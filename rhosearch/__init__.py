"""rhosearch: architecture search over ExMobileViT's ExShortcut ratios (rho).

Importing the package registers the paper's presets in timm's model registry, so
`timm.create_model("exmobilevit_s_928")` works afterwards. The registration waits until timm
itself is imported (at once if it already is): `import rhosearch` must not cost the seconds
torch and timm take to import, or `rhosearch --help` would.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

from rhosearch.errors import RhoSearchError

__all__ = [
    "ExMobileViT",
    "RhoConfig",
    "RhoSearchError",
    "RhoSupernet",
    "SearchSpace",
    "create_model",
    "load_presets",
    "load_search_space",
    "parse_rho",
]

_LAZY = {
    "ExMobileViT": "rhosearch.core.model",
    "RhoSupernet": "rhosearch.core.model",
    "create_model": "rhosearch.core.model",
    "RhoConfig": "rhosearch.core.space",
    "SearchSpace": "rhosearch.core.space",
    "load_presets": "rhosearch.core.space",
    "load_search_space": "rhosearch.core.space",
    "parse_rho": "rhosearch.core.space",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rhosearch' has no attribute {name!r}")


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Imports `rhosearch.core.model` (which registers the presets) right after timm is imported.

    Written by hand because neither timm nor Python's entry points offer a plugin hook for
    models; a meta-path finder that wraps timm's own loader is the smallest lazy equivalent.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_timm = loader.exec_module

        def exec_module(module: Any) -> None:
            exec_timm(module)
            importlib.import_module("rhosearch.core.model")

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    importlib.import_module("rhosearch.core.model")
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
