"""The latency model: any configuration's latency overhead priced without exporting it.

    model = LatencyModel.fit(LatencyTable.for_folder("reports").rows(settings, backbone=...))
    model.overhead_ms(config)                  # trunk[depth] + sum_k per_channel[k] * c_k
    pricer = space_pricer(space, table=table, settings=settings)   # what a search uses
    pricer.price(config)   # {"overhead_ms", "overhead_ms_lo", "overhead_ms_hi", "latency_source"}

As `CostModel` prices parameters: the overhead over the baseline is a trunk term per depth (the
blocks a configuration runs) plus a cost per shortcut channel of each block (its 1x1 conv, BN,
pooling and classifier columns, all linear in the width), fitted by least squares on
overheads measured by `latency.measure_latency`. `benchmarks/latency_model.py` measures its
error on configurations it was not fitted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from rhosearch.core.space import NUM_BLOCKS, RhoConfig, baseline_config
from rhosearch.deploy.latency import LatencySettings, LatencyTable, measure_latency
from rhosearch.errors import RhoSearchError
from rhosearch.vocab import LATENCY_COLUMNS

__all__ = ["LatencyModel", "LatencyPricer", "design_set", "space_pricer"]


@dataclass(frozen=True)
class LatencyModel:
    """Overhead over the baseline (ms) = trunk[depth] + sum_k per_channel[k] * c_k.

    Fitted by least squares on measured overheads (the baseline itself is a row: overhead 0),
    the per-channel costs bounded below by 0.
    A block whose width does not vary among the fitted rows has no term of its own (its cost
    is in the trunk of that depth), so `overhead_ms` refuses a configuration that needs one.
    """

    backbone: str
    trunk_ms: dict[int, float]
    per_channel_ms: tuple[float | None, ...]  # None: the block's width was fixed in the fit
    fixed_channels: tuple[int | None, ...]  # the width it was fixed at (None: it varied)
    baseline_ms: float
    rows: int

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any]]) -> LatencyModel:
        """Fits on table rows of one backbone (rho, overhead_ms, baseline_ms)."""
        if not rows:
            raise RhoSearchError("no measured latencies to fit the latency model on; run "
                                 "rhosearch latency first")
        backbones = {r["backbone"] for r in rows}
        if len(backbones) != 1:
            raise RhoSearchError(f"latency rows of several backbones: {sorted(backbones)}")
        backbone = backbones.pop()
        configs = [RhoConfig.parse(r["rho"], backbone=backbone) for r in rows]
        overhead = np.array([float(r["overhead_ms"]) for r in rows])
        depths = sorted({c.depth for c in configs})
        channels = np.array([c.shortcut_channels for c in configs], dtype=float)
        varied = [k for k in range(NUM_BLOCKS) if np.ptp(channels[:, k]) > 0]
        design = np.column_stack(
            [[float(c.depth == d) for c in configs] for d in depths]
            + [channels[:, k] for k in varied])
        # A channel cannot save time: its cost is bounded below by 0 (on few, noisy rows an
        # unbounded fit trades a negative block-3 cost against a positive block-4 one and
        # predicts held-out configurations worse, benchmarks/latency_model.py).
        lower = [-np.inf] * len(depths) + [0.0] * len(varied)
        coefficients = lsq_linear(design, overhead, bounds=(lower, np.inf)).x
        trunk = {d: float(coefficients[i]) for i, d in enumerate(depths)}
        per_channel: list[float | None] = [None] * NUM_BLOCKS
        for i, k in enumerate(varied):
            per_channel[k] = float(coefficients[len(depths) + i])
        fixed = tuple(None if k in varied else int(channels[0, k]) for k in range(NUM_BLOCKS))
        baseline_ms = float(np.median([float(r["baseline_ms"]) for r in rows]))
        return cls(backbone, trunk, tuple(per_channel), fixed, baseline_ms, len(rows))

    def overhead_ms(self, config: RhoConfig) -> float:
        if config.backbone != self.backbone:
            raise RhoSearchError(f"the latency model is for {self.backbone}, not "
                                 f"{config.backbone}")
        if config.depth not in self.trunk_ms:
            raise RhoSearchError(f"the latency model has no depth-{config.depth} trunk (fitted "
                                 f"on depths {sorted(self.trunk_ms)}); measure such a "
                                 "configuration first")
        total = self.trunk_ms[config.depth]
        for k, (width, slope, fixed) in enumerate(zip(
                config.shortcut_channels, self.per_channel_ms, self.fixed_channels,
                strict=True)):
            if slope is not None:
                total += slope * width
            elif width != fixed:
                raise RhoSearchError(f"the latency model saw block {k + 1} only at {fixed} "
                                     f"channels, not {width}; measure such a configuration")
        return total

    def latency_ms(self, config: RhoConfig) -> float:
        return self.baseline_ms + self.overhead_ms(config)


@dataclass(frozen=True)
class LatencyPricer:
    """Latency overhead (ms) of any configuration of one backbone: the table's measurement
    when it has one (`latency_source` "table"), else the model's price ("model"), each with
    an interval.

    The model's interval is its price +- the larger of the fitted rows' median measurement
    half-width and 1.96 x the model's leave-one-out RMS error (its error on configurations it
    was not fitted on; 0 when every row is needed to fit it).
    """

    model: LatencyModel
    measured: dict[str, tuple[float, float, float]]  # rho -> (overhead, lo, hi)
    half_width: float

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> LatencyPricer:
        model = LatencyModel.fit(rows)
        measured = {r["rho"]: (float(r["overhead_ms"]), float(r["overhead_lo"]),
                               float(r["overhead_hi"])) for r in rows}
        widths = [(hi - lo) / 2 for _, lo, hi in measured.values()]
        return cls(model, measured, max(float(np.median(widths)), 1.96 * _loo_rms(rows)))

    def price(self, config: RhoConfig) -> dict[str, Any]:
        if config.rho_text in self.measured:
            overhead, lo, hi = self.measured[config.rho_text]
            source = "table"
        else:
            overhead = self.model.overhead_ms(config)
            lo, hi = overhead - self.half_width, overhead + self.half_width
            source = "model"
        return dict(zip(LATENCY_COLUMNS, (round(overhead, 3), round(lo, 3), round(hi, 3),
                                           source), strict=True))

    def describe(self) -> str:
        return (f"Latency overhead: the table's measurement where it has one, else the model "
                f"fitted on {self.model.rows} measured configurations (interval +-"
                f"{self.half_width:.2f} ms); baseline {self.model.baseline_ms:.1f} ms")


def _loo_rms(rows: Sequence[dict[str, Any]]) -> float:
    """Root mean square of the model's leave-one-out errors (rows it cannot price skipped)."""
    errors = []
    for i, row in enumerate(rows):
        rest = [r for j, r in enumerate(rows) if j != i]
        if not rest:
            continue
        try:
            model = LatencyModel.fit(rest)
            config = RhoConfig.parse(row["rho"], backbone=row["backbone"])
            errors.append(model.overhead_ms(config) - float(row["overhead_ms"]))
        except RhoSearchError:
            continue
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else 0.0


