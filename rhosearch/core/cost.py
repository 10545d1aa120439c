"""What a configuration costs: parameters (exact) and multiply-adds (fvcore, and a closed form).

    measured = count_cost(config, resolution=256, num_classes=1000)     # builds + traces
    priced = CostModel("mobilevit_s", resolution=256).price(config)     # no model built

fvcore counts one fused multiply-add as one FLOP, so its totals are MACs; we report them as
GMACs. Counted operators: convolutions, linear/matmul/addmm/bmm/einsum, batch_norm (2 per
element in eval mode), layer_norm/group_norm, adaptive_avg_pool2d, upsampling, and the fused
attention `aten::scaled_dot_product_attention`, which fvcore skips by default (MobileViT's
transformers use it, so without a handle the attention's QK^T and AV products would be missing).
Elementwise activations, additions, softmax and reshapes are not counted (fvcore's convention).

The closed form is linear in the shortcut widths c_k: everything before the shortcuts (stem and
stages) is a fixed cost measured once per (backbone, resolution), and each shortcut channel adds
its 1x1 conv (C~_k MACs per pixel), BN (2 per pixel) and pooling (1 per pixel) at block k's
spatial size, plus the classifier's `num_classes` MACs per input channel.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

with warnings.catch_warnings():
    # fvcore's package import runs torch.jit.script on an unrelated loss, which torch deprecates.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

import pandas as pd

from rhosearch.core.model import ExMobileViT
from rhosearch.core.space import RhoConfig, baseline_config, load_presets
from rhosearch.vocab import PRICED_CLASSES, PRICED_RESOLUTION

__all__ = ["CostModel", "Cost", "count_cost", "cost_table", "fvcore_macs", "COUNTED_OPS"]

COUNTED_OPS = (
    "conv, linear/matmul/addmm/bmm/einsum, scaled_dot_product_attention (QK^T + AV), "
    "batch_norm (2/element), layer_norm/group_norm, adaptive_avg_pool2d; "
    "1 multiply-add = 1 FLOP; activations, additions, softmax not counted"
)


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of fused attention: QK^T (N x M x d) and attention x V (N x M x d_v)."""
    query, key, value = (get_shape(v) for v in inputs[:3])
    tokens_q, depth = query[-2], query[-1]
    tokens_k, depth_v = key[-2], value[-1]
    batch_heads = math.prod(query[:-2])
    return batch_heads * tokens_q * tokens_k * (depth + depth_v)


