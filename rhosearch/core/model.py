"""ExMobileViT on timm's MobileViT, and the rho supernet sharing weights between configurations.

    model = ExMobileViT(parse_rho("4/3,5/4,4"), num_classes=1000)
    supernet = RhoSupernet(load_search_space("exmobilevit_s"), num_classes=10)
    supernet.set_config(config); logits = supernet(x); standalone = supernet.extract(config)

The backbone (stem + five stages) is timm's, unchanged. What timm calls `final_conv` (block 5's
160 -> 640 1x1 conv + BN + SiLU) is exactly ExShortcut_5 at rho_5 = 4, so timm's weights load
into `shortcuts.4` and the baseline configuration is MobileViT itself. Note timm's
`feature_info[4]` is that 640-channel final conv, not block 5's 160-channel output: we tap
`stages[k]` directly.
"""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
)
from torch import nn

from rhosearch.core.space import RhoConfig, SearchSpace, load_presets

__all__ = [
    "ExMobileViT", "RhoSupernet", "create_model", "init_head_weights", "load_timm_weights",
]


class ExMobileViT(nn.Module):
    """MobileViT whose classifier reads the pooled ExShortcuts of blocks with rho_k > 0.

    Args:
        config: the backbone and rho vector.
        num_classes: classifier outputs (0 for no classifier: `forward` returns features).
        drop_rate: dropout before the classifier (0.1 as in MobileViT's recipe).
        in_chans: input image channels.
    """

    def __init__(
        self, config: RhoConfig, *, num_classes: int = 1000, drop_rate: float = 0.1,
        in_chans: int = 3, widths: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        backbone = timm.create_model(config.backbone, num_classes=0, in_chans=in_chans)
        # `widths` lets the supernet build every shortcut at its widest; a plain model uses
        # exactly the configuration's channels.
        self.widths = tuple(widths or config.shortcut_channels)
        # Blocks after the last one with a shortcut feed nothing: they are not built or run.
        self.depth = config.depth
        self.stem = backbone.stem
        self.stages = backbone.stages[: self.depth]
        self.shortcuts = nn.ModuleList(
            ConvNormAct(c_in, c_out, 1, act_layer="silu") if c_out else nn.Identity()
            for c_in, c_out in zip(config.block_widths, self.widths, strict=True)
        )
        self.num_features = self.head_hidden_size = sum(self.widths)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.feature_info = [
            dict(num_chs=c, reduction=2 ** (k + 1), module=f"stages.{k}")
            for k, c in enumerate(config.block_widths[: self.depth])
        ]
        self.pretrained_cfg = dict(backbone.pretrained_cfg, classifier="fc",
                                   num_classes=num_classes)
        self.shortcuts.apply(init_head_weights)
        self.fc.apply(init_head_weights)

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of blocks 1..depth (the feature maps F~_k of Algorithm 1)."""
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def _pooled_shortcuts(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        # A loop over the ModuleList itself (not `self.shortcuts[k]`): TorchScript indexes a
        # ModuleList only by a constant.
        for k, shortcut in enumerate(self.shortcuts):
            if k < len(blocks) and self.widths[k] > 0:
                parts.append(F.adaptive_avg_pool2d(shortcut(blocks[k]), 1).flatten(1))
        return torch.cat(parts, dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier input: pooled ExShortcuts concatenated in block order (Eq. 2).

        Pooled already (each shortcut at its own block's resolution), so this is what timm
        calls a non-standard model: `forward_features` gives (batch, num_features)."""
        return self._pooled_shortcuts(self.forward_blocks(x))

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
        stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the outputs of blocks `indices` (default all built blocks), and
        the classifier input unless `intermediates_only`. `norm` and `stop_early` are accepted
        for timm's signature; blocks have no final norm here and the shortcuts need every
        block."""
        if output_fmt != "NCHW":
            raise ValueError("ExMobileViT gives intermediates as NCHW only")
        take = _take_indices(len(self.stages), indices)
        blocks = self.forward_blocks(x)
        intermediates = [blocks[i] for i in take]
        if intermediates_only:
            return intermediates
        return self._pooled_shortcuts(blocks), intermediates

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        features = self.head_drop(features)
        return features if pre_logits else self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of `num_classes` (0: none). Pooling is part of each shortcut
        (Eq. 2), so `global_pool` is accepted for timm's signature and must stay average."""
        if global_pool not in (None, "avg"):
            raise ValueError("ExMobileViT pools inside each shortcut: global_pool must be 'avg'")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.fc.apply(init_head_weights)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _take_indices(blocks: int, indices: int | list[int] | None) -> list[int]:
    """The block indices `forward_intermediates` returns, resolved as every timm model does
    (an int n: the last n blocks; a list: those, negatives from the end; None: all).

    timm (1.0.31) exports `feature_take_indices` from no public module, only the private
    `timm.models._features`: it is imported here and nowhere else, so ours agrees with timm's
    models on what `indices` means."""
    from timm.models._features import feature_take_indices

    return feature_take_indices(blocks, indices)[0]


def init_head_weights(module: nn.Module) -> None:
    """timm's MobileViT initialisation (`byobnet._init_weights`), for the modules we add.

    timm initialises its own `final_conv` and `head.fc` this way when it builds MobileViT; the
    ExShortcuts and the classifier are built here instead, so without this they would keep
    PyTorch's defaults and every configuration, the baseline included, would start its head
    differently from MobileViT. Conv: normal, std sqrt(2 / fan_out); BN: 1 and 0; classifier:
    normal std 0.01, zero bias (timm's choice, not cvnets' truncated normal 0.02). Copied
    rather than imported: `_init_weights` is private to timm's byobnet module.
    """
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / (fan_out // module.groups)))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_timm_weights(model: ExMobileViT, timm_state: dict[str, torch.Tensor]) -> None:
    """Loads a timm MobileViT state dict into a baseline ExMobileViT (rho_5 = 4 only)."""
    if not model.config.is_baseline:
        raise ValueError("timm weights fit only the baseline configuration (rho = 0,0,0,0,4)")
    renamed = {}
    for key, value in timm_state.items():
        key = key.replace("final_conv.", "shortcuts.4.").replace("head.fc.", "fc.")
        renamed[key] = value
    model.load_state_dict(renamed, strict=True)


class RhoSupernet(ExMobileViT):
    """Every shortcut of a search space at its widest, set to one configuration at a time.

    A configuration uses the first c_k output channels of shortcut k (conv rows, BN parameters
    and running statistics sliced as a prefix), and the classifier columns of exactly those
    channels, gathered block by block: a prefix of the concatenated input would mix blocks.
    """

    def __init__(self, space: SearchSpace, *, num_classes: int = 1000, **kwargs: Any) -> None:
        widest = space.widest
        super().__init__(widest, num_classes=num_classes, widths=widest.shortcut_channels,
                         **kwargs)
        self.space = space
        self.active = widest

    def set_config(self, config: RhoConfig) -> None:
        """Selects the configuration that `forward` computes."""
        if config.backbone != self.space.backbone or any(
            c > w for c, w in zip(config.shortcut_channels, self.widths, strict=True)
        ):
            raise ValueError(f"{config.rho_text} on {config.backbone} is outside the supernet")
        self.active = config

    def classifier_index(self, config: RhoConfig) -> torch.Tensor:
        """Positions, in the widest classifier input, of `config`'s classifier channels."""
        offsets = self.config.block_offsets  # the widest configuration's layout
        index = [offset + j for offset, channels in
                 zip(offsets, config.shortcut_channels, strict=True) for j in range(channels)]
        return torch.tensor(index, dtype=torch.long)

    def _sliced_shortcut(self, k: int, block_output: torch.Tensor, channels: int) -> torch.Tensor:
        # Hand-written because timm's ConvNormAct has no width slicing: conv rows [:c] and the
        # BN's parameters and running statistics [:c] (views, so training updates the prefix).
        shortcut = self.shortcuts[k]
        bn = shortcut.bn
        x = F.conv2d(block_output, shortcut.conv.weight[:channels])
        x = F.batch_norm(
            x, bn.running_mean[:channels], bn.running_var[:channels], bn.weight[:channels],
            bn.bias[:channels], self.training, bn.momentum, bn.eps,
        )
        return F.adaptive_avg_pool2d(F.silu(x), 1).flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The widest classifier input's layout, with only the active channels filled in."""
        return self.forward_widest_features(x, self.active)

    def forward_widest_features(self, x: torch.Tensor, config: RhoConfig) -> torch.Tensor:
        blocks = self.forward_blocks(x)
        channels = config.shortcut_channels
        parts = [
            self._sliced_shortcut(k, out, channels[k])
            for k, out in enumerate(blocks) if channels[k]
        ]
        return torch.cat(parts, dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        features = self.head_drop(features)
        if pre_logits:
            return features
        index = self.classifier_index(self.active).to(features.device)
        return F.linear(features, self.fc.weight[:, index], self.fc.bias)

    def extract(self, config: RhoConfig) -> ExMobileViT:
        """A standalone ExMobileViT for `config` carrying the supernet's shared weights."""
        self.set_config(config)
        model = ExMobileViT(config, num_classes=self.num_classes, drop_rate=self.head_drop.p)
        model.stem.load_state_dict(self.stem.state_dict())
        model.stages.load_state_dict(self.stages[: model.depth].state_dict())
        for k, channels in enumerate(config.shortcut_channels):
            if not channels:
                continue
            sliced = {
                name: value[:channels] if value.ndim else value
                for name, value in self.shortcuts[k].state_dict().items()
            }
            model.shortcuts[k].load_state_dict(sliced)
        index = self.classifier_index(config)
        model.fc.weight.data.copy_(self.fc.weight.data[:, index])
        model.fc.bias.data.copy_(self.fc.bias.data)
        return model.train(self.training)


def create_model(config: RhoConfig, **kwargs: Any) -> ExMobileViT:
    """Builds a standalone ExMobileViT (the one way the rest of rhosearch makes a model)."""
    return ExMobileViT(config, **kwargs)


# --- timm's registry: `timm.create_model("exmobilevit_s_928")` once this module is imported ---


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(
        url="", num_classes=1000, input_size=(3, 256, 256), pool_size=(8, 8), mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), first_conv="stem.conv", classifier="fc", license="apache-2.0",
        **kwargs,
    )


def _create_preset(variant: str, pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """Builds the paper preset whose timm name is `variant` through timm's loading path, so
    `pretrained=True, pretrained_cfg_overlay=dict(file=...)` loads rhosearch's safetensors."""
    [config] = [p.config for p in load_presets().values() if p.config.timm_name == variant]
    return build_model_with_cfg(
        ExMobileViT, variant, pretrained, config=config,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(config.depth))),
        **kwargs,
    )


# The paper's presets (search_spaces/paper_table5.yaml) but the baseline, which is timm's own
# `mobilevit_s`; tests/test_model.py checks that this list and the YAML agree.
default_cfgs = generate_default_cfgs({
    "exmobilevit_s_576": _cfg(), "exmobilevit_s_640": _cfg(), "exmobilevit_s_704": _cfg(),
    "exmobilevit_s_864": _cfg(), "exmobilevit_s_928": _cfg(),
})


@register_model
def exmobilevit_s_576(pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """ExMViT-576: rho = 0, 0, 1/3, 1/2, 3."""
    return _create_preset("exmobilevit_s_576", pretrained, **kwargs)


@register_model
def exmobilevit_s_640(pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """ExMViT-640: rho = 0, 0, 1/3, 1, 3."""
    return _create_preset("exmobilevit_s_640", pretrained, **kwargs)


@register_model
def exmobilevit_s_704(pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """ExMViT-704: rho = 0, 0, 1/3, 1/4, 4."""
    return _create_preset("exmobilevit_s_704", pretrained, **kwargs)


@register_model
def exmobilevit_s_864(pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """ExMViT-864: rho = 0, 0, 1, 1, 4."""
    return _create_preset("exmobilevit_s_864", pretrained, **kwargs)


@register_model
def exmobilevit_s_928(pretrained: bool = False, **kwargs: Any) -> ExMobileViT:
    """ExMViT-928: rho = 0, 0, 4/3, 5/4, 4."""
    return _create_preset("exmobilevit_s_928", pretrained, **kwargs)
