"""The pure logic of benchmarks/fidelity.py and benchmarks/sampler_table.py (no training)."""

from __future__ import annotations

import importlib.util
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import dominated_area

from rhosearch.core.cost import Cost
from rhosearch.core.space import RhoConfig, SearchSpace, load_presets, load_search_space

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fidelity = _load("fidelity")
sampler_table = _load("sampler_table")


class ChannelCost:
    """A stand-in for CostModel (whose first use traces a model for seconds): overhead is the
    classifier width beyond MobileViT-S's 640 channels, one parameter per channel."""

    def price(self, config: RhoConfig) -> Cost:
        overhead = config.classifier_channels - 640
        return Cost(params=5_000_000 + overhead, macs=0, overhead_params=overhead,
                    overhead_pct=overhead / 50_000)


# --- fidelity ---------------------------------------------------------------------------------


def test_seed_spread_by_hand():
    stds, pooled = fidelity.seed_spread({"a": [70.0, 72.0], "b": [80.0, 81.0, 82.0]})
    assert stds == pytest.approx({"a": math.sqrt(2), "b": 1.0})
    # Pooled variance: (1 dof x 2 + 2 dof x 1) / 3 dof.
    assert pooled == pytest.approx(math.sqrt(4 / 3))


def test_rung_pairs_take_ceil_half_epoch():
    records = [
        {"kind": "proxy", "epochs": 3, "top1_by_epoch": [50.0, 60.0, 70.0]},
        {"kind": "proxy", "epochs": 3, "top1_by_epoch": [55.0, 58.0, 71.0]},
        {"kind": "proxy", "epochs": 3, "top1_by_epoch": [40.0]},  # unfinished: left out
        {"kind": "reference", "epochs": 9, "top1_by_epoch": list(range(9))},
    ]
    assert fidelity.rung_pairs(records, "proxy") == (2, [60.0, 58.0], [70.0, 71.0])
    assert fidelity.rung_pairs(records, "reference") == (5, [4], [8])


def test_by_config_orders_seeds_and_drops_incomplete():
    records = [{"kind": "proxy", "rho": "r1", "seed": 1, "top1": 2.0},
               {"kind": "proxy", "rho": "r1", "seed": 0, "top1": 1.0},
               {"kind": "proxy", "rho": "r2", "seed": 0, "top1": 3.0},
               {"kind": "reference", "rho": "r2", "seed": 0, "top1": 9.0}]
    assert fidelity.by_config(records, "proxy", 2) == {"r1": [1.0, 2.0]}


def test_pick_configs_paper_six_then_narrowest_and_widest():
    configs = fidelity.pick_configs(load_search_space("exmobilevit_s"), 2, cost=ChannelCost())
    paper = [p.config for p in load_presets().values()]
    assert configs[:6] == paper
    assert [c.rho_text for c in configs[6:]] == ["0,0,0,0,2", "0,0,2,3/2,5"]
    assert len(set(configs)) == len(configs) == 8


# --- sampler_table ----------------------------------------------------------------------------


def test_hypervolume_by_hand_and_by_brute_force():
    points = [(80.0, 10.0), (70.0, 5.0), (60.0, 20.0)]  # the third is dominated
    reference = sampler_table.Reference(50.0, 30.0)
    # x in [5, 10): height 70 - 50; [10, 30): height 80 - 50.
    assert sampler_table.hypervolume(points, reference) == pytest.approx(5 * 20 + 20 * 30)
    rng = np.random.default_rng(0)
    many = [(float(t), float(x)) for t, x in zip(rng.uniform(50, 99, 30),
                                                 rng.uniform(-100, 300, 30), strict=True)]
    assert sampler_table.hypervolume(many, sampler_table.Reference(40.0, 250.0)) == (
        pytest.approx(dominated_area(many, (40.0, 250.0))))


def _tiny_space() -> SearchSpace:
    return SearchSpace(backbone="mobilevit_s",
                       choices=((Fraction(0),), (Fraction(0),), (Fraction(0), Fraction(1)),
                                (Fraction(0), Fraction(1)), (Fraction(2), Fraction(4))))


