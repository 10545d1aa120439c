"""The head stage in a search: real Ray trunks, the companion study, trials.csv, resume, and
bad input refused before anything is created."""

from __future__ import annotations

import shutil

import pytest

from rhosearch.core.space import parse_search_space
from rhosearch.drivers.search import SearchSettings, run_search
from rhosearch.execution.resources import Budget
from rhosearch.record.study import load_study, stage_study
from rhosearch.stages.head import read_runs

TINY = {"epochs": 1, "subset": 128, "batch_size": 32, "resolution": 32}
SPACE = parse_search_space({"backbone": "mobilevit_xxs",
                            "rho": {"rho_3": [0, "1/3"], "rho_4": [0, "1/4"], "rho_5": [2, 4]}})


def _settings(tmp_path, **kwargs):
    defaults = dict(study="h", space=SPACE, trials=1, budget=Budget(cpus=2), stage="head",
                    recipe_overrides=dict(TINY), reports_dir=tmp_path, progress=False,
                    noise_seeds=1, head_trunks=1, head_seeds=2,
                    head_overrides={"epochs": 1, "batch_size": 32})
    return SearchSettings(**{**defaults, **kwargs})


def test_head_stage_records_every_configuration(tmp_path, shared_ray):
    lines: list[str] = []
    outcome = run_search(_settings(tmp_path), log=lines.append)
    configs = list(SPACE.configs())
    runs = read_runs(tmp_path / "h" / "head" / "runs.jsonl")
    assert len(runs) == len(configs) * 2 * 2  # configurations x trunks x head seeds
    assert {r.trunk for r in runs} == {1, 2}  # the noise seed, then one more trunk
    trials = outcome["trials"]
    head = trials[trials["stage"] == "head"]
    assert sorted(head["rho"]) == sorted(c.rho_text for c in configs)
    assert head["top1"].notna().all() and (head["state"] == "COMPLETE").all()
    assert (head["vs_baseline"] == "baseline control").sum() == 1
    others = head[head["vs_baseline"] != "baseline control"]
    assert others["vs_baseline"].isin(["better", "worse", "within noise"]).all()
    assert others["top1_diff"].notna().all() and others["test"].notna().all()
    study = load_study("h", reports_dir=tmp_path)
    assert len(stage_study(study, "head").get_trials()) == len(configs)
    # The trunks are the noise floor's runs: recorded there, weights kept.
    noise = trials[trials["stage"] == "noise"]
    assert sorted(noise["seed"].astype(int)) == [1, 2]
    assert len(list((tmp_path / "h" / "noise").glob("*/model.safetensors"))) == 2
    # Each trunk's heads ran as a Ray task of their own, and the tasks' copies of the trunks'
    # weights left the job store with them (reports/ keeps one copy of each).
    assert [len(read_runs(tmp_path / "h" / "head" / f"trunk00{t}" / "runs.jsonl"))
            for t in (1, 2)] == [len(configs) * 2] * 2
    assert not list((tmp_path / "h" / "ray").rglob("model.safetensors"))
    assert any(line.startswith("head: trunk 2: ") and " heads in " in line for line in lines)
    assert any(line.startswith("head: ") and "front of" in line for line in lines)
    assert "head" in (tmp_path / "h" / "trials.csv").read_text()

    # Resumed: nothing is trained again.
    again: list[str] = []
    run_search(_settings(tmp_path, resume=True), log=again.append)
    # (The data line says "N training ... images, checked": not a training.)
    assert not [line for line in again if line.startswith(("head: training", "one-shot: training"))
                or " heads in " in line]
    assert len(read_runs(tmp_path / "h" / "head" / "runs.jsonl")) == len(runs)
    assert len(stage_study(study, "head").get_trials()) == len(configs)

    # A third head seed on the same trunks: their weights go back to the store for the tasks,
    # the trunks are not trained again, and only the new heads train.
    more: list[str] = []
    run_search(_settings(tmp_path, resume=True, head_seeds=3), log=more.append)
    assert not [line for line in more if line.startswith("head: training")]
    assert len(read_runs(tmp_path / "h" / "head" / "runs.jsonl")) == len(configs) * 2 * 3
    assert not list((tmp_path / "h" / "ray").rglob("model.safetensors"))

    # A trunk that a stopped search trained but never pulled is taken from the job store, not
    # trained again (its heads would otherwise mix two trunks of one seed).
    pulled = next((tmp_path / "h" / "noise").glob("seed002_*"))
    stored = tmp_path / "h" / "ray" / "jobs" / "noise" / pulled.name
    shutil.copy(pulled / "model.safetensors", stored / "model.safetensors")
    shutil.rmtree(pulled)
    back: list[str] = []
    run_search(_settings(tmp_path, resume=True, head_seeds=3), log=back.append)
    assert not [line for line in back if line.startswith("head: training") or " heads in " in line]
    assert (pulled / "model.safetensors").is_file()
    assert len(read_runs(tmp_path / "h" / "head" / "runs.jsonl")) == len(configs) * 2 * 3


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    from rhosearch.cli import main

    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own refusals
        code = exited.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("flag, value, message", [
    ("--head-seeds", "0", "--head-seeds 0 is outside 1 .. 100"),
    ("--head-trunks", "-1", "--head-trunks -1 is outside 0 .. 100"),
])
def test_bad_head_flags_are_one_line(tmp_path, capsys, flag, value, message):
    code, lines = _cli(["search", "--study", "x", "--reports-dir", str(tmp_path), "--stage",
                        "head", flag, value], capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_head_settings_refused_before_anything(tmp_path):
    from rhosearch.errors import RhoSearchError

    for kwargs, message in [({"head_seeds": 0}, "--head-seeds 0"),
                            ({"head_trunks": -1}, "--head-trunks -1"),
                            ({"noise_seeds": 0, "head_trunks": 0}, "no trunk")]:
        with pytest.raises(RhoSearchError, match=message):
            run_search(_settings(tmp_path, **kwargs), log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_space_tapping_no_block_is_one_line(tmp_path, capsys):
    space = tmp_path / "none.yaml"
    space.write_text("backbone: mobilevit_s\nrho:\n  rho_3: [0]\n  rho_4: [0]\n  rho_5: [0]\n")
    reports = tmp_path / "reports"
    code, lines = _cli(["search", "--study", "x", "--reports-dir", str(reports), "--stage",
                        "head", "--space", str(space)], capsys)
    assert code == 2 and len(lines) == 1 and "no configuration" in lines[0]
    assert not reports.exists()
