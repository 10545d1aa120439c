"""What a configuration costs in milliseconds: ONNX Runtime timings, a table, a fitted model.

    rhosearch latency --preset all --threads 1
    table = LatencyTable.for_folder("reports")             # reports/latency.csv
    rows = measure_latency(configs, table=table, settings=LatencySettings(threads=1))

Why paired: on a shared machine a configuration's absolute latency moves with whatever else
runs (tens of percent over a minute), far more than one ExShortcut costs. So every
configuration is timed against the baseline MobileViT in the same process, interleaved run by
run (A B B A A B ...: a drift hits both equally, and neither is always first), and what is
reported is the median of the per-round differences and ratios, with an order-statistic
interval of that median (distribution-free: nothing is assumed about timing noise). Warm-up
runs (allocation, kernel selection) are discarded.

How long: rounds are added in steps until the interval of the difference excludes zero (the
difference is then larger than its noise) or a cap on rounds and seconds is reached, and then
the verdict is "within noise". Looking at the interval after every step would make a plain
95 % interval exclude zero too often under no difference (optional stopping), so each look
uses level 1 - 0.05 / looks (Bonferroni over the planned looks): the interval printed holds
at >= 95 % whenever the run stopped. `tests/test_latency.py` simulates the rule under no
difference.

The table (`reports/latency.csv`) keeps every measurement under the key it depends on:
backbone, rho, resolution, batch, threads, execution provider, CPU model and onnxruntime
version. A row is reused only under the same key, so a search never times a configuration
twice and a table taken on one machine (or another onnxruntime) never prices another.

`latency_model.py` prices any rho from this table without exporting it.
"""

from __future__ import annotations

import csv
import functools
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom

from rhosearch.core.space import RhoConfig, baseline_config
from rhosearch.errors import RhoSearchError

__all__ = [
    "KEY_COLUMNS",
    "LATENCY_FILE",
    "LatencySettings",
    "LatencyTable",
    "PairedTiming",
    "CLOCKS",
    "PROVIDERS",
    "cpu_model",
    "measure_latency",
    "median_interval",
    "onnxruntime_version",
    "paired_timing",
    "sequential_looks",
]

LATENCY_FILE = "latency.csv"
# What a measurement depends on; a table row is reused only when all of these match.
KEY_COLUMNS = ("backbone", "rho", "resolution", "batch", "threads", "provider", "clock", "cpu",
               "onnxruntime")
VALUE_COLUMNS = (
    "name", "latency_ms", "latency_lo", "latency_hi", "baseline_ms", "overhead_ms",
    "overhead_lo", "overhead_hi", "ratio", "ratio_lo", "ratio_hi", "level", "verdict",
    "rounds", "load_1min", "measured_at",
)
COLUMNS = (*KEY_COLUMNS, *VALUE_COLUMNS)
_INTEGER = {"resolution", "batch", "threads", "rounds"}
_FLOAT = {"latency_ms", "latency_lo", "latency_hi", "baseline_ms", "overhead_ms", "overhead_lo",
          "overhead_hi", "ratio", "ratio_lo", "ratio_hi", "level", "load_1min"}
# Execution providers by the short name the CLI takes.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# What one run is timed with (see `paired_timing`).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
ALPHA = 0.05


def _onnxruntime():
    """onnxruntime, or a user error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise RhoSearchError("onnxruntime is not installed; install the export extra: "
                             "pip install 'rhosearch[export]'") from None
    return onnxruntime


def onnxruntime_version() -> str:
    return _onnxruntime().__version__


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`) and its logical core count: the machine part of
    a table key."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} x{os.cpu_count()}"


# ---------------------------------------------------------------------------------------------
# Statistics: the median's interval and the sequential rule.


def median_interval(values: Sequence[float], *, level: float = 1 - ALPHA
                    ) -> tuple[float, float, float]:
    """Median of `values` and its distribution-free interval (order statistics).

    The interval [x_(r), x_(n+1-r)] covers the median with probability 1 - 2 P(B <= r - 1),
    B ~ Binomial(n, 1/2); r is the largest rank that keeps this at least `level`. With too few
    values for any such r the interval is the whole range (and says so by its width).
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    r = _rank(n, level)
    median = float(np.median(x))
    if r == 0:
        return median, float(x[0]), float(x[-1])
    return median, float(x[r - 1]), float(x[n - r])


@functools.cache
def _rank(n: int, level: float) -> int:
    """The order statistic's 1-based rank for `median_interval` (0: none reaches `level`)."""
    r = 0
    while r + 1 <= n // 2 and 2 * binom.cdf(r, n, 0.5) <= 1 - level:
        r += 1
    return r


