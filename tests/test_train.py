"""Training one configuration: recipes, the LR schedule, EMA, resume, divergence and the CLI."""

from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_image_folder
from timm.utils import ModelEmaV3
from torch import nn

from rhosearch import cli
from rhosearch.core.model import create_model
from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.errors import RhoSearchError
from rhosearch.training.train import (
    RECIPES_PATH,
    build_optimizer,
    build_scheduler,
    learning_rate,
    load_recipe,
    recalibrate_bn,
    train_config,
    train_one_epoch,
)

ROOT = Path(__file__).resolve().parent.parent
XXS = baseline_config("mobilevit_xxs")
# A seconds-long run: the XXS backbone at 32 px on a 16-image folder, two steps an epoch.
TINY = dict(epochs=2, batch_size=8, ema=True, warmup_fraction=0.25)


@pytest.fixture
def pets(tmp_path) -> str:
    return str(write_image_folder(tmp_path / "pets", per_class=8))


# --- recipes ----------------------------------------------------------------------------------


def test_recipes_file_holds_the_paper_recipe_and_a_proxy():
    full, proxy = load_recipe("full"), load_recipe("proxy")
    assert (full.epochs, full.resolution, full.mss, full.ema, full.ema_decay) == (
        300, 256, True, True, 0.9995)
    assert (full.lr_start, full.lr_peak, full.lr_end) == (2e-4, 2e-3, 2e-4)
    assert full.warmup_iters == 3000
    assert (full.weight_decay, full.label_smoothing) == (0.01, 0.1)
    assert proxy.resolution <= 64 and not proxy.mss and not proxy.ema
    for name in yaml.safe_load(RECIPES_PATH.read_text()):  # every shipped recipe is valid
        assert load_recipe(name).name == name


def test_recipe_from_a_file_with_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 5\nmss: false\nmss_scales: [0.5, 1]\n")
    recipe = load_recipe(path, {"epochs": "7", "crop_scale": "0.2,1", "subset": "null"})
    assert (recipe.name, recipe.epochs, recipe.mss, recipe.mss_scales) == ("mine", 7, False,
                                                                           (0.5, 1.0))
    assert recipe.crop_scale == (0.2, 1.0) and recipe.subset is None


@pytest.mark.parametrize(
    "name, overrides, fragment",
    [
        ("nope", None, "unknown recipe 'nope'"),
        ("proxy", {"learning_rate": 1}, "unknown recipe key 'learning_rate'"),
        ("proxy", {"epochs": "three"}, "'epochs': 'three' is not a valid int"),
        ("proxy", {"mss": "maybe"}, "'mss'"),
        ("proxy", {"ema_decay": 1.5}, "'ema_decay': 1.5 is out of range"),
        ("proxy", {"val_every": -1}, "'val_every': -1 is out of range"),
    ],
)
def test_bad_recipes_name_the_key(name, overrides, fragment):
    with pytest.raises(RhoSearchError, match=fragment):
        load_recipe(name, overrides)


@pytest.mark.parametrize("val_every, validated", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]),
                                                  (0, [5])])
def test_val_every_validates_those_epochs_and_always_the_last(val_every, validated):
    recipe = load_recipe("proxy", {"epochs": 5, "val_every": val_every})
    assert [epoch for epoch in range(1, 6) if recipe.validates(epoch)] == validated


def test_proxy_recipes_validate_only_their_last_epoch():
    assert load_recipe("proxy").val_every == load_recipe("proxy_fmnist").val_every == 0
    assert load_recipe("full").val_every == load_recipe("full_small").val_every == 1


# --- schedule and EMA -------------------------------------------------------------------------


