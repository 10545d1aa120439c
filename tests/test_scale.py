"""Scale-out: warm Ray workers, the job store, the wall-time budget, and a real 2-node cluster."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import ray
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
                 "--noise-seeds", "1", "--resolve-seeds", "0", *common]) == 0
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
    assert not list(reports.rglob("checkpoint.pt*"))  # a stopped run's stays in the store
    # A finished finalist's checkpoint leaves the store too (nothing resumes a finished run).
    assert not list((store / "c" / "jobs" / "finalists").glob("*/checkpoint.pt"))


def test_a_cluster_without_the_budgets_gpus_is_refused(tmp_path, two_nodes, capsys):
    code = main(["search", "--address", two_nodes.address, "--budget", "1gpu", "--study", "g",
                 "--reports-dir", str(tmp_path), "--trials", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "1 GPUs but the cluster" in err and "\n" not in err
    assert not (tmp_path / "g").exists()  # refused as Ray was joined: before the lease


# --- a cluster node that does not see the driver's folder --------------------------------------


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-Urm", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory) -> Iterator[dict]:
    """A head with no CPU (where the driver runs) and one 1-CPU node that cannot see the
    driver's `reports/` folder, as a second machine with its own disk would not.

    On one machine every node shares the disk, so the node is started (`ray start --block`)
    in a mount namespace of its own (`unshare -Urm`) in which another, empty folder is
    bind-mounted over the driver's `reports/`: its Ray workers find nothing the driver writes
    there, and whatever they write there lands in `worker_disk/`, which the driver never reads.
    Everything else (the network, /tmp/ray, the object store) is shared as between machines.
    """
    if not _namespaces_work():
        pytest.skip("unshare -Urm (a user and mount namespace) is not permitted here")
    root = tmp_path_factory.mktemp("blind")
    reports, worker_disk = root / "reports", root / "worker_disk"
    reports.mkdir()
    worker_disk.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    ray_cli = Path(sys.executable).parent / "ray"
    command = (f"mount --bind {shlex.quote(str(worker_disk))} {shlex.quote(str(reports))} && "
               f"exec {shlex.quote(str(ray_cli))} start --address={cluster.address} "
               "--num-cpus=1 --block --disable-usage-stats")
    log = (root / "node.log").open("w")
    node = subprocess.Popen(["unshare", "-Urm", "sh", "-c", command], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.time() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert node.poll() is None and time.time() < deadline, (
                root / "node.log").read_text()[-2000:]
            time.sleep(0.5)
        blind = next(n["NodeID"] for n in ray.nodes()
                     if n["Alive"] and n["NodeID"] != cluster.head_node.node_id)
        ray.shutdown()
        yield {"address": cluster.address, "reports": reports, "worker_disk": worker_disk,
               "node": blind, "root": root}
    finally:
        ray.shutdown()
        os.killpg(node.pid, signal.SIGTERM)  # the node's own process group, started above
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        log.close()
        cluster.shutdown()


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_a_search_on_a_node_without_the_store_is_refused_before_any_work(
        blind_cluster, xxs_space_yaml, capsys):
    """`search --stage all` without --storage-path: before, the supernet trained on the blind
    node and the driver then died on a missing scores.csv; now one line, exit 2, nothing made."""
    reports = blind_cluster["reports"]
    started = time.time()
    code = main(["search", "--address", blind_cluster["address"], "--budget", "2cpus",
                 "--trials", "2", "--stage", "all", "--study", "c", "--space",
                 str(xxs_space_yaml), "--reports-dir", str(reports), "--epochs", "1"])
    wall = time.time() - started
    out, err = capsys.readouterr()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"node {blind_cluster['node'][:8]}" in err and "not found there" in err
    assert "--storage-path /shared/path" in err and "s3://" in err
    assert "one-shot" not in out  # no supernet started
    assert _all_files(reports) == [] and _all_files(blind_cluster["worker_disk"]) == []
    assert wall < 30, f"took {wall:.0f} s to refuse"


def test_train_best_on_a_node_without_the_store_is_refused(blind_cluster, capsys):
    reports = blind_cluster["reports"]
    space = blind_cluster["root"] / "space.yaml"
    space.write_text("backbone: mobilevit_xxs\nrho:\n  rho_3: [0, 1/3]\n  rho_5: [3, 4]\n")
    url = f"sqlite:///{reports / 'hand' / 'study.db'}"
    (reports / "hand").mkdir()
    study = optuna.create_study(study_name="hand", storage=url,
                                directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["top1", "overhead_params"])
    study.set_user_attr("space", str(space))
    study.set_user_attr("data", "digits")
    choices = optuna.distributions.CategoricalDistribution
    study.add_trial(optuna.trial.create_trial(
        values=[70.0, -500], params={"rho_3": "1/3", "rho_5": "3"},
        distributions={"rho_3": choices(["0", "1/3"]), "rho_5": choices(["3", "4"])},
        user_attrs=dict(stage="proxy", backbone="mobilevit_xxs", rho="0,0,1/3,0,3",
                        top1=70.0, overhead_params=-500, params=1e6 - 500)))
    before = _all_files(reports)
    code = main(["train-best", "--study", "hand", "--address", blind_cluster["address"],
                 "--budget", "2cpus", "--reports-dir", str(reports), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"node {blind_cluster['node'][:8]}" in err and "--storage-path" in err
    assert _all_files(reports) == before  # no finalists/, no store
    assert optuna.get_all_study_names(url) == ["hand"]  # its lease released
    assert _all_files(blind_cluster["worker_disk"]) == []


def test_a_store_every_node_sees_passes_the_check(blind_cluster):
    """The same blind node accepts a folder outside the hidden one: the check tells stores
    apart, it does not refuse a cluster as such."""
    shared = blind_cluster["root"] / "shared"
    ray.init(address=blind_cluster["address"], log_to_driver=False)
    try:
        JobStore.for_study("s", reports_dir=blind_cluster["reports"],
                           storage_path=str(shared)).check_shared()
        assert not shared.exists()  # the folders it made for its token removed again
        with pytest.raises(RhoSearchError, match="not found there"):
            JobStore.for_study("s", reports_dir=blind_cluster["reports"]).check_shared()
    finally:
        ray.shutdown()


def test_a_trial_no_node_holds_is_refused_not_waited_for(blind_cluster, xxs_space_yaml, capsys):
    """A 2-CPU trial on a cluster whose only job node has 1 CPU: Tune would wait for it for ever
    (it only warns every minute); refused as the cluster is joined instead."""
    reports = blind_cluster["root"] / "fits"
    code = main(["search", "--address", blind_cluster["address"], "--budget", "2cpus",
                 "--cpus-per-trial", "2", "--trials", "1", "--stage", "proxy", "--study", "f",
                 "--space", str(xxs_space_yaml), "--reports-dir", str(reports),
                 "--storage-path", str(blind_cluster["root"] / "shared"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "asks for 2 CPU but no Ray node holds that (the largest: 1 CPU" in err
    assert not reports.exists() or _all_files(reports) == []