def sequential_looks(min_rounds: int, max_rounds: int, step: int) -> list[int]:
    """The round counts at which the stopping rule looks at the interval."""
    looks = list(range(min_rounds, max_rounds + 1, step))
    return looks if looks and looks[-1] == max_rounds else [*looks, max_rounds]


def sequential_decision(differences: Sequence[float], looks: Sequence[int]
                        ) -> tuple[int, float, float, float]:
    """Where the rule stops on a stream of per-round differences, and what it reports.

    Returns (rounds used, median, lo, hi) at level 1 - ALPHA / len(looks). A pure function of
    the stream, so it can be simulated under no difference (see the tests).
    """
    level = 1 - ALPHA / len(looks)
    for n in looks:
        if n > len(differences):
            break
        median, lo, hi = median_interval(differences[:n], level=level)
        if lo > 0 or hi < 0:
            return n, median, lo, hi
    n = min(looks[-1], len(differences))
    return (n, *median_interval(differences[:n], level=level))


# ---------------------------------------------------------------------------------------------
# Timing.


@dataclass(frozen=True)
class PairedTiming:
    """A configuration timed against the baseline, round by round (milliseconds)."""

    baseline_ms: tuple[float, ...]
    candidate_ms: tuple[float, ...]
    order: tuple[str, ...]  # "A" (baseline) / "B" (candidate), in the order they ran
    level: float  # the intervals' coverage per look (>= 95 % over all looks together)

    @property
    def rounds(self) -> int:
        return len(self.candidate_ms)

    def summary(self) -> dict[str, Any]:
        base, cand = np.asarray(self.baseline_ms), np.asarray(self.candidate_ms)
        latency = median_interval(cand)
        baseline = median_interval(base)
        overhead = median_interval(cand - base, level=self.level)
        ratio = median_interval(cand / base, level=self.level)
        verdict = ("slower" if overhead[1] > 0 else "faster" if overhead[2] < 0
                   else "within noise")
        return {
            "latency_ms": latency[0], "latency_lo": latency[1], "latency_hi": latency[2],
            "baseline_ms": baseline[0],
            "overhead_ms": overhead[0], "overhead_lo": overhead[1], "overhead_hi": overhead[2],
            "ratio": ratio[0], "ratio_lo": ratio[1], "ratio_hi": ratio[2],
            "level": round(self.level, 5), "verdict": verdict, "rounds": self.rounds,
        }


def paired_timing(
    run_baseline: Callable[[], Any], run_candidate: Callable[[], Any], *, warmup: int = 5,
    min_rounds: int = 20, max_rounds: int = 200, step: int = 10, max_seconds: float = 60.0,
    clock: Callable[[], float] = time.perf_counter,
) -> PairedTiming:
    """Times two callables interleaved (A B, B A, A B, ...) until their difference is clear.

    Args:
        run_baseline, run_candidate: one inference each (e.g. `session.run` bound to a feed).
        warmup: runs of each, interleaved, discarded before timing.
        min_rounds, max_rounds, step: the first look, the cap, and the rounds between looks.
        max_seconds: stop at the next look once this much wall time has gone into the rounds.
        clock: what one run is timed with: `time.perf_counter` (wall: latency) or
            `time.thread_time` (the calling thread's CPU time: compute, without the time a
            loaded machine keeps the process waiting; valid for one intra-op thread only).
    """
    if min_rounds < 6:  # fewer rounds than this give no order-statistic interval at 95 %
        raise ValueError("min_rounds must be at least 6")
    looks = sequential_looks(min_rounds, max_rounds, step)
    level = 1 - ALPHA / len(looks)
    for _ in range(warmup):
        run_baseline()
        run_candidate()
    runs = {"A": run_baseline, "B": run_candidate}
    times: dict[str, list[float]] = {"A": [], "B": []}
    order: list[str] = []
    started = time.perf_counter()
    for n in looks:
        while len(times["B"]) < n:
            for label in ("AB" if len(times["B"]) % 2 == 0 else "BA"):
                start = clock()
                runs[label]()
                times[label].append((clock() - start) * 1e3)
                order.append(label)
        differences = np.subtract(times["B"], times["A"])
        _, lo, hi = median_interval(differences, level=level)
        if lo > 0 or hi < 0 or time.perf_counter() - started >= max_seconds:
            break
    return PairedTiming(tuple(times["A"]), tuple(times["B"]), tuple(order), level)


