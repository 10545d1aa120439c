"""rhosearch: architecture search over ExMobileViT's ExShortcut ratios (rho).

Importing the package registers the paper's presets in timm's model registry, so
`timm.create_model("exmobilevit_s_928")` works afterwards.
"""

from __future__ import annotations

from rhosearch.errors import RhoSearchError
from rhosearch.model import ExMobileViT, RhoSupernet, create_model
from rhosearch.space import RhoConfig, SearchSpace, load_presets, load_search_space, parse_rho

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
