"""The full stage: picking finalists on a hand-made front, and real training through Ray
(Ray Train DDP with two gloo workers, and one Ray task per finalist with --resume)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import ray.cloudpickle
import ray.train
import torch
from helpers import hand_study
from safetensors.torch import load_file

from rhosearch.core.space import baseline_config
from rhosearch.deploy.export import load_model
from rhosearch.drivers.finalist_runs import run_all, train_ddp
from rhosearch.drivers.finalists import FinalistSettings, train_finalists
from rhosearch.errors import RhoSearchError
from rhosearch.execution.resources import Budget
from rhosearch.record.study import (
    load_study,
    trials_frame,
)
from rhosearch.vocab import Verdict

# Ray workers cannot import this test module by name: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
XXS = "mobilevit_xxs"
TINY = {"epochs": 1, "resolution": 32, "subset": 128, "batch_size": 32, "workers": 0}

# --- real training through Ray ----------------------------------------------------------------


def _full_trials(tmp_path: Path) -> pd.DataFrame:
    frame = trials_frame(load_study("hand", reports_dir=tmp_path))
    return frame[frame["stage"] == "full"]


def test_zero_seeds_is_refused(tmp_path):
    study = hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    with pytest.raises(RhoSearchError, match="--seeds 0"):
        train_finalists(FinalistSettings(study=study, reports_dir=tmp_path, seeds=0),
                        log=lambda line: None)


def test_one_task_per_finalist_then_resume_adds_nothing(tmp_path, shared_ray):
    study = hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    settings = FinalistSettings(study=study, reports_dir=tmp_path, budget=Budget(cpus=2),
                                seeds=1, recipe_overrides=dict(TINY, ema=False))
    first = train_finalists(settings, log=lambda line: None)
    assert list(first["finalists"]["pick"]) == ["knee", "baseline"]  # knee = best here
    assert (first["finalists"]["status"] == "ok").all()
    assert len(_full_trials(tmp_path)) == 2
    # trials.csv is rewritten with the full stage's rows; each weights file is a real path,
    # kept once (not a second copy in the job store under ray/).
    trials = pd.read_csv(tmp_path / "hand" / "trials.csv")
    assert (trials["stage"] == "full").sum() == 2
    assert all(Path(w).is_file() for w in first["runs"]["weights"])
    assert not list((tmp_path / "hand").glob("ray/**/model.safetensors"))

    again = train_finalists(dataclasses.replace(settings, resume=True), log=lambda line: None)
    assert list(again["runs"]["trial"]) == list(first["runs"]["trial"])
    assert len(_full_trials(tmp_path)) == 2
    assert set(again["finalists"]["top1"]) == set(first["finalists"]["top1"])


def test_a_failed_run_is_recorded_with_its_seed(tmp_path, shared_ray):
    """A failed seed that `--resume` then trains must count once: its record needs its seed
    (a Ray worker's failure was recorded without one, and the report counted "3 of 4" seeds)."""
    study = hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    settings = FinalistSettings(study=study, reports_dir=tmp_path, budget=Budget(cpus=2),
                                seeds=2, recipe_overrides=dict(TINY, ema=False))
    picks = [(baseline_config(), "baseline")]
    # No data for the workers to adopt: each task fails in its first line.
    runs = list(run_all(picks, settings, "digits", None, {"cpu": 1, "gpu": 0},
                        tmp_path / "hand"))
    assert sorted((result["status"], result["seed"]) for *_, result in runs) == [
        ("failed", 0), ("failed", 1)]


def test_finalists_with_seeds_are_compared_pairwise_with_the_baseline(tmp_path, shared_ray):
    study = hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    settings = FinalistSettings(study=study, reports_dir=tmp_path, budget=Budget(cpus=2),
                                seeds=2, recipe_overrides=dict(TINY))
    outcome = train_finalists(settings, log=lambda line: None)
    runs = outcome["runs"]
    assert sorted(zip(runs["rho"], runs["seed"], strict=True)) == [
        ("0,0,0,0,4", 0), ("0,0,0,0,4", 1), ("0,0,1/3,0,3", 0), ("0,0,1/3,0,3", 1)]
    full = _full_trials(tmp_path)
    assert len(full) == 4 and sorted(full["seed"]) == [0, 0, 1, 1]
    # EMA is on in full_small: the recorded top-1 is the EMA model's, the raw one kept beside.
    assert runs["raw_top1"].notna().all()
    summary = outcome["finalists"].set_index("rho")
    assert list(summary["seeds"]) == [2, 2]
    knee, control = summary.loc["0,0,1/3,0,3"], summary.loc["0,0,0,0,4"]
    assert control["vs_baseline"] == "baseline control"
    assert knee["vs_baseline"] in (Verdict.WITHIN_NOISE, Verdict.BETTER, Verdict.WORSE)
    knee_runs = runs[runs["rho"] == "0,0,1/3,0,3"].sort_values("seed")["top1"]
    control_runs = runs[runs["rho"] == "0,0,0,0,4"].sort_values("seed")["top1"]
    assert knee["top1"] == pytest.approx(knee_runs.mean(), abs=1e-3)
    assert knee["top1_diff"] == pytest.approx((knee_runs.values - control_runs.values).mean(),
                                              abs=1e-3)
    folder = tmp_path / "hand" / "finalists"
    assert (folder / "mobilevit_xxs__0_0_1o3_0_3-seed1" / "model.safetensors").is_file()
    assert pd.read_csv(tmp_path / "hand" / "finalists.csv")["seeds"].tolist() == [2, 2]


class Stop(Exception):
    pass


def _stop_after_epoch_1(metrics):
    if metrics["epoch"] == 1:
        raise Stop("killed after epoch 1")


def test_ddp_finalist_on_two_gloo_workers_lands_in_the_study_and_resumes_exactly(
        tmp_path, shared_ray, monkeypatch):
    # Ray Train's controller polls its workers every 2 s: a run's end is seen that much later.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # The baseline is the front's best, so one finalist (trained once) covers pick + control.
    study = hand_study(tmp_path, [("0,0,0,0,4", 0.0, 60.0), ("0,0,1/3,0,3", -500.0, 40.0)])
    settings = FinalistSettings(
        study=study, reports_dir=tmp_path, pick="best", budget=Budget(cpus=2), seeds=1,
        workers_per_finalist=2, recipe="full_small",
        recipe_overrides=dict(TINY, epochs=2, subset=64))
    outcome = train_finalists(settings, log=lambda line: None)

    config = baseline_config(XXS)
    folder = tmp_path / "hand" / "finalists" / config.key
    shards = [json.loads((folder / "shards" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world_size"] for s in shards] == [2, 2] and shards[0]["pid"] != shards[1]["pid"]
    first, second = (set(s["indices"]) for s in shards)
    assert first and second and not first & second  # disjoint halves of the 64 images
    assert len(first | second) == 64

    full = _full_trials(tmp_path)
    assert len(full) == 1
    row = full.iloc[0]
    assert row["state"] == "COMPLETE" and row["rho"] == "0,0,0,0,4" and row["epochs_done"] == 2
    assert row["status"] == "ok"
    # A real accuracy on the validation set: a whole number of its images (not just "a number
    # in [0, 100]", which a wrong unit or an unvalidated run's placeholder would also pass).
    from rhosearch.training.data import build_datasets

    n_val = len(build_datasets("digits", resolution=32)[1])  # the recipe takes no val subset
    hits = row["top1"] * n_val / 100  # top-1 is written to 2 decimals: 0.005 points
    assert hits == pytest.approx(round(hits), abs=0.005 * n_val / 100 + 1e-9)
    study_trial = load_study("hand", reports_dir=tmp_path).trials[int(row["number"])]
    assert study_trial.user_attrs["workers"] == 2 and study_trial.params["rho_5"] == "4"
    assert study_trial.values == [row["top1"], 0.0]

    assert list(outcome["finalists"]["pick"]) == ["best+baseline"]
    assert (tmp_path / "hand" / "finalists.csv").is_file() and outcome["report"].is_file()
    model = load_model(folder / "model.safetensors")
    assert model.config.rho_text == "0,0,0,0,4" and model.num_classes == 10

    # The same run stopped after epoch 1 (every rank raises), then resumed: the same weights.
    resources = {"cpu": 1.0, "gpu": 0.0}
    job = f"cut/{config.key}"
    cut = tmp_path / job
    with pytest.raises(ray.train.TrainingFailedError):  # carrying the Stop
        train_ddp(config, job, cut, settings, "digits", resources,
                   on_epoch=_stop_after_epoch_1)
    assert not (cut / "result.json").exists()
    resumed = train_ddp(config, job, cut, dataclasses.replace(settings, resume=True),
                         "digits", resources)

    # The driver's folders get the results; a finished run leaves nothing in the job store
    # (no second copy of its weights, no checkpoint nothing resumes).
    store = Path(settings.job_store().uri)
    assert not list(cut.glob("checkpoint.pt*")) and (cut / "model.safetensors").is_file()
    assert not list(store.rglob("checkpoint.pt*")) and not list(store.rglob("*.safetensors"))
    a, b = (load_file(path / "model.safetensors") for path in (folder, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole = json.loads((folder / "result.json").read_text())
    for key in ("top1", "top5", "ema_top1", "epochs_done", "status"):
        assert whole[key] == resumed[key], key
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert resumed["epochs_done"] == 2 and resumed["weights"]