@dataclass(frozen=True)
class LatencySettings:
    """How configurations are timed: the table key's settings and the rule's limits."""

    resolution: int = 256
    batch: int = 1
    threads: int = 1
    provider: str = "cpu"
    clock: str = "wall"
    warmup: int = 5
    min_rounds: int = 20
    max_rounds: int = 200
    step: int = 10
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise RhoSearchError(f"--threads {self.threads}: give at least 1")
        if self.batch < 1:
            raise RhoSearchError(f"--batch {self.batch}: give at least 1")
        if self.resolution < 32:  # the export's smallest input: 5 halvings leave 1 pixel
            raise RhoSearchError(f"--resolution {self.resolution}: give at least 32")
        if self.provider not in PROVIDERS:
            raise RhoSearchError(f"--provider {self.provider!r}: choose one of: "
                                 f"{', '.join(PROVIDERS)}")
        if self.clock not in CLOCKS:
            raise RhoSearchError(f"--clock {self.clock!r}: choose one of: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and (self.threads != 1 or self.provider != "cpu"):
            raise RhoSearchError("--clock cpu times the calling thread's CPU time: it needs "
                                 "--threads 1 and --provider cpu")

    def key(self, config: RhoConfig) -> dict[str, Any]:
        return {"backbone": config.backbone, "rho": config.rho_text,
                "resolution": self.resolution, "batch": self.batch, "threads": self.threads,
                "provider": self.provider, "clock": self.clock, "cpu": cpu_model(),
                "onnxruntime": onnxruntime_version()}


def provider_available(provider: str) -> bool:
    return PROVIDERS[provider] in _onnxruntime().get_available_providers()


# ---------------------------------------------------------------------------------------------
# The table that outlives a run.


@dataclass
class LatencyTable:
    """Measured rows in a CSV file, looked up by their full key (`KEY_COLUMNS`)."""

    path: Path
    _rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def for_folder(cls, folder: Path | str) -> LatencyTable:
        return cls.read(Path(folder) / LATENCY_FILE)

    @classmethod
    def read(cls, path: Path | str) -> LatencyTable:
        path = Path(path)
        rows = []
        if path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in KEY_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise RhoSearchError(f"{path} is not a latency table (no {', '.join(missing)}"
                                         " column); move it away or give another --reports-dir")
                rows = [_typed(row) for row in reader]
        return cls(path, rows)

    def lookup(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The newest row measured under exactly `key`, or None."""
        wanted = tuple(str(key[c]) for c in KEY_COLUMNS)
        found = [r for r in self._rows if tuple(str(r[c]) for c in KEY_COLUMNS) == wanted]
        return found[-1] if found else None

    def rows(self, settings: LatencySettings, *, backbone: str) -> list[dict[str, Any]]:
        """Rows of one backbone measured under `settings` on this machine and onnxruntime."""
        probe = settings.key(baseline_config(backbone))
        same = [c for c in KEY_COLUMNS if c != "rho"]
        latest: dict[str, dict[str, Any]] = {}
        for row in self._rows:
            if all(str(row[c]) == str(probe[c]) for c in same):
                latest[row["rho"]] = row
        return list(latest.values())

    def add(self, row: dict[str, Any]) -> None:
        """Appends `row` to the file: under a lock, the file's rows as they are now (another
        process may have added some) plus this one, written beside it and moved onto it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._rows = [*LatencyTable.read(self.path)._rows,
                          _typed({c: "" if row.get(c) is None else str(row.get(c))
                                  for c in COLUMNS})]
            handle = tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False,
                                                 prefix=f".{self.path.name}.", newline="")
            with handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(self._rows)
            os.replace(handle.name, self.path)


def _typed(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = dict(row)
    for column, value in row.items():
        if value in ("", None):
            typed[column] = None
        elif column in _INTEGER:
            typed[column] = int(value)
        elif column in _FLOAT:
            typed[column] = float(value)
    return typed


# ---------------------------------------------------------------------------------------------
# Measuring configurations.


def _session(path: Path, settings: LatencySettings):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [PROVIDERS[settings.provider]]
    if settings.provider != "cpu":
        providers.append(PROVIDERS["cpu"])
    session = ort.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] != PROVIDERS[settings.provider]:
        raise RhoSearchError(f"onnxruntime did not start its {PROVIDERS[settings.provider]} "
                             f"(it runs on {session.get_providers()[0]})")
    images = np.random.default_rng(0).random(
        (settings.batch, 3, settings.resolution, settings.resolution), dtype=np.float32)
    feed = {session.get_inputs()[0].name: images}
    return lambda: session.run(None, feed)


def _exported(config: RhoConfig, folder: Path, settings: LatencySettings) -> Path:
    """`config` with random weights, exported to ONNX at the timed size (fixed height and
    width: TorchScript exporter, a few seconds) and checked against PyTorch."""
    from rhosearch.core.model import create_model
    from rhosearch.deploy.export import export_onnx

    model = create_model(config, num_classes=1000).eval()
    path = folder / f"{config.key}.onnx"
    export_onnx(model, path, resolution=settings.resolution, batch_size=1, dynamic_size=False)
    return path


