"""fvcore counts, the attention handle, and the closed form that must agree with both."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch

from rhosearch.core.cost import CostModel, cost_table, count_cost, fvcore_macs
from rhosearch.core.space import BACKBONE_WIDTHS, RhoConfig, baseline_config, load_presets


def test_attention_is_counted():
    model = timm.create_model("mobilevit_xxs").eval()
    _, by_operator, skipped = fvcore_macs(model, torch.zeros(1, 3, 64, 64))
    assert by_operator["scaled_dot_product_attention"] > 0
    assert "aten::scaled_dot_product_attention" not in skipped


GRID = ["0", "1/3", "1", "4/3"]


@pytest.mark.parametrize("backbone", BACKBONE_WIDTHS)
def test_closed_form_equals_fvcore_and_exact_params(backbone):
    cost_model = CostModel(backbone, resolution=64, num_classes=10)
    configs = [
        RhoConfig.parse(f"{r1},0,{r3},{r4},{r5}", backbone=backbone)
        for r1, r3, r4, r5 in itertools.product(["0", "1/2"], GRID, GRID[:3], ["0", "3", "4"])
        if any(v != "0" for v in (r1, r3, r4, r5))
    ][::5]
    assert len(configs) >= 10
    for config in configs:
        params, macs = count_cost(config, resolution=64, num_classes=10)
        priced = cost_model.price(config)
        assert (priced.params, priced.macs) == (params, macs), config.rho_text


def test_baseline_overhead_is_zero_and_928_costs_more():
    cost_model = CostModel("mobilevit_s")
    assert cost_model.price(baseline_config()).overhead_params == 0
    assert cost_model.price(baseline_config()).params == 5_578_632
    assert cost_model.price(load_presets()["exmvit-928"].config).overhead_params == 321_344


def test_cost_table_lists_paper_params_beside_ours():
    frame, notes = cost_table([p.config for p in load_presets().values()], measure=False)
    assert list(frame["classifier_channels"]) == [640, 576, 640, 704, 864, 928]
    assert frame.loc[0, "paper_params"] == 5_579_000
    assert "scaled_dot_product_attention" in notes[0]
