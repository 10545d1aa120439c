"""A search survives its trials' failures, and stops on SIGTERM as on Ctrl-C: real Ray, real
training on a tiny ImageFolder, real signals to real drivers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from PIL import Image

from rhosearch.core.space import parse_search_space
from rhosearch.drivers.search import SearchSettings, run_search
from rhosearch.execution.resources import Budget

ROOT = Path(__file__).resolve().parent.parent
TINY = {"epochs": 1, "batch_size": 4, "resolution": 32, "workers": 0}
SPACE = parse_search_space({"backbone": "mobilevit_xxs", "rho": {
    "rho_3": [0, 1], "rho_4": [0, 1], "rho_5": [4]}})


def _image_folder(root: Path, *, broken: str | None = None) -> Path:
    """train/ and val/ with classes a and b of 16x16 images; `broken`: a val/b file that is
    no image."""
    for split, count in (("train", 4), ("val", 2)):
        for label, colour in (("a", (250, 10, 10)), ("b", (10, 10, 250))):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
    if broken:
        (root / "val" / "b" / broken).write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return root


@pytest.mark.parametrize("early_stop", ["none", "asha"])
def test_a_broken_validation_image_fails_every_trial_and_the_search_completes(
        tmp_path, early_stop, shared_ray):
    data = _image_folder(tmp_path / "data", broken="broken.png")
    settings = SearchSettings(
        study="t", space=SPACE, trials=2, budget=Budget(cpus=2), data=str(data),
        recipe_overrides={**TINY, "epochs": 2}, reports_dir=tmp_path, progress=False,
        noise_seeds=0, early_stop=early_stop, stage="proxy")
    outcome = run_search(settings, log=lambda line: None)
    assert not outcome["interrupted"]
    proxy = outcome["trials"][outcome["trials"]["stage"] == "proxy"]
    trained = proxy[proxy["status"] != "not run"]
    assert len(trained) == 2 and (trained["state"] == "FAIL").all()
    assert trained["reason"].str.contains("broken.png").all(), trained["reason"].tolist()
    assert not trained["reason"].str.contains("\n").any()
    # The proxy validates only its last epoch; ASHA, which decides on each, validates them all.
    assert (trained["epochs_done"] == (0 if early_stop == "asha" else 1)).all()


def test_a_search_whose_every_trial_failed_says_why_and_exits_1(tmp_path, capfd, shared_ray):
    from rhosearch.cli import main

    data = _image_folder(tmp_path / "data", broken="broken.png")
    (tmp_path / "space.yaml").write_text(
        "backbone: mobilevit_xxs\nrho: {rho_3: [0, 1], rho_5: [4]}\n")
    code = main(["search", "--budget", "2cpus", "--trials", "1", "--study", "k",
                 "--space", str(tmp_path / "space.yaml"), "--data", str(data),
                 "--stage", "proxy", "--noise-seeds", "0", "--epochs", "1",
                 "--set", "batch_size=4", "--set", "resolution=32", "--set", "workers=0",
                 "--reports-dir", str(tmp_path)])
    printed = capfd.readouterr()
    assert code == 1, printed.err
    assert "Traceback" not in printed.err and "1 failed" in printed.out
    [why] = [line for line in printed.err.splitlines() if "every proxy trial failed" in line]
    assert "broken.png" in why, printed.err
    assert "A new study created" not in printed.err + printed.out  # Optuna's own log line
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    [trial] = [t for t in study.get_trials() if t.user_attrs.get("trained")]
    assert trial.state.name == "FAIL" and "broken.png" in trial.user_attrs["reason"]


# --- SIGTERM ----------------------------------------------------------------------------------


def _search_command(tmp_path, *extra):
    (tmp_path / "space.yaml").write_text(
        "backbone: mobilevit_xxs\nrho: {rho_3: [0, 1/3, 1], rho_4: [0, 1], rho_5: [3, 4]}\n")
    return [sys.executable, str(ROOT / "cli.py"), "search", "--budget", "2cpus", "--trials", "4",
            "--study", "k", "--space", str(tmp_path / "space.yaml"), "--epochs", "2",
            "--stage", "proxy", "--noise-seeds", "0", "--set", "subset=256",
            "--set", "batch_size=32", "--reports-dir", str(tmp_path), *extra]


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and not condition():
        time.sleep(0.5)


def test_sigterm_stops_a_search_like_ctrl_c(tmp_path):
    driver = subprocess.Popen(_search_command(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    # A trial's first epoch reaches the job store; the driver pulls it only when it ends.
    _wait_for(lambda: list((tmp_path / "k" / "ray" / "jobs").glob("trials/*")), 180)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 143, stderr
    assert "interrupted; resume with: " in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "SIGABRT" not in stderr and "core dumped" not in stderr
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    trials = study.get_trials()
    assert not [t for t in trials if t.state.name == "RUNNING"]
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert interrupted  # marked, and queued to run again as themselves
    queued = {tuple(sorted(t.system_attrs["fixed_params"].items())) for t in trials
              if t.state.name == "WAITING"}
    assert {tuple(sorted(t.params.items())) for t in interrupted if t.params} <= queued


def test_sigterm_stops_train_best_with_a_resume_hint(tmp_path):
    from helpers import hand_study

    study = hand_study(tmp_path, [("0,0,1/3,0,3", -500.0, 70.0)])  # a knee and the control
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train-best", "--study", study, "--budget", "2cpus",
         "--epochs", "3", "--set", "subset=256", "--reports-dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = tmp_path / study / "ray" / "jobs"  # each epoch reaches the store as it ends
    _wait_for(lambda: list(store.glob("finalists/*/metrics.jsonl"))
              or driver.poll() is not None, 240)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 143, stderr
    assert "interrupted; resume with: " in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "SIGABRT" not in stderr
