"""Latency: the median's interval, the sequential rule under no difference, interleaving, the
table's key and cache, the latency model on synthetic measurements, a real ONNX timing, and
`rhosearch latency`'s bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom

from rhosearch.cli import main
from rhosearch.core.space import RhoConfig, baseline_config, get_preset, load_search_space
from rhosearch.deploy.latency import (
    KEY_COLUMNS,
    LatencySettings,
    LatencyTable,
    measure_latency,
    median_interval,
    paired_timing,
    sequential_decision,
    sequential_looks,
)
from rhosearch.deploy.latency_model import LatencyModel
from rhosearch.errors import RhoSearchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_median_interval_is_the_order_statistics_binomial_gives():
    values = np.arange(1.0, 21.0)  # n = 20: ranks 6 and 15 cover the median at >= 95 %
    assert median_interval(values) == (10.5, 6.0, 15.0)
    assert 1 - 2 * binom.cdf(5, 20, 0.5) >= 0.95 > 1 - 2 * binom.cdf(6, 20, 0.5)
    median, lo, hi = median_interval([3.0, 1.0, 2.0])  # too few for 95 %: the whole range
    assert (median, lo, hi) == (2.0, 1.0, 3.0)


@pytest.mark.parametrize("noise", ["normal", "laplace", "lognormal_shift"])
def test_the_sequential_rule_says_differs_at_most_5_percent_of_the_time_under_no_difference(
        noise):
    rng = np.random.default_rng(0)
    looks = sequential_looks(20, 200, 10)
    streams = 2000
    if noise == "normal":
        draws = rng.normal(size=(streams, 200))
    elif noise == "laplace":
        draws = rng.laplace(size=(streams, 200))
    else:  # heavy right tail on both sides of the pair: differences still symmetric
        draws = rng.lognormal(size=(streams, 200)) - rng.lognormal(size=(streams, 200))
    differs = 0
    for stream in draws:
        _, _, lo, hi = sequential_decision(stream, looks)
        differs += lo > 0 or hi < 0
    assert differs / streams <= 0.05
    # ... and it is not blind: a shift of half a noise unit is found in most streams.
    found = sum(
        sequential_decision(stream + 0.5, looks)[2] > 0 for stream in draws[:200])
    assert found / 200 > 0.8


def test_paired_timing_alternates_baseline_and_candidate_and_discards_the_warmup():
    calls: list[str] = []

    def baseline():
        calls.append("A")
        time.sleep(0.001)

    def candidate():
        calls.append("B")
        time.sleep(0.025)

    timing = paired_timing(baseline, candidate, warmup=3, min_rounds=20, max_rounds=60,
                           step=10)
    assert calls[:6] == ["A", "B"] * 3  # warm-up: not timed
    assert list(timing.order) == calls[6:]
    assert timing.order[:8] == tuple("ABBAABBA")  # neither is always first
    assert len(timing.baseline_ms) == len(timing.candidate_ms) == timing.rounds
    summary = timing.summary()
    # 24 ms apart: clear at the first look or soon after, even on a loaded machine.
    assert summary["verdict"] == "slower" and summary["rounds"] <= 40
    assert summary["overhead_lo"] > 0 and summary["ratio"] > 1


def _row(config: RhoConfig, key: dict, **values) -> dict:
    return {**key, "name": config.name, "latency_ms": 123.0, "baseline_ms": 120.0,
            "overhead_ms": 3.0, "level": 0.99, "verdict": "slower", "rounds": 20, **values}


def test_the_table_key_separates_machines_threads_and_versions(tmp_path):
    config = get_preset("exmvit-928").config
    key = LatencySettings(threads=1).key(config)
    table = LatencyTable.for_folder(tmp_path)
    table.add(_row(config, key))
    reread = LatencyTable.for_folder(tmp_path)
    assert reread.lookup(key)["latency_ms"] == 123.0
    assert reread.lookup(LatencySettings(threads=2).key(config)) is None
    assert reread.lookup(LatencySettings(batch=4).key(config)) is None
    assert reread.lookup(LatencySettings(clock="cpu").key(config)) is None
    for column, other in (("cpu", "another CPU x64"), ("onnxruntime", "0.0.1"),
                          ("provider", "cuda"), ("resolution", 224), ("rho", "0,0,1,1,4")):
        assert reread.lookup({**key, column: other}) is None, column
    # Rows of another machine are never part of this machine's rows (what the model fits on).
    reread.add(_row(baseline_config(), {**key, "rho": baseline_config().rho_text,
                                         "cpu": "another CPU x64"}))
    assert [r["rho"] for r in reread.rows(LatencySettings(), backbone="mobilevit_s")] == [
        config.rho_text]
    assert set(KEY_COLUMNS) <= set(reread.lookup(key))


def test_two_writers_of_one_table_keep_both_rows(tmp_path):
    # A search and `rhosearch latency` may share reports/latency.csv: each table object was read
    # before the other wrote, and neither's row is lost.
    first, second = LatencyTable.for_folder(tmp_path), LatencyTable.for_folder(tmp_path)
    configs = [get_preset("exmvit-928").config, get_preset("exmvit-576").config]
    first.add(_row(configs[0], LatencySettings().key(configs[0])))
    second.add(_row(configs[1], LatencySettings().key(configs[1])))
    rows = LatencyTable.for_folder(tmp_path).rows(LatencySettings(), backbone="mobilevit_s")
    assert sorted(r["rho"] for r in rows) == sorted(c.rho_text for c in configs)


def test_a_cached_row_is_reused_without_timing(tmp_path):
    config = get_preset("exmvit-928").config
    settings = LatencySettings()
    table = LatencyTable.for_folder(tmp_path)
    table.add(_row(config, settings.key(config)))
    before = (tmp_path / "latency.csv").read_bytes()
    started = time.perf_counter()
    rows = measure_latency([config], table=table, settings=settings,
                           progress=lambda line: pytest.fail(f"timed: {line}"))
    assert time.perf_counter() - started < 1.0  # no export, no session
    assert rows[0]["cached"] == "yes" and rows[0]["latency_ms"] == 123.0
    assert (tmp_path / "latency.csv").read_bytes() == before


def _synthetic_rows(configs, *, trunk, slopes, baseline_ms=100.0):
    return [{"backbone": c.backbone, "rho": c.rho_text, "baseline_ms": baseline_ms,
             "overhead_ms": trunk[c.depth] + sum(s * w for s, w in
                                                 zip(slopes, c.shortcut_channels, strict=True))}
            for c in configs]


def test_the_model_is_exact_on_measurements_of_its_own_form():
    space = load_search_space("exmobilevit_s")
    # rho_5 = 0 on some: two depths, each with a trunk term of its own.
    configs = [*list(space.configs())[::7], RhoConfig.parse("1,1,0"),
               RhoConfig.parse("4/3,5/4,0"), RhoConfig.parse("1/3,1/4,0"), baseline_config()]
    trunk = {4: -20.0, 5: -9.0}
    slopes = (0.0, 0.0, 0.004, 0.01, 0.014)
    rows = _synthetic_rows(configs, trunk=trunk, slopes=slopes)
    model = LatencyModel.fit(rows)
    assert model.rows == len(rows) and model.baseline_ms == 100.0
    for config, row in zip(configs, rows, strict=True):
        assert model.overhead_ms(config) == pytest.approx(row["overhead_ms"], abs=1e-9)
    assert model.per_channel_ms[2:] == pytest.approx(slopes[2:], abs=1e-12)
    assert model.per_channel_ms[:2] == (None, None)  # blocks 1-2 never varied: no term
    unseen = RhoConfig.parse("2/3,3/2,5")
    widths = unseen.shortcut_channels
    assert model.latency_ms(unseen) == pytest.approx(
        100.0 + trunk[5] + sum(s * w for s, w in zip(slopes, widths, strict=True)))
    with pytest.raises(RhoSearchError, match="depth-3"):
        model.overhead_ms(RhoConfig("mobilevit_s", (0, 0, Fraction(1), 0, 0)))
    with pytest.raises(RhoSearchError, match="block 1"):
        model.overhead_ms(RhoConfig("mobilevit_s", (1, 0, 1, 1, 4)))


def test_rhosearch_latency_times_a_tiny_model_for_real_then_reads_it_from_the_table(
        tmp_path, capsys):
    argv = ["latency", "--rho", "0,0,1,1,4", "--backbone", "mobilevit_xxs", "--resolution",
            "64", "--max-seconds", "1", "--reports-dir", str(tmp_path), "--format", "json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first) == 1 and first[0]["cached"] == "no"
    row = first[0]
    assert row["latency_lo"] <= row["latency_ms"] <= row["latency_hi"]
    assert row["overhead_lo"] <= row["overhead_ms"] <= row["overhead_hi"]
    assert row["rounds"] >= 20 and row["verdict"] in ("slower", "faster", "within noise")
    assert row["resolution"] == 64 and row["threads"] == 1 and row["provider"] == "cpu"
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again[0]["cached"] == "yes" and again[0]["latency_ms"] == row["latency_ms"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".latency.csv.lock", "latency.csv"]


@pytest.mark.parametrize("flags, message", [
    (["--threads", "0"], "--threads 0 is outside 1 .. 1024"),
    (["--batch", "-1"], "--batch -1 is outside 1 .. 4096"),
    (["--resolution", "16"], "--resolution 16 is outside 32 .. 4096"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--clock", "cpu", "--threads", "2"], "--threads 1"),
    (["--space", "exmobilevit_s", "--preset", "all"], "--space"),
    (["--max-seconds", "0"], "--max-seconds 0 is outside above 0"),
    (["--reports-dir", "/proc/nosuch"], "cannot write"),
])
def test_bad_latency_input_is_one_line_exit_2_and_nothing_created(tmp_path, capsys, flags,
                                                                  message):
    reports = tmp_path / "reports"
    try:
        code = main(["latency", "--reports-dir", str(reports), *flags])
    except SystemExit as exited:  # argparse's refusals of a flag's value
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not reports.exists()


def test_without_onnxruntime_latency_names_the_extra(tmp_path):
    # An onnxruntime package that fails to import, ahead of the real one: as if the `export`
    # extra were not installed.
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), ROOT])}
    reports = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "rhosearch.cli", "latency", "--preset", "all", "--reports-dir",
         str(reports)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "rhosearch[export]" in done.stderr, done.stderr
    assert not reports.exists()


def test_cuda_without_its_execution_provider_is_skipped_with_one_line(tmp_path, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA: the figures are taken instead")
    assert main(["latency", "--provider", "cuda", "--reports-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "skipped: no CUDA execution provider" in captured.err
    assert not any(tmp_path.iterdir())
