"""Scale-out: warm Ray workers, the job store, the wall-time budget, and a real 2-node cluster."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna
import pytest
import torch
from ray.cluster_utils import Cluster

from rhosearch.cli import main
from rhosearch.core.space import RhoConfig, parse_search_space
from rhosearch.drivers.search import SearchSettings, run_search
from rhosearch.errors import RhoSearchError
from rhosearch.execution.jobstore import JobStore
from rhosearch.execution.resources import Budget
from rhosearch.execution.searcher import StudySearcher
from rhosearch.training.train import load_recipe, train_config

TINY = {"epochs": 1, "subset": 96, "val_subset": 64, "batch_size": 32, "resolution": 32}
SPACE = {"backbone": "mobilevit_xxs", "rho": {"rho_3": [0, 1/3, 1], "rho_4": [0, 1/4, 1],
                                                "rho_5": [3, 4]}}

def _trials(folder: Path, study: str, stage: str = "") -> list[optuna.trial.FrozenTrial]:
    """The trials of a study (or of one of its companion studies, e.g. `::noise`)."""
    storage = f"sqlite:///{folder / study / 'study.db'}"
    return optuna.load_study(study_name=study + stage, storage=storage).get_trials(deepcopy=False)


# --- the job store -----------------------------------------------------------------------------


def test_store_round_trip_skips_checkpoints_and_half_written_files(tmp_path):
    store = JobStore(str(tmp_path / "store"))
    work = tmp_path / "work"
    (work / "shards").mkdir(parents=True)
    for name, text in [("metrics.jsonl", "{}\n"), ("checkpoint.pt", "ckpt"),
                       ("result.json.tmp", "half"), ("shards/rank1.json", "[1]")]:
        (work / name).write_text(text)
    store.push(work, "trials/0001_x")
    assert not (tmp_path / "store" / "trials/0001_x/result.json.tmp").exists()
    pulled = store.pull("trials/0001_x", tmp_path / "driver", skip=("checkpoint.pt*",))
    assert sorted(p.relative_to(tmp_path / "driver").as_posix() for p in pulled) == [
        "metrics.jsonl", "shards/rank1.json"]
    assert store.pull("trials/none", tmp_path / "driver") == []
    with store.workdir("trials/0001_x", resume=True) as scratch:  # a resume gets the checkpoint
        assert (scratch / "checkpoint.pt").read_text() == "ckpt"
        assert str(scratch).startswith(os.path.realpath(os.environ.get("TMPDIR", "/tmp")))
    assert not scratch.exists()
    store.drop("trials/0001_x")
    assert not (tmp_path / "store" / "trials/0001_x/checkpoint.pt").exists()


def test_unwritable_storage_path_is_one_line(tmp_path):
    store = JobStore.for_study("s", reports_dir=tmp_path, storage_path="/proc/rhosearch")
    with pytest.raises(RhoSearchError, match="--storage-path") as info:
        store.check_writable()
    assert "\n" not in str(info.value)


# --- the wall-time budget ----------------------------------------------------------------------


def test_no_trial_starts_once_the_wall_time_is_spent(tmp_path):
    settings = SearchSettings(study="w", space=parse_search_space(SPACE), trials=4,
                              budget=Budget(cpus=1, wall_s=60), reports_dir=tmp_path,
                              noise_seeds=2)
    study = optuna.create_study(directions=["maximize", "minimize"])
    searcher = StudySearcher(study, settings, epochs=1, deadline=time.time() - 1)
    assert searcher.suggest("t1") == StudySearcher.FINISHED
    assert "wall-time budget (1 CPU, 0.0166667 h) spent" in searcher.events[0]
    assert searcher.total == 0 and not study.trials  # nothing asked, nothing recorded
    running = StudySearcher(study, settings, epochs=1, deadline=time.time() + 60)
    assert running.suggest("t1")["stage"] == "noise"  # before the deadline trials start


# --- warm workers ------------------------------------------------------------------------------


def test_warm_workers_run_trial_after_trial_without_leaking(tmp_path):
    """One 1-CPU worker runs every trial (imports and data once); a trial it runs after others
    trains exactly as the same trial alone in a fresh process would."""
    settings = SearchSettings(study="warm", space=parse_search_space(SPACE), trials=3,
                              budget=Budget(cpus=1), recipe_overrides=dict(TINY),
                              reports_dir=tmp_path, noise_seeds=0, stage="proxy",
                              keep_checkpoints=True)
    run_search(settings, log=lambda line: None)
    assert len(list((tmp_path / "warm" / "trials").glob("*/checkpoint.pt"))) == 3  # kept
    trained = sorted((t for t in _trials(tmp_path, "warm") if t.user_attrs.get("trained")),
                     key=lambda t: t.user_attrs["started_at"])
    assert len(trained) == 3 and all(t.user_attrs["status"] == "ok" for t in trained)
    assert len({t.user_attrs["worker_pid"] for t in trained}) == 1  # one warm worker
    last = trained[-1].user_attrs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU trial ran
    try:
        train_config(RhoConfig.parse(last["rho"], backbone="mobilevit_xxs"),
                             recipe=load_recipe("proxy", dict(TINY)), out_dir=tmp_path / "alone",
                             seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    ran = json.loads(next((tmp_path / "warm" / "trials").glob(
        f"{trained[-1].number:04d}_*/metrics.jsonl")).read_text().splitlines()[-1])
    same = ("loss", "train_top1", "top1", "top5")
    alone = json.loads((tmp_path / "alone" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {k: ran[k] for k in same} == {k: alone[k] for k in same}


# --- a real 2-node cluster ---------------------------------------------------------------------


@pytest.fixture
def two_nodes():
    """A Ray cluster on this machine: the driver's head node with no CPU, so every job runs on
    one of two other raylets of 1 CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_search_and_train_best_on_two_nodes_reach_the_driver(tmp_path, two_nodes,
                                                             xxs_space_yaml):
    store = tmp_path / "store"
    # Trials of a few seconds: shorter ones all end up on the first warm worker.
    recipe = [f"--set={key}={value}" for key, value in {**TINY, "subset": 960}.items()
              if key != "epochs"]
    common = ["--address", two_nodes.address, "--budget", "2cpus", "--study", "c",
              "--reports-dir", str(tmp_path / "reports"), "--storage-path", str(store),
              "--epochs", "1", *recipe]
    assert main(["search", "--space", str(xxs_space_yaml), "--trials", "4",
                 "--noise-seeds", "1", *common]) == 0
    reports = tmp_path / "reports" / "c"
    trained = [t for t in _trials(tmp_path / "reports", "c") if t.user_attrs.get("trained")]
    noise = _trials(tmp_path / "reports", "c", "::noise")
    nodes = {t.user_attrs["node"] for t in trained + noise}
    assert len(nodes) == 2 and two_nodes.head_node.node_id not in nodes  # on both, not here
    # Every trial's files reached the driver's folder through the store; no checkpoints.
    assert len(list((reports / "trials").glob("*/metrics.jsonl"))) == len(trained) == 4
    assert len(list((reports / "noise").glob("*/result.json"))) == 1
    assert (reports / "supernet" / "scores.csv").is_file()
    assert not list(reports.rglob("checkpoint.pt*")) and not list(store.rglob("checkpoint.pt*"))

    assert main(["train-best", "--pick", "best", "--seeds", "1", *common, "--set=ema=false",
                 "--set=mss=false"]) == 0
    weights = list((reports / "finalists").glob("*/model.safetensors"))
    assert len(weights) == 2  # the best and the baseline control
    assert not list(reports.rglob("checkpoint.pt*"))  # checkpoints stay in the store, for resume
    assert len(list((store / "c" / "jobs" / "finalists").glob("*/checkpoint.pt"))) == 2


def test_a_cluster_without_the_budgets_gpus_is_refused(tmp_path, two_nodes, capsys):
    code = main(["search", "--address", two_nodes.address, "--budget", "1gpu", "--study", "g",
                 "--reports-dir", str(tmp_path), "--trials", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "1 GPUs but the cluster" in err and "\n" not in err
    db = tmp_path / "g" / "study.db"  # the lease's record may exist; the study does not
    assert not db.exists() or "g" not in optuna.get_all_study_names(f"sqlite:///{db}")