def measure_latency(
    configs: Iterable[RhoConfig], *, table: LatencyTable, settings: LatencySettings,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per configuration: its latency against the baseline of its backbone.

    Rows already in `table` under the same key are returned as they are ("cached": yes);
    the rest are exported, timed interleaved with their baseline, and added to the table.
    """
    configs = list(dict.fromkeys(configs))
    results: list[dict[str, Any]] = []
    baselines: dict[str, Callable[[], Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rhosearch-latency-") as scratch:
        for config in configs:
            key = settings.key(config)
            cached = table.lookup(key)
            if cached is not None:
                results.append({**cached, "name": config.name, "cached": "yes"})
                continue
            if progress:
                progress(f"timing {config.name} [{config.rho_text}] against "
                         f"{baseline_config(config.backbone).name}")
            if config.backbone not in baselines:
                baselines[config.backbone] = _session(
                    _exported(baseline_config(config.backbone), Path(scratch), settings),
                    settings)
            baseline = baselines[config.backbone]
            candidate = baseline if config.is_baseline else _session(
                _exported(config, Path(scratch), settings), settings)
            timing = paired_timing(
                baseline, candidate, warmup=settings.warmup, min_rounds=settings.min_rounds,
                max_rounds=settings.max_rounds, step=settings.step,
                max_seconds=settings.max_seconds, clock=CLOCKS[settings.clock])
            row = {**key, "name": config.name, **timing.summary(),
                   "load_1min": round(os.getloadavg()[0], 2),
                   "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            table.add(row)
            results.append({**row, "cached": "no"})
    return results


# ---------------------------------------------------------------------------------------------
# The command.

SHOWN = ["name", "rho", "latency_ms", "latency_lo", "latency_hi", "overhead_ms", "overhead_lo",
         "overhead_hi", "ratio", "ratio_lo", "ratio_hi", "verdict", "rounds", "cached"]


def latency_report(
    configs: Sequence[RhoConfig], *, providers: Sequence[str] = ("cpu",), resolution: int = 256,
    batch: int = 1, threads: int = 1, clock: str = "wall", max_seconds: float = 30.0,
    reports_dir: Path | str = "reports", fmt: str = "table",
) -> int:
    """`rhosearch latency`: measures (or reads from the table) and prints; returns the exit
    code. A provider onnxruntime does not have here is skipped with one line on stderr."""
    import sys

    import pandas as pd

    from rhosearch.output import print_frame

    all_settings = [LatencySettings(resolution=resolution, batch=batch, threads=threads,
                                    provider=p, clock=clock, max_seconds=max_seconds)
                    for p in providers]
    table = LatencyTable.for_folder(reports_dir)
    ort = _onnxruntime()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for settings in all_settings:
        if not provider_available(settings.provider):
            print(f"rhosearch latency: skipped: no {settings.provider.upper()} execution "
                  f"provider in onnxruntime {ort.__version__} (it has: "
                  f"{', '.join(ort.get_available_providers())})", file=sys.stderr)
            continue
        rows = measure_latency(configs, table=table, settings=settings, progress=progress)
        frame = pd.DataFrame(rows)
        # For people: the main columns, ms to 0.01, ratios to 0.001; csv and json get every one.
        shown = frame if fmt != "table" else frame[SHOWN].round(
            {c: 3 if c.startswith("ratio") else 2 for c in SHOWN
             if c.endswith(("_ms", "_lo", "_hi")) or c == "ratio"})
        level = max(float(r["level"]) for r in rows)
        key = settings.key(configs[0])
        loads = sorted(float(r["load_1min"]) for r in rows if r.get("load_1min") is not None)
        notes = [
            f"{settings.clock} clock, {settings.provider}, {threads} thread(s), batch {batch}, "
            f"{resolution} px, 1000 classes; {key['cpu']}, onnxruntime {key['onnxruntime']}",
            "latency: median over rounds with its 95 % interval; overhead and ratio: median of "
            "each round's difference and ratio against the baseline timed interleaved (A B B A"
            f" ...), interval at {level:.4f} per look (>= 95 % over the sequential looks); "
            "'within noise': the overhead's interval holds 0",
            f"table: {table.path}"
            + (f"; 1-min load average while timing {loads[0]:g} .. {loads[-1]:g} on "
               f"{os.cpu_count()} CPUs" if loads else ""),
        ]
        print_frame(shown, fmt=fmt, notes=notes,
                    title=f"Latency against {baseline_config(configs[0].backbone).name} "
                    f"({settings.provider}, {settings.clock} clock)")
    return 0