def _tiny_table(space: SearchSpace) -> pd.DataFrame:
    configs = list(space.configs())
    table = sampler_table.price_table(
        space, {c.rho_text: 50.0 + c.classifier_channels / 100 for c in configs},
        cost=ChannelCost())
    table.loc[table["rho"] == "0,0,1,1,4", "feasible"] = False
    return table


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_table_search_counts_distinct_feasible_configs(sampler, monkeypatch):
    space = _tiny_space()
    table = _tiny_table(space)  # 8 configurations, 7 feasible
    points = sampler_table.table_search(table, space, sampler, 5, seed=0)
    assert len(points) == 5 and len(set(points)) == 5
    feasible = set(zip(table.loc[table["feasible"], "top1"],
                       table.loc[table["feasible"], "overhead_params"], strict=True))
    assert set(points) <= feasible
    # Asking for more than the space holds stops after the driver's run of idle asks.
    monkeypatch.setattr(sampler_table, "MAX_ASKS", 30)
    assert len(sampler_table.table_search(table, space, sampler, 20, seed=0)) == 7


def test_summarize_ratio_to_random_and_verdicts():
    runs = pd.DataFrame({
        "trials": [12] * 6,
        "sampler": ["random"] * 3 + ["tpe"] * 3,
        "seed": [0, 1, 2] * 2,
        "hypervolume": [40.0, 50.0, 60.0, 80.0, 90.0, 100.0],
    })
    summary = sampler_table.summarize(runs, best_volume=100.0).set_index("sampler")
    assert summary.loc["random", "mean"] == pytest.approx(0.5)
    assert summary.loc["tpe", "std"] == pytest.approx(0.1)
    assert summary.loc["tpe", "vs_random"] == pytest.approx(1.8)
    (line,) = sampler_table.verdicts(summary.reset_index())
    assert line.startswith(" 12 trials: best tpe (0.900 +- 0.100)")
    assert "lead over random +0.400, beyond the seed std (0.100)" in line


def test_run_searches_reuses_cached_rows(tmp_path):
    space = _tiny_space()
    path = tmp_path / "runs.csv"
    pd.DataFrame({"sampler": ["random", "random", "tpe"], "trials": [4, 4, 4], "seed": [0, 1, 0],
                  "found": [4, 4, 4], "hypervolume": [1.0, 2.0, 3.0],
                  "seconds": [0.1] * 3}).to_csv(path, index=False)
    runs = sampler_table.run_searches(_tiny_table(space), space, [("random", 4, 1),
                                                                  ("tpe", 4, 0)], path, workers=1)
    assert sorted(runs["hypervolume"]) == [2.0, 3.0]  # nothing searched, the unwanted row left


def test_data_path_times_the_samplers_work_per_step():
    data_path = _load("data_path")
    cost = data_path.host_cost_per_step(10_000, batch=128, resolution=256, steps=5)
    assert cost["steps_per_epoch"] == len(data_path.VariableBatchSampler(
        10_000, base_resolution=256, base_batch_size=128,
        resolutions=data_path.mss_resolutions(256)))
    assert 0 < cost["per_step_s"] <= cost["amortized_s"] < 0.5


def test_calibration_benchmark_ends_with_one_line_per_rule(capsys):
    """A short run of benchmarks/calibration.py: its closing lines' exact form (the rates
    themselves are the benchmark's, at 2,000 searches; tests/test_stats.py checks the null)."""
    import re

    calibration = _load("calibration")
    assert calibration.main(["--searches", "60"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = (r"calibration (before|after): per-trial FP \d+\.\d %, per-search FP \d+\.\d %, "
               r"power\(\+3 pts\) \d+\.\d %")
    assert [re.fullmatch(pattern, line).group(1) for line in lines[-2:]] == ["before", "after"]


def test_head_agreement_reads_a_searchs_heads(tmp_path, monkeypatch, capsys):
    """benchmarks/head_agreement.py: trunks that rank four configurations alike agree (tau = +1),
    and the paired sd is that of the differences from the baseline's head on the same trunk."""
    head = tmp_path / "s" / "head"
    head.mkdir(parents=True)
    rhos = ["0,0,0,0,4", "0,0,0,0,2", "0,0,1/3,0,2", "0,0,2,0,2"]
    lines = [pd.DataFrame([{"trunk": t, "head_seed": 0, "rho": rho, "top1": 80 + i + t / 10,
                            "n_val": 400} for i, rho in enumerate(rhos)]) for t in range(4)]
    pd.concat(lines).to_json(head / "runs.jsonl", orient="records", lines=True)
    monkeypatch.setattr(sys, "argv", ["head_agreement", "--study", "s", "--reports-dir",
                                      str(tmp_path)])
    _load("head_agreement").main()
    printed = capsys.readouterr().out
    assert "4 configurations on every one of 4 trunks" in printed
    assert "trunks [0, 2] vs [1, 3]: tau = +1.00" in printed
    assert "pooled sd 0.00 pts" in printed and "mean over configurations +2.00 pts" in printed
