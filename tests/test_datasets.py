"""The data-set registry: one row per built-in set, read by every command's defaults."""

from __future__ import annotations

import pytest

from rhosearch.cli import DATA_HELP
from rhosearch.training.data import dataset_info
from rhosearch.training.datasets import (
    BUILTIN,
    DATASETS,
    full_recipe_for,
    head_recipe_for,
    proxy_recipe_for,
)
from rhosearch.training.recipe import load_recipe


def test_small_image_sets_get_the_64_px_full_recipe_and_folders_the_256_px_one():
    # fashion-mnist (28 px images) got the 256 px `full` recipe: it was missing from the list.
    assert full_recipe_for("fashion-mnist") == "full_small"
    assert {full_recipe_for(name) for name in ("digits", "cifar10", "cifar100")} == {
        "full_small"}
    assert full_recipe_for("/data/imagenet") == "full"
    assert load_recipe(full_recipe_for("fashion-mnist")).resolution == 64


def test_proxy_recipes():
    assert proxy_recipe_for("fashion-mnist") == "proxy_fmnist"
    assert proxy_recipe_for("digits") == proxy_recipe_for("/data/imagenet") == "proxy"


def test_head_recipes_differ_from_the_head_recipe_in_epochs_alone():
    """digits' heads train 3 epochs (benchmarks/head_epochs.py); everything else is `head`'s."""
    assert head_recipe_for("fashion-mnist") == head_recipe_for("/data/imagenet") == "head"
    digits, base = load_recipe(head_recipe_for("digits")), load_recipe("head")
    assert (digits.epochs, base.epochs) == (3, 5)
    differ = {k for k in vars(base) if getattr(base, k) != getattr(digits, k)}
    assert differ == {"name", "description", "epochs"}


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_set_has_its_classes_recipes_and_a_help_line(name):
    entry = DATASETS[name]
    assert dataset_info(name) == entry.classes
    assert load_recipe(entry.proxy_recipe) and load_recipe(entry.full_recipe)
    assert name in DATA_HELP
