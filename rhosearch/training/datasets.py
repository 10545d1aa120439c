"""The data sets rhosearch knows by name, and the recipes each gets unless told otherwise.

One row per built-in data set: its classes, its images' size, and its proxy and full recipes
(`recipes.yaml`). An ImageFolder tree (any other name: a path) gets `FOLDER`'s recipes, sized for
real-size photographs such as ImageNet's. Every command, default and help text reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN", "DATASETS", "FOLDER", "DataSet", "full_recipe_for", "head_recipe_for",
           "proxy_recipe_for"]


@dataclass(frozen=True)
class DataSet:
    """A data set rhosearch trains on, and its default recipes."""

    name: str
    classes: int | None  # None: counted from an ImageFolder's train/ subfolders
    image_px: int | None  # the stored images' side; None: real-size photographs
    proxy_recipe: str  # the search's proxy stage
    # The finalists' (train-best): the paper's recipe at a 64 px base for 8-32 px images, where
    # its 256 px base would only multiply the cost by 16 on upscaled pixels.
    full_recipe: str
    head_recipe: str = "head"  # the head stage's heads on frozen trunks


DATASETS = {
    d.name: d for d in (
        # head_digits: 3 head epochs, where 5 agreed no better with itself and cost 5/3 as much
        # (benchmarks/head_epochs.py, docs/head-stage.md).
        DataSet("digits", 10, 8, proxy_recipe="proxy", full_recipe="full_small",
                head_recipe="head_digits"),
        # proxy_fmnist: sized to about a minute per MobileViT-S trial on 2 CPU cores.
        DataSet("fashion-mnist", 10, 28, proxy_recipe="proxy_fmnist", full_recipe="full_small"),
        DataSet("cifar10", 10, 32, proxy_recipe="proxy", full_recipe="full_small"),
        DataSet("cifar100", 100, 32, proxy_recipe="proxy", full_recipe="full_small"),
    )
}
BUILTIN = tuple(DATASETS)
FOLDER = DataSet("folder", None, None, proxy_recipe="proxy", full_recipe="full")


def _entry(data: str) -> DataSet:
    return DATASETS.get(data, FOLDER)


def proxy_recipe_for(data: str) -> str:
    """The proxy recipe `data` gets unless --recipe says otherwise."""
    return _entry(data).proxy_recipe


def head_recipe_for(data: str) -> str:
    """The head stage's recipe for `data` (its heads' epochs and schedule)."""
    return _entry(data).head_recipe


def full_recipe_for(data: str) -> str:
    """The full recipe (train-best) `data` gets unless --recipe says otherwise."""
    return _entry(data).full_recipe