def test_lr_schedule_key_points():
    recipe = load_recipe("full")
    total = 100_000
    assert learning_rate(0, total, recipe) == pytest.approx(2e-4)
    assert learning_rate(1500, total, recipe) == pytest.approx(1.1e-3)
    assert learning_rate(3000, total, recipe) == pytest.approx(2e-3)
    assert learning_rate((3000 + total) // 2, total, recipe) == pytest.approx(1.1e-3)
    assert learning_rate(total, total, recipe) == pytest.approx(2e-4)
    # A short run: warm-up shrinks to its fraction of the steps instead of never ending.
    short = load_recipe("proxy", {"epochs": 10})
    assert short.warmup_steps(200) == 20 and learning_rate(20, 200, short) == pytest.approx(2e-3)


def test_scheduler_drives_the_optimizer_through_those_points():
    recipe = load_recipe("full", {"epochs": 2, "warmup_iters": 10, "warmup_fraction": None})
    model = nn.Linear(4, 3)
    optimizer = build_optimizer(model, recipe)
    assert optimizer.defaults["weight_decay"] == 0.01
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=50)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    seen.append(optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(2e-4) and seen[10] == pytest.approx(2e-3)
    assert seen[100] == pytest.approx(2e-4) and max(seen) == pytest.approx(2e-3)


def test_ema_follows_the_weights_at_its_decay():
    torch.manual_seed(0)
    recipe = load_recipe("proxy", {"ema": True, "ema_decay": 0.9})
    model = nn.Linear(4, 3)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=10)
    ema = ModelEmaV3(model, decay=recipe.ema_decay)
    batch = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    epoch = dict(optimizer=optimizer, scheduler=scheduler, recipe=recipe,
                 device=torch.device("cpu"), ema=ema, progress=False)
    train_one_epoch(model, batch, global_step=0, **epoch)
    assert torch.equal(ema.module.weight, model.weight)  # timm: the first update copies
    before = ema.module.weight.clone()
    train_one_epoch(model, batch, global_step=1, **epoch)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)
    assert not torch.equal(ema.module.weight, model.weight)


def test_a_short_runs_ema_follows_the_trained_weights(tmp_path, pets):
    """timm's EMA warm-up: after a few steps the EMA has moved most of the way the weights
    did (with a fixed decay of 0.9995 it stayed at the start: 2 epochs of digits scored chance).
    """
    torch.manual_seed(0)
    model = create_model(XXS, num_classes=2)
    start = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    recipe = load_recipe("proxy", {**TINY, "ema_decay": 0.9995})
    assert recipe.ema_warmup
    train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run", model=model,
                 progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    moved = sum(float((state["model"][k] - v).norm()) for k, v in start.items())
    followed = sum(float((ema[k] - v).norm()) for k, v in start.items())
    assert followed > 0.5 * moved, (followed, moved)


