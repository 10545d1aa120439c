"""rhosearch: architecture search over ExMobileViT's ExShortcut ratios (rho).

`import rhosearch.core.model` registers the paper's presets in timm's model registry (as
importing `timm.models` registers timm's own), so `timm.create_model("exmobilevit_s_928")` works
afterwards. `import rhosearch` itself imports neither torch nor timm (seconds), so that
`rhosearch --help` answers at once; the names below load their module on first use.
"""

from __future__ import annotations

import importlib
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