def fvcore_macs(
    model: torch.nn.Module, inputs: torch.Tensor
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Counts a model's MACs with fvcore; returns (total, per operator, skipped operators)."""
    analysis = FlopCountAnalysis(model.eval(), inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracer warnings about shape-dependent branches
        total = int(analysis.total())
    return total, dict(analysis.by_operator()), dict(Counter(analysis.unsupported_ops()))


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-adds of one configuration at one resolution."""

    params: int
    macs: int
    overhead_params: int  # params minus the same backbone's plain MobileViT
    overhead_pct: float

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gmacs": round(self.gmacs, 4)}


def count_cost(
    config: RhoConfig, *, resolution: int = 256, num_classes: int = 1000
) -> tuple[int, int]:
    """Builds the model and counts (params, MACs) for real: the reference the closed form meets."""
    model = ExMobileViT(config, num_classes=num_classes)
    macs, _, _ = fvcore_macs(model, torch.zeros(1, 3, resolution, resolution))
    return model.num_params(), macs


class CostModel:
    """Closed-form params and MACs for any rho on one backbone, resolution and class count.

    Args:
        backbone: timm MobileViT name.
        resolution: square input size.
        num_classes: classifier outputs.
    """

    def __init__(self, backbone: str, *, resolution: int = PRICED_RESOLUTION,
                 num_classes: int = PRICED_CLASSES) -> None:
        self.backbone = backbone
        self.resolution = resolution
        self.num_classes = num_classes
        fixed = _fixed_part(backbone, resolution)
        # Index d-1: stem + blocks 1..d, the trunk of a model whose last shortcut is block d.
        self.fixed_params: tuple[int, ...] = fixed["params"]
        self.fixed_macs: tuple[int, ...] = fixed["macs"]
        self.block_pixels: tuple[int, ...] = fixed["block_pixels"]
        self.baseline_params = self.params(baseline_config(backbone))

    def params(self, config: RhoConfig) -> int:
        widths = config.shortcut_channels
        shortcuts = sum(
            c * (c_in + 2) for c, c_in in zip(widths, config.block_widths, strict=True))
        classifier = (sum(widths) + 1) * self.num_classes
        return self.fixed_params[config.depth - 1] + shortcuts + classifier

    def macs(self, config: RhoConfig) -> int:
        # Per shortcut channel and pixel: C~_k (1x1 conv) + 2 (eval BN) + 1 (average pool).
        shortcuts = sum(
            c * pixels * (c_in + 3)
            for c, c_in, pixels in zip(config.shortcut_channels, config.block_widths,
                                       self.block_pixels, strict=True)
        )
        classifier = config.classifier_channels * self.num_classes
        return self.fixed_macs[config.depth - 1] + shortcuts + classifier

    def price(self, config: RhoConfig) -> Cost:
        if config.backbone != self.backbone:
            raise ValueError(f"cost model is for {self.backbone}, not {config.backbone}")
        params = self.params(config)
        overhead = params - self.baseline_params
        return Cost(params, self.macs(config), overhead, 100.0 * overhead / self.baseline_params)


def cost_table(
    configs: list[RhoConfig], *, resolution: int = 256, num_classes: int = 1000,
    measure: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration: channels, params, overhead, GMACs, and the paper's params.

    Args:
        configs: configurations to price.
        resolution: square input size.
        num_classes: classifier outputs.
        measure: count by building each model and tracing it with fvcore (else: closed form).

    Returns:
        The table and notes to print under it (what the counts include).
    """
    reported = {p.config: p.reported_params for p in load_presets().values()}
    rows = []
    for config in configs:
        model = CostModel(config.backbone, resolution=resolution, num_classes=num_classes)
        priced = model.price(config)
        params, macs = count_cost(config, resolution=resolution, num_classes=num_classes) if (
            measure) else (priced.params, priced.macs)
        paper = reported.get(config) if num_classes == 1000 else None
        rows.append({
            **config.as_dict(),
            "params": params,
            "overhead_params": params - model.baseline_params,
            "overhead_pct": round(
                100.0 * (params - model.baseline_params) / model.baseline_params, 3),
            "gmacs": round(macs / 1e9, 4),
            "paper_params": paper,
            "paper_diff": None if paper is None else params - paper,
        })
    method = "fvcore trace" if measure else "closed form"
    notes = [
        f"GMACs at {resolution}x{resolution}, {num_classes} classes, by {method}; counted: "
        + COUNTED_OPS,
        "paper_params: the paper's total parameters of each whole model (Tables 1-2), "
        "rounded to 1k; docs/parameters.md explains the differences",
    ]
    return pd.DataFrame(rows), notes


@functools.cache
def _fixed_part(backbone: str, resolution: int) -> dict[str, Any]:
    """Cumulative params and fvcore MACs of stem + blocks 1..d, and each block's pixel count."""
    model = ExMobileViT(baseline_config(backbone), num_classes=0).eval()
    trunk = torch.nn.ModuleDict({"stem": model.stem, "stages": model.stages})
    image = torch.zeros(1, 3, resolution, resolution)
    analysis = FlopCountAnalysis(_Trunk(trunk), image)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_module = analysis.by_module()
    with torch.no_grad():
        blocks = model.forward_blocks(image)
    params = macs = 0
    cumulative_params, cumulative_macs = [], []
    for k, stage in enumerate(model.stages):
        params += sum(p.numel() for p in stage.parameters())
        macs += by_module[f"trunk.stages.{k}"]
        if k == 0:
            params += sum(p.numel() for p in model.stem.parameters())
            macs += by_module["trunk.stem"]
        cumulative_params.append(params)
        cumulative_macs.append(macs)
    return {
        "params": tuple(cumulative_params),
        "macs": tuple(cumulative_macs),
        "block_pixels": tuple(b.shape[-1] * b.shape[-2] for b in blocks),
    }


class _Trunk(torch.nn.Module):
    """Stem and stages under stable names, so fvcore can report each block's MACs."""

    def __init__(self, trunk: torch.nn.ModuleDict) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.trunk["stem"](x)
        outputs = []
        for stage in self.trunk["stages"]:
            x = stage(x)
            outputs.append(x)
        return outputs