def test_precise_bn_puts_the_population_statistics_of_the_fixed_weights():
    """recalibrate_bn: stale running statistics (as early in a run) are replaced by the data's own
    mean and variance under the final weights, for a model in eval mode (an EMA's) too, which is
    left in eval mode; with them a 2-epoch full_small run on digits went from chance to ~60 %."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.fill_(5.0)
    model[1].running_var.fill_(9.0)
    batches = [(torch.randn(8, 3, 4, 4) * 2 + 1, torch.zeros(8, dtype=torch.long))
               for _ in range(3)]
    recalibrate_bn([model], batches, torch.device("cpu"), batches=10)  # capped at 3
    with torch.no_grad():
        features = model[0](torch.cat([x for x, _ in batches]))
    assert not model.training
    torch.testing.assert_close(model[1].running_mean, features.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(model[1].running_var, features.var(dim=(0, 2, 3), unbiased=False),
                               rtol=1e-4, atol=1e-5)


def test_an_epoch_asks_the_loaders_length_once():
    class Batches(list):  # a loader whose length is costly to compute (the multi-scale one)
        asked = 0

        def __len__(self) -> int:
            Batches.asked += 1
            return super().__len__()

    recipe = load_recipe("proxy")
    model = nn.Linear(4, 3)
    optimizer = build_optimizer(model, recipe)
    batches = Batches([(torch.randn(2, 4), torch.randint(0, 3, (2,)))] * 30)
    stats = train_one_epoch(model, batches, optimizer, build_scheduler(optimizer, recipe, 30),
                            recipe, torch.device("cpu"), progress=False)
    assert stats["steps"] == 30 and Batches.asked == 1  # 32 when asked on every step


# --- whole runs -------------------------------------------------------------------------------


class Stop(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tmp_path, pets):
    recipe = load_recipe("proxy", {**TINY, "val_every": 1})
    whole = train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "whole",
                         progress=False)

    def kill_after_first_epoch(metrics):
        assert {"epoch", "loss", "top1", "top5"} <= set(metrics)
        raise Stop

    with pytest.raises(Stop):
        train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "cut",
                     on_epoch=kill_after_first_epoch, progress=False)
    assert not (tmp_path / "cut/result.json").exists()
    resumed = train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "cut",
                           resume=True, progress=False)

    a = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for key in ("top1", "top5", "ema_top1", "ema_top5", "epochs_done", "status", "params"):
        assert whole[key] == resumed[key], key
    assert whole["epochs_done"] == 2 and whole["ema_top1"] is not None
    lines = (tmp_path / "cut/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    result = json.loads((tmp_path / "whole/result.json").read_text())
    expected = {"name", "rho", "backbone", "params", "gmacs", "overhead_params", "top1", "top5",
                "ema_top1", "ema_top5", "epochs_done", "wall_s", "status"}
    assert expected <= set(result) and result["name"] == "MobileViT-XXS"


def test_an_unvalidated_epoch_has_no_accuracy_and_the_result_is_the_last_validated(tmp_path,
                                                                                  pets):
    recipe = load_recipe("proxy", {**TINY, "val_every": 0})
    seen = []
    result = train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run",
                          on_epoch=seen.append, progress=False)
    lines = [json.loads(line) for line in
             (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [("top1" in m) for m in lines] == [("top1" in m) for m in seen] == [False, True]
    assert "loss" in lines[0] and "epoch_s" in lines[0]
    assert result["top1"] == lines[1]["top1"] and result["ema_top1"] == lines[1]["ema_top1"]
    assert result["epochs_done"] == 2


def test_resume_refuses_another_runs_checkpoint(tmp_path, pets):
    recipe = load_recipe("proxy", {**TINY, "epochs": 1, "ema": False})
    train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run", progress=False)
    other = RhoConfig.parse("0,0,1,1,4", backbone="mobilevit_xxs")
    with pytest.raises(RhoSearchError, match="belongs to another run"):
        train_config(other, data=pets, recipe=recipe, out_dir=tmp_path / "run", resume=True,
                     progress=False)


def test_nan_loss_ends_the_run_as_diverged(tmp_path, pets):
    model = create_model(XXS, num_classes=2)
    with torch.no_grad():
        model.fc.weight.fill_(math.nan)
    recipe = load_recipe("proxy", {**TINY, "ema": False})
    result = train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run", model=model,
                          progress=False)
    assert result["status"] == "diverged" and result["epochs_done"] == 0
    assert result["top1"] is None

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")  # what strict parsers (jq, JavaScript) say

    run = tmp_path / "run"
    [line] = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line, parse_constant=refuse)["loss"] is None  # the NaN loss, as null
    json.loads((run / "result.json").read_text(), parse_constant=refuse)


# --- checkpoints: safe to load, written atomically ------------------------------------------


class _Payload:
    """What a hostile checkpoint holds: unpickling it opens (creates) `marker` for writing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_pickle_payload_in_a_checkpoint_does_not_run_on_resume(tmp_path, pets):
    marker, run = tmp_path / "payload-ran", tmp_path / "run"
    run.mkdir()
    torch.save({"format": "rhosearch-checkpoint/2", "model": _Payload(marker)},
               run / "checkpoint.pt")
    torch.load(run / "checkpoint.pt", weights_only=False)  # an unsafe load runs it ...
    assert marker.exists()
    marker.unlink()
    recipe = load_recipe("proxy", {**TINY, "epochs": 1, "ema": False})
    with pytest.raises(RhoSearchError, match="cannot read checkpoint") as info:
        train_config(XXS, data=pets, recipe=recipe, out_dir=run, resume=True, progress=False)
    assert not marker.exists()  # ... the resume's does not
    assert "\n" not in str(info.value) and str(run / "checkpoint.pt") in str(info.value)


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path, pets):
    recipe = load_recipe("proxy", {**TINY, "epochs": 1, "ema": False})
    train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run", progress=False)
    path = tmp_path / "run/checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RhoSearchError, match="cannot read checkpoint") as info:
        train_config(XXS, data=pets, recipe=recipe, out_dir=tmp_path / "run", resume=True,
                     progress=False)
    assert "\n" not in str(info.value)


