"""ExMobileViT against timm's MobileViT, and the supernet against standalone models."""

from __future__ import annotations

import pytest
import timm
import torch

import rhosearch.core.model  # noqa: F401  (registers the presets in timm)
from rhosearch.core.model import ExMobileViT, RhoSupernet, load_timm_weights
from rhosearch.core.space import (
    BACKBONE_WIDTHS,
    RhoConfig,
    baseline_config,
    load_presets,
    parse_search_space,
)

torch.manual_seed(0)


@pytest.mark.parametrize("backbone", BACKBONE_WIDTHS)
def test_baseline_equals_timm_mobilevit(backbone):
    reference = timm.create_model(backbone).eval()
    model = ExMobileViT(baseline_config(backbone)).eval()
    assert model.num_params() == sum(p.numel() for p in reference.parameters())
    load_timm_weights(model, reference.state_dict())
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image), rtol=0, atol=0)


@torch.no_grad()
def test_head_starts_like_timms_mobilevit_head():
    """The ExShortcuts and the classifier get timm's MobileViT init, not PyTorch's defaults:
    the baseline's head starts like timm's own, and a new shortcut by the same rule."""
    reference = timm.create_model("mobilevit_s", num_classes=10)
    model = ExMobileViT(RhoConfig.parse("0,0,4/3,5/4,4"), num_classes=10)
    std = {name: float(p.std()) for name, p in model.named_parameters()}
    assert std["shortcuts.4.conv.weight"] == pytest.approx(
        float(reference.final_conv.conv.weight.std()), rel=0.05)
    assert std["fc.weight"] == pytest.approx(float(reference.head.fc.weight.std()), rel=0.05)
    assert std["fc.weight"] == pytest.approx(0.01, rel=0.05)  # PyTorch's default: 0.019
    assert not model.fc.bias.any()
    # shortcut 3: 96 -> 128 channels, normal with std sqrt(2 / fan_out) (PyTorch's: 0.059)
    assert std["shortcuts.2.conv.weight"] == pytest.approx((2 / 128) ** 0.5, rel=0.05)
    model.reset_classifier(3)
    assert float(model.fc.weight.std()) == pytest.approx(0.01, rel=0.1)


def test_mobilevit_s_has_5578632_parameters():
    assert ExMobileViT(baseline_config()).num_params() == 5_578_632


@pytest.mark.parametrize("preset", load_presets().values(), ids=lambda p: p.name)
def test_classifier_input_width_is_eq_1(preset):
    model = ExMobileViT(preset.config, num_classes=10).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, preset.config.classifier_channels)
    assert model.fc.in_features == preset.config.classifier_channels


def test_presets_are_in_timms_registry():
    model = timm.create_model("exmobilevit_s_928", num_classes=7)
    assert isinstance(model, ExMobileViT)
    assert model.config.classifier_channels == 928 and model.fc.out_features == 7
    assert "exmobilevit_s_576" in timm.list_models("exmobilevit_*")
    for preset in load_presets().values():
        name = preset.config.timm_name
        assert (name is None) == preset.config.is_baseline
        if name is not None:
            assert timm.create_model(name, num_classes=2).config == preset.config
    assert RhoConfig.parse("0,0,1,0,0").timm_name is None  # not a preset: not registered


@pytest.mark.parametrize("rho, depth", [("0,0,1,0,0", 3), ("1,0,0,0,0", 1), ("0,0,0,1,4", 5)])
def test_model_stops_after_its_last_shortcut(rho, depth):
    config = RhoConfig.parse(rho, backbone="mobilevit_xxs")
    model = ExMobileViT(config, num_classes=10).eval()
    assert len(model.stages) == config.depth == depth
    with torch.no_grad():
        assert len(model.forward_blocks(torch.zeros(1, 3, 32, 32))) == depth


SPACES = {
    "mobilevit_s": {"rho_1": [0, 1/2], "rho_3": [0, 1/3, 4/3], "rho_4": [0, 1/4, 5/4],
                    "rho_5": [0, 3, 4]},
    "mobilevit_xs": {"rho_3": [0, 1/2, 5/4], "rho_4": [0, 1, 6/5], "rho_5": [2, 4]},
    "mobilevit_xxs": {"rho_2": [0, 1], "rho_3": [0, 1/3, 1], "rho_5": [0, 3, 4]},
}
SUBSETS = {
    "mobilevit_s": ["0,0,4/3,5/4,4", "0,0,1/3,1/4,3", "1/2,0,0,5/4,0", "0,0,1/3,0,0"],
    "mobilevit_xs": ["0,0,1/2,1,2", "0,0,5/4,6/5,4", "0,0,0,1,2"],
    "mobilevit_xxs": ["0,1,1/3,0,3", "0,0,1,0,4", "0,1,0,0,0"],
}


def _supernet(backbone):
    return RhoSupernet(parse_search_space({"backbone": backbone, "rho": SPACES[backbone]}),
                       num_classes=10)


@pytest.mark.parametrize("backbone", BACKBONE_WIDTHS)
def test_extracted_model_equals_supernet(backbone, randomize_bn):
    supernet = randomize_bn(_supernet(backbone)).eval()
    image = torch.randn(2, 3, 64, 64)
    for text in SUBSETS[backbone]:
        config = RhoConfig.parse(text, backbone=backbone)
        supernet.set_config(config)
        standalone = supernet.extract(config).eval()
        with torch.no_grad():
            torch.testing.assert_close(standalone(image), supernet(image), rtol=1e-5, atol=1e-5)
        assert standalone.num_params() == ExMobileViT(config, num_classes=10).num_params()


def test_supernet_gathers_classifier_segments_not_a_prefix():
    supernet = _supernet("mobilevit_s")
    config = RhoConfig.parse("0,0,1/3,1/4,3")
    index = supernet.classifier_index(config).tolist()
    # Widest layout: block 1 (16), block 3 (128), block 4 (160), block 5 (640).
    assert index == [*range(16, 48), *range(144, 176), *range(304, 784)]
    assert supernet.config.block_offsets == (0, 16, 16, 144, 304)


def test_supernet_training_updates_only_the_active_prefix_of_bn_statistics(randomize_bn):
    supernet = randomize_bn(_supernet("mobilevit_s")).train()
    bn = supernet.shortcuts[2].bn
    before = bn.running_mean.clone()
    supernet.set_config(RhoConfig.parse("0,0,1/3,0,4"))
    supernet(torch.randn(2, 3, 64, 64))
    assert not torch.equal(bn.running_mean[:32], before[:32])
    assert torch.equal(bn.running_mean[32:], before[32:])


def test_config_outside_the_supernet_is_refused():
    supernet = RhoSupernet(parse_search_space({"rho": {"rho_5": [3, 4]}}), num_classes=10)
    with pytest.raises(ValueError, match="outside"):
        supernet.set_config(RhoConfig.parse("0,0,5"))
