"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture
def randomize_bn() -> Callable[[torch.nn.Module], torch.nn.Module]:
    """Moves every BatchNorm's running statistics and affine parameters off their initial
    values (0, 1, 1, 0), in place, so a slicing or gathering mistake shows in the outputs."""
    return _randomize_bn