def test_a_failed_checkpoint_write_keeps_the_last_one_and_no_metrics_line(tmp_path, pets,
                                                                         monkeypatch):
    recipe, out = load_recipe("proxy", TINY), tmp_path / "run"
    save, saves = torch.save, []

    def disk_fills_in_epoch_2(state, file):
        saves.append(state["history"][-1]["epoch"])
        if saves[-1] == 2:
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        save(state, file)

    monkeypatch.setattr(torch, "save", disk_fills_in_epoch_2)
    with pytest.raises(RhoSearchError, match="No space left on device") as info:
        train_config(XXS, data=pets, recipe=recipe, out_dir=out, progress=False)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]  # no .tmp
    assert torch.load(out / "checkpoint.pt", weights_only=True)["history"][-1]["epoch"] == 1
    monkeypatch.undo()
    result = train_config(XXS, data=pets, recipe=recipe, out_dir=out, resume=True,
                          progress=False)
    assert result["epochs_done"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # epoch 2 once


# --- the command line -------------------------------------------------------------------------


def test_cli_train_runs_and_writes_its_result(tmp_path, pets):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "--rho", "0,0,0,0,4", "--backbone",
         "mobilevit_xxs", "--data", pets, "--epochs", "1", "--set", "batch_size=8",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    summary = completed.stdout.strip().splitlines()[-1]
    assert "MobileViT-XXS" in summary and "top-1" in summary and "GMACs" in summary
    assert json.loads((out / "result.json").read_text())["epochs_done"] == 1


def _broken_image_folder(root: Path) -> Path:
    write_image_folder(root)
    (root / "train/cat/0.png").write_bytes(b"not a png")
    return root


def _no_train_folder(root: Path) -> Path:
    (root / "val/cat").mkdir(parents=True)
    return root


def _empty_class(root: Path) -> Path:
    write_image_folder(root)
    for image in (root / "train/dog").iterdir():
        image.unlink()
    return root


@pytest.mark.parametrize(
    "make, extra, fragment",
    [
        (lambda root: root, [], "unknown data set"),
        (_no_train_folder, [], "no train/ folder"),
        (_empty_class, [], "dog has no images"),
        (_broken_image_folder, [], "cannot read image"),
        (_broken_image_folder, ["--set", "workers=1"], "cannot read image"),
        (lambda root: "cifar10", ["--data-root", "{root}"], "--download"),
        (lambda root: "digits", ["--set", "lr=1"], "unknown recipe key 'lr'"),
        (lambda root: "digits", ["--set", "lr_peak=x"], "'lr_peak'"),
        (lambda root: "digits", ["--set", "epochs"], "KEY=VALUE"),
        (lambda root: "digits", ["--recipe", "nope"], "unknown recipe"),
    ],
    ids=["missing", "no-train", "empty-class", "unreadable", "unreadable-in-worker",
         "cifar-absent", "unknown-key", "bad-value", "bad-set", "bad-recipe"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, extra, fragment):
    # In-process (cli.main is what the console script runs): a subprocess per case would spend
    # most of this test importing torch. A traceback here would fail the test as an exception.
    data = str(make(tmp_path / "images"))
    extra = [arg.format(root=tmp_path) for arg in extra]
    try:
        code = cli.main(["train", "--rho", "0,0,0,0,4", "--backbone", "mobilevit_xxs", "--data",
                         data, "--epochs", "1", "--set", "batch_size=4", "--out",
                         str(tmp_path / "out"), "--no-progress", *extra])
    except SystemExit as exited:  # argparse's refusals (e.g. --set without "=")
        code = exited.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
