"""The full stage: picking finalists on a hand-made front, and real training through Ray
(Ray Train DDP with two gloo workers, and one Ray task per finalist with --resume)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
import ray.cloudpickle
import ray.train
import torch

from rhosearch.core.space import baseline_config
from rhosearch.deploy.export import load_model
from rhosearch.drivers.finalists import (
    FinalistSettings,
    _train_ddp,
    knee_order,
    parse_param_count,
    pick_finalists,
    picks_with_reasons,
    train_finalists,
)
from rhosearch.errors import RhoSearchError
from rhosearch.execution.resources import Budget
from rhosearch.record.study import (
    TRIAL_COLUMNS,
    default_storage_url,
    load_study,
    open_storage,
    pareto_front,
    trials_frame,
)
from rhosearch.vocab import Verdict

# Ray workers cannot import this test module by name: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
XXS = "mobilevit_xxs"
TINY = {"epochs": 1, "resolution": 32, "subset": 128, "batch_size": 32, "workers": 0}

# (rho, params, overhead_params, top1): on axes scaled to [0, 1] the front A, B, C, D sits at
# x = 0, 1/3, 2/3, 1 and y = 0, 0.75, 0.875, 1, so y - x = 0, 0.42, 0.21, 0: B is the knee.
FRONT = {
    "A": ("0,0,0,0,1", 900_000, -100, 50.0),
    "B": ("0,0,1/3,0,2", 1_000_000, 0, 80.0),
    "C": ("0,0,1,0,3", 1_100_000, 100, 85.0),
    "D": ("0,0,2,0,4", 1_200_000, 200, 90.0),
}
DOMINATED = ("0,0,1,1,4", 1_150_000, 150, 60.0)


def _frame(points, *, extra_rows=()) -> pd.DataFrame:
    rows = [dict(stage="proxy", state="COMPLETE", backbone=XXS, rho=rho, params=float(params),
                 overhead_params=float(overhead), top1=top1)
            for rho, params, overhead, top1 in points]
    rows += list(extra_rows)
    frame = pd.DataFrame(rows).reindex(columns=TRIAL_COLUMNS)
    frame["number"] = range(len(frame))
    return frame


HAND = _frame([*FRONT.values(), DOMINATED], extra_rows=[
    # Neither a failed proxy trial nor another stage's trial can be picked.
    dict(stage="proxy", state="FAIL", backbone=XXS, rho="0,0,4/3,0,5", params=1e6,
         overhead_params=-500.0, top1=99.0),
    dict(stage="oneshot", state="COMPLETE", backbone=XXS, rho="0,0,2/3,0,5", params=1e6,
         overhead_params=-500.0, top1=99.0),
])


def _rhos(configs) -> list[str]:
    return [c.rho_text for c in configs]


def test_knee_is_farthest_above_the_line_between_the_extremes():
    ordered = knee_order(pareto_front(HAND))
    assert list(ordered["rho"]) == [FRONT[k][0] for k in "BCAD"]
    assert ordered["knee_distance"].iloc[0] == pytest.approx((0.75 - 1 / 3) / 2**0.5)


def test_default_pick_is_knee_and_best_plus_the_baseline():
    picked = picks_with_reasons(HAND)
    assert [(c.rho_text, why) for c, why in picked] == [
        (FRONT["B"][0], "knee"), (FRONT["D"][0], "best"), ("0,0,0,0,4", "baseline")]
    assert all(c.backbone == XXS for c, _ in picked)


@pytest.mark.parametrize("pick, top, expected", [
    ("best", 1, ["D"]),
    ("knee", 1, ["B"]),
    ("knee,best", 2, ["B", "C", "D"]),  # C is second of both orders: trained once
    ("best", 3, ["D", "C", "B"]),
    ("under=1.05M", 1, ["B"]),
    ("under=1100000", 1, ["C"]),
    ("under=1150k", 2, ["C", "B"]),
    ("KNEE, under=950k", 1, ["B", "A"]),
])
def test_picks_in_order_with_the_baseline_always_last(pick, top, expected):
    configs = pick_finalists(HAND, pick=pick, top=top)
    assert _rhos(configs) == [FRONT[k][0] for k in expected] + ["0,0,0,0,4"]


def test_a_picked_baseline_is_not_trained_twice():
    frame = _frame([("0,0,0,0,4", 1_000_000, 0, 95.0), FRONT["A"]])
    picked = picks_with_reasons(frame, pick="best")
    assert [(c.rho_text, why) for c, why in picked] == [("0,0,0,0,4", "best+baseline")]


@pytest.mark.parametrize("text, count", [("5.7M", 5_700_000), ("5700000", 5_700_000),
                                         ("300k", 300_000), ("1_000", 1000), ("0.5m", 500_000)])
def test_param_counts(text, count):
    assert parse_param_count(text) == count


@pytest.mark.parametrize("frame, kwargs, message", [
    (HAND, dict(pick="fastest"), "unknown --pick"),
    (HAND, dict(pick=""), "empty"),
    (HAND, dict(pick="under=lots"), "parameter count"),
    (HAND, dict(pick="under=300k"), "no configuration on the front has <= 300,000"),
    (HAND, dict(top=0), "--top"),
    (_frame([]), {}, "no completed proxy trials"),
    (HAND[HAND["stage"] != "proxy"], {}, "no completed proxy trials"),
])
def test_bad_picks_are_one_line_errors(frame, kwargs, message):
    with pytest.raises(RhoSearchError, match=message) as info:
        pick_finalists(frame, **kwargs)
    assert "\n" not in str(info.value)


# --- real training through Ray ----------------------------------------------------------------


def _hand_study(tmp_path: Path, proxy: list[tuple[str, float, float]]) -> str:
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
            user_attrs=dict(stage="proxy", backbone=XXS, rho=rho, top1=top1,
                            overhead_params=overhead, params=1e6 + overhead)))
    return "hand"


def _full_trials(tmp_path: Path) -> pd.DataFrame:
    frame = trials_frame(load_study("hand", reports_dir=tmp_path))
    return frame[frame["stage"] == "full"]


def test_zero_seeds_is_refused(tmp_path):
    study = _hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    with pytest.raises(RhoSearchError, match="--seeds 0"):
        train_finalists(FinalistSettings(study=study, reports_dir=tmp_path, seeds=0),
                        log=lambda line: None)


def test_one_task_per_finalist_then_resume_adds_nothing(tmp_path, shared_ray):
    study = _hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
    settings = FinalistSettings(study=study, reports_dir=tmp_path, budget=Budget(cpus=2),
                                seeds=1, recipe_overrides=dict(TINY, ema=False))
    first = train_finalists(settings, log=lambda line: None)
    assert list(first["finalists"]["pick"]) == ["knee", "baseline"]  # knee = best here
    assert (first["finalists"]["status"] == "ok").all()
    assert len(_full_trials(tmp_path)) == 2

    again = train_finalists(dataclasses.replace(settings, resume=True), log=lambda line: None)
    assert list(again["runs"]["trial"]) == list(first["runs"]["trial"])
    assert len(_full_trials(tmp_path)) == 2
    assert set(again["finalists"]["top1"]) == set(first["finalists"]["top1"])


def test_finalists_with_seeds_are_compared_pairwise_with_the_baseline(tmp_path, shared_ray):
    study = _hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])
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
    study = _hand_study(tmp_path, [("0,0,0,0,4", 0.0, 60.0), ("0,0,1/3,0,3", -500.0, 40.0)])
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
    assert row["status"] == "ok" and 0 <= row["top1"] <= 100
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
        _train_ddp(config, job, cut, settings, "digits", resources,
                   on_epoch=_stop_after_epoch_1)
    assert not (cut / "result.json").exists()
    resumed = _train_ddp(config, job, cut, dataclasses.replace(settings, resume=True),
                         "digits", resources)

    # The checkpoints stay in the job store; the driver's folders get the results.
    store = Path(settings.job_store().uri)
    assert not list(cut.glob("checkpoint.pt*")) and (cut / "model.safetensors").is_file()
    a, b = (torch.load(store / name / "checkpoint.pt", weights_only=True)
            for name in (f"finalists/{config.key}", job))
    assert a["identity"]["world_size"] == 2 and len(b["rng"]) == 2  # every rank's RNG state
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    whole = json.loads((folder / "result.json").read_text())
    for key in ("top1", "top5", "ema_top1", "epochs_done", "status"):
        assert whole[key] == resumed[key], key
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert resumed["epochs_done"] == 2 and resumed["weights"]
