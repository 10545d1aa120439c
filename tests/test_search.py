"""The search: budgets, a real small search on digits with real Ray and SQLite, GPU packing,
failures, and kill -9 + --resume."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import ray.cloudpickle

from rhosearch.core.space import parse_search_space
from rhosearch.drivers.search import SearchSettings, expected_seconds, next_steps, run_search
from rhosearch.errors import RhoSearchError
from rhosearch.execution.resources import Budget, parse_budget
from rhosearch.record.study import open_storage
from rhosearch.training.recipe import load_recipe

# Ray workers cannot import this test module by name: ship its trial functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
TINY = {"epochs": 1, "subset": 128, "batch_size": 32, "resolution": 32}


@pytest.mark.parametrize(
    "text, budget",
    [
        ("6gpus", Budget(gpus=6)),
        ("2cpus", Budget(cpus=2)),
        ("4gpus,12h", Budget(gpus=4, wall_s=12 * 3600)),
        ("8cpus, 1gpu, 30m", Budget(cpus=8, gpus=1, wall_s=1800)),
        ("0.5gpus", Budget(gpus=0.5)),
    ],
)
def test_budget_parses(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["6", "gpus", "2cpus,2cpus", "12h", "4tpus", "-1cpus", ""])
def test_bad_budget_is_a_clear_error(text):
    with pytest.raises(RhoSearchError, match="budget"):
        parse_budget(text)


def _space(**rho):
    return parse_search_space({"backbone": "mobilevit_xxs", "rho": rho or {
        "rho_3": [0, 1/3, 1], "rho_4": [0, 1/4, 1], "rho_5": [3, 4]}})


def _settings(tmp_path, **kwargs):
    defaults = dict(study="t", space=_space(), trials=4, budget=Budget(cpus=2),
                    recipe_overrides=dict(TINY), reports_dir=tmp_path, progress=False,
                    noise_seeds=0, stage="proxy")
    return SearchSettings(**{**defaults, **kwargs})


def test_small_real_search_records_every_trial(tmp_path):
    outcome = run_search(_settings(tmp_path), log=lambda line: None)
    assert not ray.is_initialized()  # the search shut down the Ray it started
    trials = outcome["trials"]
    trained = trials[trials["status"].isin(["ok", "stopped"])]
    assert len(trained) == 4
    # The paper's presets are not in an XXS space; every trained trial carries its record.
    assert trained[["name", "rho", "params", "gmacs", "top1", "epochs_done"]].notna().all().all()
    assert (tmp_path / "t" / "trials.csv").is_file()
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}")
    assert len(study.get_trials()) == len(trials)
    assert not outcome["front"].empty
    runs = tmp_path / "t" / "trials"  # bounded disk: metrics stay, checkpoints go
    assert len(list(runs.glob("*/metrics.jsonl"))) == 4
    assert not list(runs.glob("*/checkpoint.pt*"))


def test_a_finished_search_leaves_no_waiting_trials(tmp_path, shared_ray):
    # Five paper configurations are enqueued in this S space; two trials run, three do not.
    space = parse_search_space({"backbone": "mobilevit_s", "rho": {
        "rho_3": [0, "1/3", 1], "rho_4": [0, "1/4", "1/2", 1], "rho_5": [3, 4]}})
    lines = []
    outcome = run_search(_settings(tmp_path, space=space, trials=2), trial_fn=_instant,
                         log=lines.append)
    trials = outcome["trials"]
    assert "WAITING" not in set(trials["state"])
    not_run = trials[trials["status"] == "not run"]
    assert len(not_run) == 3 and (not_run["state"] == "FAIL").all()
    assert not_run[["stage", "name", "rho"]].notna().all().all()
    assert lines[-1].startswith("[2/2 trials done, 0 running, 0 failed]"), lines


def test_existing_study_without_resume_is_refused(tmp_path, shared_ray):
    settings = _settings(tmp_path, trials=1)
    run_search(settings, trial_fn=_instant, log=lambda line: None)
    with pytest.raises(RhoSearchError, match="--resume"):
        run_search(settings, log=lambda line: None)


def _instant(config, *, settings, data=None, sleep=0.0):
    from ray import tune

    start = time.time()
    time.sleep(sleep)
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0)
    tune.report({"epoch": 1, "epochs_done": 1, "top1": float(config["number"]), "top5": 0.0,
                 "rho": config["rho"], "name": "probe", "gpus": gpus, "started_at": start,
                 "ended_at": time.time(), "status": "ok"})


def _raise_for_big_block_3(config, *, settings, data=None):

    if config["rho"].split(",")[2] == "1":
        raise RuntimeError("boom")
    _instant(config, settings=settings)


def test_a_trial_that_raises_is_failed_and_the_search_completes(tmp_path, shared_ray):
    space = _space(rho_3=[1], rho_5=[3, 4])  # rho_3 = 1 always: every trial raises
    outcome = run_search(_settings(tmp_path, space=space, trials=2),
                         trial_fn=_raise_for_big_block_3,
                         log=lambda line: None)
    trials = outcome["trials"]
    assert (trials["state"] == "FAIL").sum() == 2
    assert not outcome["interrupted"]


def _share_probe(config, *, settings, data=None):
    """Waits (up to 120 s) until 4 trials have started: they can only all start if Ray packs
    them at once; records how many it saw running beside itself."""
    from ray import tune

    started = Path(settings.reports_dir) / "started"
    started.mkdir(exist_ok=True)
    (started / str(config["number"])).touch()
    deadline = time.time() + 120
    while len(list(started.iterdir())) < 4 and time.time() < deadline:
        time.sleep(0.2)
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0)
    tune.report({"epoch": 1, "epochs_done": 1, "top1": 1.0, "rho": config["rho"],
                 "name": "probe", "gpus": gpus, "peers": len(list(started.iterdir())),
                 "status": "ok"})


def test_half_gpu_trials_pack_four_on_two_logical_gpus(tmp_path):
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False,
             log_to_driver=False)  # "local": never join another test's cluster
    try:
        space = parse_search_space({"backbone": "mobilevit_xxs", "rho": {
            "rho_3": [0, 1/3, 2/3, 1], "rho_4": [0, 1/4, 1/2, 1], "rho_5": [3, 4]}})
        settings = _settings(tmp_path, space=space, trials=4, budget=Budget(gpus=2, cpus=4),
                             gpus_per_trial=0.5, cpus_per_trial=1)
        outcome = run_search(settings, trial_fn=_share_probe, log=lambda line: None)
    finally:
        ray.shutdown()
    study = outcome["study"]
    runs = [t.user_attrs for t in study.get_trials() if t.user_attrs.get("trained")]
    assert len(runs) == 4
    assert all(r["gpus"] == 0.5 for r in runs)
    assert all(r["peers"] == 4 for r in runs)  # all 4 were running at once


def test_more_gpus_than_exist_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(RhoSearchError, match="GPUs"):
        run_search(_settings(tmp_path, budget=Budget(gpus=64)), log=lambda line: None)
    assert not (tmp_path / "t" / "study.db").exists()


# The proxy stage alone, without noise seeds: the interruption, not the stages, is under test.
SUBSET = ("--set", "subset=96", "--stage", "proxy", "--noise-seeds", "0")


def _trained(tmp_path):
    # Opened as rhosearch opens it: the driver may be writing the new file's schema right now.
    storage = open_storage(f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    try:
        study = optuna.load_study(study_name="k", storage=storage)
    except KeyError:  # the file exists a moment before the study's row does
        return {}
    return {t.number: (t.user_attrs["rho"], t.values) for t in study.get_trials()
            if t.user_attrs.get("trained") and t.state.name == "COMPLETE"}


def test_kill_9_then_resume_keeps_every_completed_trial_once(tmp_path, search_command):
    driver = subprocess.Popen(search_command(*SUBSET), cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    before = {}
    while time.time() < deadline and driver.poll() is None:
        time.sleep(1)
        if (tmp_path / "k" / "study.db").exists():
            before = _trained(tmp_path)
            if before:
                break
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, its Ray and its workers: no cleanup
    driver.wait()
    assert 1 <= len(before) < 4
    resumed = subprocess.run(search_command(*SUBSET, "--resume"), cwd=tmp_path,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = _trained(tmp_path)
    assert all(after[number] == record for number, record in before.items())
    assert len(after) == 4  # exactly the target: nothing lost, nothing trained twice
    assert len({rho for rho, _ in after.values()}) == 4


def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path, search_command):
    driver = subprocess.Popen(search_command(*SUBSET), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    store = tmp_path / "k" / "ray" / "jobs"  # a trial's first epoch reaches the job store
    while time.time() < deadline and not list(store.glob("trials/*")):
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]


def test_bad_noise_seeds_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(RhoSearchError, match="--noise-seeds -1"):
        run_search(_settings(tmp_path, noise_seeds=-1), log=lambda line: None)
    assert not (tmp_path / "t").exists()


def test_noise_seeds_are_recorded_apart_and_not_counted_as_search_trials(tmp_path, shared_ray):
    lines = []
    outcome = run_search(_settings(tmp_path, trials=2, noise_seeds=2), trial_fn=_instant,
                         log=lines.append)
    trials = outcome["trials"]
    noise = trials[trials["stage"] == "noise"]
    assert sorted(noise["seed"]) == [1, 2] and (noise["state"] == "COMPLETE").all()
    assert (noise["rho"] == "0,0,0,0,4").all()
    proxy = trials[trials["stage"] == "proxy"]
    assert (proxy["status"] == "ok").sum() == 2  # --trials 2 trained, the seeds on top
    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    search = optuna.load_study(study_name="t", storage=storage)
    assert {t.user_attrs["stage"] for t in search.get_trials()} == {"proxy"}
    assert len(optuna.load_study(study_name="t::noise", storage=storage).get_trials()) == 2
    # The XXS space holds no baseline proxy trial: the floor is the two noise seeds'
    # top-1, which `_instant` sets to the seed.
    assert outcome["noise"]["top1"] == [1.0, 2.0]
    assert outcome["noise"]["std"] == pytest.approx(0.7071, abs=1e-4)
    assert search.user_attrs["noise_floor"]["std"] == pytest.approx(0.7071, abs=1e-4)
    assert "over the 2 configurations compared (Holm)" in outcome["verdict"]
    assert "Power:" in outcome["verdict"] and "Pairing correlation" in outcome["verdict"]
    # The progress line counts the seeds as what they are (it read "[0/2 done, 0 running").
    seed_lines = [line for line in lines if "noise floor: baseline seed" in line]
    assert len(seed_lines) == 2 and all("noise seeds" in line for line in seed_lines), lines
    assert any("noise seeds 2/2" in line for line in seed_lines), seed_lines
    # The search ends with the next command, its real folder, and what the noise leaves open.
    steps = next_steps(_settings(tmp_path, trials=2, noise_seeds=2), outcome, command=shlex.join)
    assert steps[0].startswith(f"next: train-best --study t --reports-dir {tmp_path} "
                               "--epochs 2 --budget 2cpus"), steps
    assert "<" not in steps[0]
    assert steps[1].startswith("open: the contenders were not raced with paired seeds; "
                               f"search --study t --reports-dir {tmp_path} --stage resolve"
                               ), steps
    # A resumed search does not measure the floor again.
    again = run_search(_settings(tmp_path, trials=2, noise_seeds=2, resume=True),
                       trial_fn=_instant, log=lines.append)
    assert (again["trials"]["stage"] == "noise").sum() == 2


def test_oneshot_scores_stay_out_of_the_samplers_history_and_its_checkpoint_goes(
        tmp_path, shared_ray):
    space = _space(rho_3=[0, 1], rho_4=[0, 1], rho_5=[4])
    outcome = run_search(_settings(tmp_path, space=space, stage="oneshot"),
                         log=lambda line: None)
    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    search = optuna.load_study(study_name="t", storage=storage)
    assert search.get_trials() == []  # what NSGA-II/TPE/GP learn from holds no one-shot score
    scored = optuna.load_study(study_name="t::oneshot", storage=storage).get_trials()
    assert len(scored) == 4
    frame = outcome["trials"]
    oneshot = frame[frame["stage"] == "oneshot"]
    assert len(oneshot) == 4 and oneshot["top1"].notna().all()
    # Screening scores: no interval (one supernet, no seed spread), labelled so.
    assert oneshot[["top1_lo", "top1_hi"]].isna().all().all()
    assert (oneshot["vs_baseline"] == "screening score").all()
    # A finished one-shot stage leaves its scores, not its checkpoint.
    supernet = tmp_path / "t" / "supernet"
    assert (supernet / "scores.csv").is_file() and (supernet / "metrics.jsonl").is_file()
    assert not list(supernet.glob("checkpoint.pt*"))
    # A screen alone trains no finalist: it names the proxy stage on this study, runnable.
    steps = next_steps(_settings(tmp_path, space=space, stage="oneshot"), outcome,
                       command=shlex.join)
    assert steps == [f"next: the proxy trials on this study: search --study t --reports-dir "
                     f"{tmp_path} --resume --stage proxy --space {shlex.quote(space.source)}"]
    lines = []  # resumed: the scores are read back, the supernet is not trained again
    again = run_search(_settings(tmp_path, space=space, stage="oneshot", resume=True),
                       log=lines.append)
    assert not any("training the supernet" in line for line in lines), lines
    assert (again["trials"]["stage"] == "oneshot").sum() == 4


def _seeded(config, *, settings, data=None):
    """A trial whose top-1 is set by its rho and seed: the wide block-3 shortcut 10 points
    above the baseline at every seed, each seed moving both by the same 2 points, plus a
    0.1-point wobble (common random numbers, as training with a shared seed gives)."""
    from ray import tune

    seed = int(config.get("seed", settings.seed))
    wide = config["rho"].split(",")[2] == "1"
    top1 = 50.0 + 10.0 * wide + 2.0 * seed + 0.1 * ((seed * 7 + 5 * wide) % 3)
    tune.report({"epoch": 1, "epochs_done": 1, "top1": top1, "top5": 0.0, "seed": seed,
                 "status": "ok"})


def test_resolve_races_the_contender_with_paired_seeds_until_it_is_decided(
        tmp_path, shared_ray):
    lines = []
    space = _space(rho_3=[0, 1], rho_5=[4])
    first = run_search(_settings(tmp_path, space=space, trials=2, noise_seeds=2),
                       trial_fn=_seeded, log=lines.append)
    assert not (first["trials"]["stage"] == "resolve").any()  # --stage proxy: no resolve
    outcome = run_search(_settings(tmp_path, space=space, trials=2, noise_seeds=2,
                                   resolve_seeds=3, stage="resolve"), trial_fn=_seeded,
                         log=lines.append)
    trials = outcome["trials"]
    resolve = trials[trials["stage"] == "resolve"]
    # One seed more than the proxy's was enough to separate it; the cap (3 more) not reached.
    assert sorted(zip(resolve["rho"], resolve["seed"], strict=True)) == [("0,0,1,0,4", 1)]
    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    search = optuna.load_study(study_name="t", storage=storage)
    assert {t.user_attrs["stage"] for t in search.get_trials()} == {"proxy"}  # one row per rho
    wide = trials[(trials["rho"] == "0,0,1,0,4") & (trials["stage"] == "proxy")].iloc[0]
    # One configuration with 2 paired seeds gives the paired variance 1 df: still unpaired.
    assert wide["vs_baseline"] == "better" and wide["test"] == "unpaired t"
    assert outcome["resolve"]["runs"] == 1
    assert outcome["resolve"]["decisions"]["0,0,1,0,4"][0] == "separated"
    assert any(line.startswith("resolve: racing 1 contender") for line in lines)
    assert "Pairing correlation +" in outcome["verdict"]
    # --stage resolve on the finished study: everything is decided, nothing runs.
    again = run_search(_settings(tmp_path, space=space, trials=2, noise_seeds=2,
                                 resolve_seeds=3, stage="resolve"), trial_fn=_seeded,
                       log=lines.append)
    assert (again["trials"]["stage"] == "resolve").sum() == 1


def test_the_oneshot_front_is_queued_once_even_when_queued_before(tmp_path):
    # A waiting trial's `params` are empty, so a second queueing (a resumed search) compared
    # against nothing and queued the front again.
    from rhosearch.core.space import load_search_space
    from rhosearch.drivers.search import enqueue_front

    space = load_search_space("exmobilevit_xxs")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}",
                                directions=["maximize", "minimize"])
    front = list(space.configs())[:3]
    assert enqueue_front(study, space, front) == 3
    assert enqueue_front(study, space, front) == 0
    assert enqueue_front(study, space, [*front, front[0]]) == 0
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 3


def test_latency_objective_prices_every_trial_and_the_report_draws_it(tmp_path, shared_ray):
    from rhosearch.deploy.latency import LatencySettings, LatencyTable
    from rhosearch.report.html import write_report

    # Real onnxruntime timings, kept small: the XXS models at 64 px, a second each.
    latency = LatencySettings(resolution=64, max_seconds=1.0)
    lines = []
    outcome = run_search(_settings(tmp_path, trials=3, noise_seeds=1, latency_objective=True,
                                   latency=latency), trial_fn=_instant, log=lines.append)
    timed = [line for line in lines if line.startswith("latency: timing")]
    assert len(timed) == 6, lines  # the space's design set: its model's 4 terms + 2 rows
    table = LatencyTable.for_folder(tmp_path)
    assert len(table.rows(latency, backbone="mobilevit_xxs")) == 6
    trials = outcome["trials"]
    priced = trials[trials["stage"].isin(["proxy", "noise"]) & (trials["state"] == "COMPLETE")]
    assert len(priced) == 4
    assert priced[["overhead_ms", "overhead_ms_lo", "overhead_ms_hi"]].notna().all().all()
    assert set(priced["latency_source"]) <= {"table", "model"}
    assert (priced["overhead_ms_lo"] <= priced["overhead_ms"]).all()
    storage = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    study = optuna.load_study(study_name="t", storage=storage)
    assert study.metric_names == ["top1", "overhead_params", "overhead_ms"]
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert trial.values[2] == trial.user_attrs["overhead_ms"]
    assert "model fitted on 6 measured configurations" in study.user_attrs["latency"]
    csv_columns = (tmp_path / "t" / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"overhead_ms", "overhead_ms_lo", "overhead_ms_hi", "latency_source"} <= set(
        csv_columns)
    page = write_report("t", reports_dir=tmp_path).read_text()
    assert 'id="latency-plot"' in page and "latency overhead ms" in page
    # Resumed: the table answers, nothing is timed again.
    lines.clear()
    run_search(_settings(tmp_path, trials=4, noise_seeds=1, latency_objective=True,
                         latency=latency, resume=True), trial_fn=_instant, log=lines.append)
    assert not any(line.startswith("latency: timing") for line in lines), lines


def test_an_interrupted_trial_is_queued_again_and_counted_by_its_number(tmp_path):
    from rhosearch.core.space import load_search_space
    from rhosearch.drivers.search_study import fail_interrupted, reruns_waiting
    from rhosearch.record.study import params_of, space_distributions

    space = load_search_space("exmobilevit_xxs")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}",
                                directions=["maximize", "minimize"])
    config = next(iter(space.configs()))
    study.enqueue_trial(params_of(space, config), user_attrs={"source": "paper"})
    trial = study.ask(space_distributions(space))  # RUNNING, as a killed driver leaves it
    trial.set_user_attr("stage", "proxy")
    assert fail_interrupted(study, space) == 1
    [waiting] = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.user_attrs["rerun_of"] == trial.number
    assert reruns_waiting(study) == 1
    # What is counted is the number, not the sentence shown beside it.
    study.enqueue_trial(params_of(space, config), user_attrs={"source": "rerun of #9 (typed)"})
    assert reruns_waiting(study) == 1


def test_the_expected_time_scales_the_measured_default_search_by_its_work():
    recipe = load_recipe("proxy")
    default = SearchSettings(study="t", space=_space(), budget=Budget(cpus=2), stage="all")
    seconds = expected_seconds(default, recipe, 1437)  # digits' training split
    no_head = sum(expected_seconds(dataclasses.replace(default, stage=stage), recipe, 1437)
                  for stage in ("oneshot", "proxy", "resolve"))
    # The measured search (stop 26): 415 s outside the heads for a supernet and 17 runs; the
    # estimate is an upper bound, so the resolve stage counts at its cap (2 x 2 runs, not 2).
    assert no_head == pytest.approx(415 * (4 * 69 + 19 * 69 / 2) / (4 * 69 + 17 * 69 / 2),
                                    rel=0.01)
    # The heads: 162 s measured for 3 trunks x 144 heads x 3 epochs (digits' head recipe).
    heads = len(list(default.space.configs()))
    assert seconds - no_head == pytest.approx(162 * heads / 144 * default.noise_seeds / 3,
                                              rel=0.01)
    assert expected_seconds(dataclasses.replace(default, resolve_seeds=0), recipe,
                            1437) < seconds  # the resolve stage at its most
    # Twice the CPUs: half the time for the same work (4 CPUs race 4 contenders by default).
    assert expected_seconds(dataclasses.replace(default, budget=Budget(cpus=4),
                                                resolve_contenders=2), recipe,
                            1437) == pytest.approx(seconds / 2, rel=0.01)
    proxy_only = expected_seconds(dataclasses.replace(default, stage="proxy"), recipe, 1437)
    assert 0 < proxy_only < seconds
    assert expected_seconds(dataclasses.replace(default, budget=Budget(gpus=1)), recipe,
                            1437) is None
