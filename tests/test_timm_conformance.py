"""The registered presets behave as timm's own models: what timm's `tests/test_models.py`
checks of every model (forward, backward, default config, features_only, forward_intermediates,
TorchScript, FX), asked here of `exmobilevit_s_*`, at a small input to stay fast.

ExMobileViT pools inside each shortcut (Eq. 2), so `forward_features` is already pooled: timm
calls such a model non-standard and checks it with `test_model_default_cfgs_non_std`, which is
what the default-config test below follows.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import rhosearch.core.model as model_module
from rhosearch.core.space import load_presets

NAMES = timm.list_models("exmobilevit_*")
SIZE = (3, 64, 64)  # timm's own tests shrink inputs too (TARGET_*_SIZE)


def test_every_preset_but_the_baseline_is_registered_under_its_timm_name():
    named = {p.config.timm_name for p in load_presets().values()} - {None}
    assert set(NAMES) == named and len(NAMES) == 5
    assert set(model_module.default_cfgs) == named


def test_a_star_import_of_the_model_module_works():
    namespace: dict = {}
    exec("from rhosearch.core.model import *", namespace)  # raised: __all__ named no attribute
    assert "exmobilevit_s_928" in namespace and "ExMobileViT" in namespace


@pytest.mark.parametrize("name", ["exmobilevit_s_576", "exmobilevit_s_928"])
def test_forward_and_backward(name):
    model = timm.create_model(name, num_classes=7).train()
    outputs = model(torch.randn(2, *SIZE))
    assert outputs.shape == (2, 7) and not outputs.isnan().any()
    outputs.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_as_timm_checks_a_non_standard_model(name):
    model = timm.create_model(name).eval()
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    cfg, state = model.default_cfg, model.state_dict()
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
    x = torch.randn(1, *SIZE)
    features = model.forward_features(x)
    pre_logits = model.forward_head(features, pre_logits=True)
    assert features.shape[1] == model.num_features
    assert pre_logits.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    assert model(x).shape == pre_logits.shape
    assert timm.create_model(name, num_classes=0).eval()(x).shape[1] == model.num_features


@pytest.mark.parametrize("name, feature_cls", [("exmobilevit_s_576", None),
                                               ("exmobilevit_s_928", "getter")])
def test_features_only(name, feature_cls):
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    model = timm.create_model(name, features_only=True, **kwargs).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert channels == [32, 64, 96, 128, 160] and len(channels) >= 3
    outputs = model(torch.randn(1, *SIZE))
    assert len(outputs) == len(channels)
    for c, r, out in zip(channels, reductions, outputs, strict=True):
        assert out.shape[1] == c and out.shape[0] == 1 and not out.isnan().any()
        assert out.shape[2] <= math.ceil(SIZE[1] / r) + 1
        assert out.shape[3] <= math.ceil(SIZE[2] / r) + 1


@pytest.mark.parametrize("name", ["exmobilevit_s_928"])
def test_forward_intermediates(name):
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, *SIZE)
    final, intermediates = model.forward_intermediates(x)
    assert [t.shape[1] for t in intermediates] == info.channels()
    assert torch.allclose(final, model.forward_features(x))
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2


@pytest.mark.parametrize("name", ["exmobilevit_s_576"])  # blocks 1-2 without a shortcut
def test_torchscript(name):
    with timm.layers.set_scriptable(True):
        model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, *SIZE)
    assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_fx_forward_and_backward():
    # As timm's `_create_fx_model`: its no-trace modules and functions stay leaves.
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(),
                         autowrap_functions=get_notrace_functions())
    model = timm.create_model("exmobilevit_s_928", num_classes=7).train()
    train_nodes, _ = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    extractor = create_feature_extractor(model, return_nodes=[train_nodes[-1]],
                                         tracer_kwargs=tracer_kwargs).train()
    outputs = next(iter(extractor(torch.randn(2, *SIZE)).values()))
    assert outputs.shape == (2, 7)
    outputs.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
