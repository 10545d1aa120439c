"""Helpers the test files share (test files import this module, never each other)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from rhosearch.record.study import default_storage_url, open_storage

# A small XXS space (18 rho vectors) for real searches in tests.
XXS_SPACE_YAML = """backbone: mobilevit_xxs
rho:
  rho_3: [0, 1/3, 1]
  rho_4: [0, 1/4, 1]
  rho_5: [3, 4]
"""


def write_image_folder(root: Path, *, classes=("cat", "dog"), per_class: int = 3) -> Path:
    """`root/{train,val}/<class>/<i>.png`: small random RGB images, the same on every call."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def dominated_area(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area of (top1, cost) space that `points` dominate within `reference` (top1 at least
    the reference's, cost at most its), by brute force: every cell of the grid the points'
    coordinates draw counts when some point dominates it. An independent check of hypervolume
    code (O(n^3), for a few dozen points)."""
    ref_top1, ref_cost = reference
    inside = [(t, c) for t, c in points if t > ref_top1 and c < ref_cost]
    tops = sorted({ref_top1, *(t for t, _ in inside)})
    costs = sorted({ref_cost, *(c for _, c in inside)})
    area = 0.0
    for t_low, t_high in itertools.pairwise(tops):
        for c_low, c_high in itertools.pairwise(costs):
            if any(t >= t_high and c <= c_low for t, c in inside):
                area += (t_high - t_low) * (c_high - c_low)
    return area


def hand_study(tmp_path: Path, proxy: list[tuple[str, float, float]]) -> str:
    """A searched-looking study: an XXS space file and proxy trials (rho, overhead, top1)."""
    space = tmp_path / "space.yaml"
    space.write_text("backbone: mobilevit_xxs\nrho:\n  rho_3: [0, 1/3]\n  rho_5: [3, 4]\n")
    study = optuna.create_study(study_name="hand", directions=["maximize", "minimize"],
                                storage=open_storage(default_storage_url("hand", tmp_path)))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["top1", "overhead_params"])
    study.set_user_attr("space", str(space))
    study.set_user_attr("data", "digits")
    distributions = {"rho_3": optuna.distributions.CategoricalDistribution(["0", "1/3"]),
                     "rho_5": optuna.distributions.CategoricalDistribution(["3", "4"])}
    for rho, overhead, top1 in proxy:
        rho_3, rho_5 = rho.split(",")[2], rho.split(",")[4]
        study.add_trial(optuna.trial.create_trial(
            values=[top1, overhead], params={"rho_3": rho_3, "rho_5": rho_5},
            distributions=distributions,
            user_attrs=dict(stage="proxy", backbone="mobilevit_xxs", rho=rho, top1=top1,
                            overhead_params=overhead, params=1e6 + overhead)))
    return "hand"


# The head stage's tests (`test_head.py` and the script its resume test runs in a process of
# its own): a small XXS space, a short head recipe, and a loader of random 32 px images.


def head_space():
    from rhosearch.core.space import parse_search_space

    return parse_search_space({
        "backbone": "mobilevit_xxs",
        "rho": {"rho_3": [0, "1/3", 1], "rho_4": [0, "1/2"], "rho_5": [2, 4]},
    })


def head_recipe():
    from rhosearch.training.recipe import load_recipe

    return load_recipe("head", {"epochs": 2, "batch_size": 8, "drop_rate": 0.0})


def random_loader(n: int = 24, seed: int = 1, batch_size: int = 7):
    """`n` random images with random labels of 10 classes, the same for the same seed."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator)
    return DataLoader(TensorDataset(images, torch.randint(10, (n,), generator=generator)),
                      batch_size=batch_size)