def design_set(space: Any, *, extra: int = 2, seed: int = 0) -> list[RhoConfig]:
    """The configurations measured to fit a space's latency model: the baseline, the paper's
    configurations in the space, the widest, one per depth, and a seeded sample, enough for
    the model's terms plus `extra` rows to estimate its error."""
    import random

    from rhosearch.core.space import load_presets

    configs = list(space.configs())
    chosen = [baseline_config(space.backbone)]
    chosen += [p.config for p in load_presets().values() if space.contains(p.config)]
    chosen.append(space.widest)
    for depth in sorted({c.depth for c in configs}):
        chosen.append(next(c for c in configs if c.depth == depth))
    chosen = list(dict.fromkeys(chosen))
    varied = sum(len(choices) > 1 for choices in space.choices)
    needed = len({c.depth for c in configs}) + varied + extra
    rest = [c for c in configs if c not in chosen]
    random.Random(seed).shuffle(rest)
    return chosen + rest[:max(0, needed - len(chosen))]


def space_pricer(
    space: Any, *, table: LatencyTable, settings: LatencySettings,
    progress: Callable[[str], None] | None = None,
) -> LatencyPricer:
    """A pricer for `space`, measuring (once: the table keeps them) its `design_set`."""
    measure_latency(design_set(space), table=table, settings=settings, progress=progress)
    rows = table.rows(settings, backbone=space.backbone)
    return LatencyPricer.from_rows(rows)
