"""What one ExMobileViT configuration is, and what a search space of them is.

A configuration is a backbone plus five ratios rho_1..rho_5 (ExMobileViT, Eq. 1): block k's
output (C~_k channels) goes through a 1x1 conv with rho_k * C~_k output channels, is pooled, and
the pooled vectors of all blocks with rho_k > 0 are concatenated as the classifier input.
rho_5 = 4 with rho_1..4 = 0 is plain MobileViT (160 -> 640 final conv for MobileViT-S).

Rounding rule: rho_k * C~_k is rounded to the nearest integer, halves rounded up, and any
rho_k > 0 keeps at least one channel. All of the paper's ratios give integers on MobileViT-S,
so the rule only matters for the XS/XXS backbones and user-chosen ratios.

Over ~400 lines: `RhoConfig` (exact fractions, channels, names, depth) and `SearchSpace`
(YAML validated with every problem named by its key path) are the two halves of one job.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from rhosearch.errors import RhoSearchError
from rhosearch.values import load_yaml

__all__ = [
    "BACKBONE_WIDTHS",
    "NUM_BLOCKS",
    "Preset",
    "RhoConfig",
    "SearchSpace",
    "baseline_config",
    "configs_for",
    "load_presets",
    "load_search_space",
    "parse_rho",
    "SEARCH_SPACE_DIR",
]

NUM_BLOCKS = 5
# Output widths C~_1..C~_5 of the five blocks of timm's MobileViT models (paper, Table 4).
BACKBONE_WIDTHS: dict[str, tuple[int, ...]] = {
    "mobilevit_s": (32, 64, 96, 128, 160),
    "mobilevit_xs": (32, 48, 64, 80, 96),
    "mobilevit_xxs": (16, 24, 48, 64, 80),
}
_SHORT = {"mobilevit_s": "S", "mobilevit_xs": "XS", "mobilevit_xxs": "XXS"}
BASELINE_RHO = (0, 0, 0, 0, 4)
# Choices one block of a search space may have (a `{min, max, step}` range expands to a list).
MAX_CHOICES = 1000
MAX_RHO = 16  # a ratio's largest value: the paper's largest is 4
# A space's configurations, all blocks together: the one-shot stage scores every one (9,477 take
# seconds in benchmarks/oneshot_scoring.py); a million would hang it.
MAX_SPACE_SIZE = 20_000


def _search_space_dir() -> Path:
    """`search_spaces/` of a checkout (editable install), `rhosearch/search_spaces` of a wheel."""
    import importlib.util

    spec = importlib.util.find_spec("rhosearch.search_spaces")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "search_spaces"


SEARCH_SPACE_DIR = _search_space_dir()


def _fraction(value: Any, *, what: str) -> Fraction:
    """Parses `1/3`, `0.25`, `4` (str, int or float) into an exact non-negative Fraction."""
    if isinstance(value, bool):
        raise RhoSearchError(
            f"{what}: {value!r} is not a number; write a ratio like 1/3, 0.25 or 4")
    try:
        ratio = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise RhoSearchError(
            f"{what}: {value!r} is not a number; write a ratio like 1/3, 0.25 or 4"
        ) from None
    if ratio < 0:
        raise RhoSearchError(f"{what}: {value!r} is negative; ratios are 0 (no shortcut) or more")
    if ratio > MAX_RHO:
        raise RhoSearchError(f"{what}: {value!r} is above {MAX_RHO}; the paper's largest is 4 "
                             f"(a ratio of {MAX_RHO} on MobileViT-S's last block is already "
                             f"{MAX_RHO * 160:,} classifier channels)")
    return ratio


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONE_WIDTHS:
        raise RhoSearchError(
            f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONE_WIDTHS)}"
        )


def channels_for(ratio: Fraction, width: int) -> int:
    """Channels of one ExShortcut: round(ratio * width), halves up, at least 1 if ratio > 0."""
    if ratio == 0:
        return 0
    return max(1, math.floor(ratio * width + Fraction(1, 2)))


def _rho_text(ratio: Fraction) -> str:
    if ratio.denominator == 1:
        return str(ratio.numerator)
    return f"{ratio.numerator}/{ratio.denominator}"


# Unicode's vulgar fractions, for names people read (`rho_text` keeps `1/2` for files and CLIs).
_FRACTION_GLYPHS = {Fraction(a, b): glyph for a, b, glyph in (
    (1, 2, "½"), (1, 3, "⅓"), (2, 3, "⅔"), (1, 4, "¼"), (3, 4, "¾"), (1, 5, "⅕"), (2, 5, "⅖"),
    (3, 5, "⅗"), (4, 5, "⅘"), (1, 6, "⅙"), (5, 6, "⅚"), (1, 8, "⅛"), (3, 8, "⅜"), (5, 8, "⅝"),
    (7, 8, "⅞"))}


@functools.cache
def _paper_labels() -> dict[tuple[str, tuple[Fraction, ...]], str]:
    """(backbone, ρ) -> label of the paper's configurations (`paper_table5.yaml`), read once.

    Read from the file directly rather than through `load_presets`, which names its presets
    with `RhoConfig.name` when a row has no label.
    """
    data = _read_yaml(SEARCH_SPACE_DIR / "paper_table5.yaml")
    backbone = data.get("backbone", "mobilevit_s")
    return {
        (row.get("backbone", backbone),
         tuple(_fraction(r, what="rho") for r in row["rho"])): str(row["label"])
        for row in data["presets"] if "label" in row
    }


@dataclass(frozen=True)
class RhoConfig:
    """One ExMobileViT configuration: a backbone and rho_1..rho_5 as exact fractions."""

    backbone: str
    rho: tuple[Fraction, ...]

    def __post_init__(self) -> None:
        _check_backbone(self.backbone)
        if len(self.rho) != NUM_BLOCKS:
            raise RhoSearchError(f"expected {NUM_BLOCKS} rho values, got {len(self.rho)}")
        rho = tuple(_fraction(r, what=f"rho_{k}") for k, r in enumerate(self.rho, start=1))
        object.__setattr__(self, "rho", rho)
        if self.classifier_channels == 0:
            raise RhoSearchError(
                f"rho {self.rho_text} gives 0 classifier channels; make at least one rho_k > 0"
            )

    @classmethod
    def parse(cls, text: str | list[Any], *, backbone: str = "mobilevit_s") -> RhoConfig:
        """Builds a configuration from `4/3,5/4,4` (rho_3..rho_5) or five values (rho_1..rho_5)."""
        values = [v for v in text.split(",")] if isinstance(text, str) else list(text)
        if len(values) == 3:
            values = [0, 0, *values]
        if len(values) != NUM_BLOCKS:
            raise RhoSearchError(
                f"got {len(values)} rho values ({text!r}); give 3 (rho_3,rho_4,rho_5) or 5 "
                "(rho_1..rho_5), comma-separated, e.g. --rho 4/3,5/4,4"
            )
        return cls(backbone, tuple(values))

    @property
    def block_widths(self) -> tuple[int, ...]:
        """C~_1..C~_5: output channels of the backbone's five blocks."""
        return BACKBONE_WIDTHS[self.backbone]

    @property
    def shortcut_channels(self) -> tuple[int, ...]:
        """Output channels of each ExShortcut (0 where the block has none)."""
        return tuple(channels_for(r, w) for r, w in zip(self.rho, self.block_widths, strict=True))

    @property
    def classifier_channels(self) -> int:
        """P_total of Eq. (1): the classifier's input width."""
        return sum(self.shortcut_channels)

    @property
    def depth(self) -> int:
        """How many blocks the model builds and runs: up to its last shortcut."""
        return max(k + 1 for k, c in enumerate(self.shortcut_channels) if c)

    @property
    def block_offsets(self) -> tuple[int, ...]:
        """Where each block's shortcut channels start in the classifier input (Eq. 1's order)."""
        return tuple(itertools.accumulate(self.shortcut_channels[:-1], initial=0))

    @property
    def timm_name(self) -> str | None:
        """What `timm.create_model` builds this configuration by once rhosearch is imported
        (`exmobilevit_s_928`): paper presets only; None for the rest and for the baseline,
        which is timm's own MobileViT."""
        if self.is_baseline or self not in (p.config for p in load_presets().values()):
            return None
        return f"ex{self.backbone}_{self.classifier_channels}"

    @property
    def rho_text(self) -> str:
        return ",".join(_rho_text(r) for r in self.rho)

    @property
    def name(self) -> str:
        """Display name: the paper's (`ExMViT-928`, `MobileViT-S`) for exactly its ρ vectors,
        else ρ and the classifier width (`ρ(0,0,2,½,2)·576`, `XS ρ(0,0,1,1,4)·224`).

        A width alone is not a name: ρ = (0,0,2,½,2) has the same 576 channels as the paper's
        ExMViT-576 and nothing else in common with it. Not filename-safe; use `key` for files.
        """
        if self.is_baseline:
            return f"MobileViT-{_SHORT[self.backbone]}"
        paper = _paper_labels().get((self.backbone, self.rho))
        if paper is not None:
            return paper
        prefix = "" if self.backbone == "mobilevit_s" else f"{_SHORT[self.backbone]} "
        rho = ",".join(_FRACTION_GLYPHS.get(r, _rho_text(r)) for r in self.rho)
        return f"{prefix}ρ({rho})·{self.classifier_channels}"

    @property
    def key(self) -> str:
        """Unique, filename-safe identifier (two rho vectors can share a classifier width)."""
        parts = "_".join(_rho_text(r).replace("/", "o") for r in self.rho)
        return f"{self.backbone}__{parts}"

    @property
    def is_baseline(self) -> bool:
        return self.rho == tuple(Fraction(r) for r in BASELINE_RHO)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self.backbone,
            "rho": self.rho_text,
            "shortcut_channels": list(self.shortcut_channels),
            "classifier_channels": self.classifier_channels,
        }


def baseline_config(backbone: str = "mobilevit_s") -> RhoConfig:
    """Plain MobileViT: only the block-5 shortcut, at rho_5 = 4 (its final 1x1 expansion)."""
    return RhoConfig(backbone, BASELINE_RHO)


def parse_rho(text: str, *, backbone: str = "mobilevit_s") -> RhoConfig:
    """Shorthand for `RhoConfig.parse`."""
    return RhoConfig.parse(text, backbone=backbone)


# ---------------------------------------------------------------------------------------------
# Files: presets and search spaces.


def _read_yaml(path: Path) -> Any:
    if not path.exists() and not path.is_symlink():
        raise RhoSearchError(f"file not found: {path}; check the path")
    return load_yaml(path, what="YAML file")


@dataclass(frozen=True)
class Preset:
    """A named configuration from a preset file, with what the paper reports for it."""

    name: str
    label: str
    config: RhoConfig
    reported: tuple[dict[str, Any], ...] = ()

    @property
    def reported_params(self) -> int | None:
        params = [row["params_m"] for row in self.reported if "params_m" in row]
        return round(params[0] * 1e6) if params else None


def load_presets(path: Path | None = None) -> dict[str, Preset]:
    """Reads the paper's configurations (default `search_spaces/paper_table5.yaml`)."""
    path = path or SEARCH_SPACE_DIR / "paper_table5.yaml"
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("presets"), list):
        raise RhoSearchError(f"{path}: expected a mapping with a 'presets' list")
    backbone = data.get("backbone", "mobilevit_s")
    presets: dict[str, Preset] = {}
    for i, row in enumerate(data["presets"]):
        if not isinstance(row, dict) or "name" not in row or "rho" not in row:
            raise RhoSearchError(f"{path}: presets[{i}] needs 'name' and 'rho'")
        try:
            config = RhoConfig.parse(list(row["rho"]), backbone=row.get("backbone", backbone))
        except RhoSearchError as exc:
            raise RhoSearchError(f"{path}: presets[{i}].rho: {exc}") from None
        presets[row["name"]] = Preset(
            name=row["name"],
            label=row.get("label", config.name),
            config=config,
            reported=tuple(row.get("reported", [])),
        )
    return presets


def get_preset(name: str) -> Preset:
    """Looks a preset up by name, case-insensitively; unknown names list the valid ones."""
    presets = load_presets()
    for key, preset in presets.items():
        if key.lower() == name.lower() or preset.label.lower() == name.lower():
            return preset
    raise RhoSearchError(f"unknown preset {name!r}; choose one of: all, {', '.join(presets)}")


@dataclass(frozen=True)
class SearchSpace:
    """Per-block rho choices for one backbone, plus optional cost constraints.

    File format (see `search_spaces/exmobilevit_s.yaml`)::

        backbone: mobilevit_s
        rho:
          rho_3: [0, 1/3, 2/3, 1, 4/3]            # a list of choices
          rho_4: {min: 0, max: 5/4, step: 1/4}    # or a range with a step
          rho_5: [2, 3, 4]                        # blocks not named are fixed at 0
        constraints:
          max_overhead_pct: 10                    # overhead params, % of the baseline
          max_gmacs: 2.0
    """

    backbone: str
    choices: tuple[tuple[Fraction, ...], ...]
    max_overhead_pct: float | None = None
    max_gmacs: float | None = None
    source: str = ""
    name: str = field(default="")

    @property
    def size(self) -> int:
        """How many rho vectors the space holds (including any with zero channels)."""
        return math.prod(len(c) for c in self.choices)

    def configs(self) -> Iterator[RhoConfig]:
        """Every valid configuration of the grid, in a fixed order."""
        for rho in itertools.product(*self.choices):
            if any(r > 0 for r in rho):
                yield RhoConfig(self.backbone, rho)

    @property
    def widest(self) -> RhoConfig:
        """The widest choice of every block: the configuration the supernet holds."""
        return RhoConfig(self.backbone, tuple(max(c) for c in self.choices))

    @property
    def max_shortcut_channels(self) -> tuple[int, ...]:
        """The widest ExShortcut of each block over the space: the supernet's widths."""
        return self.widest.shortcut_channels

    def contains(self, config: RhoConfig) -> bool:
        return config.backbone == self.backbone and all(
            r in c for r, c in zip(config.rho, self.choices, strict=True)
        )


def _range_choices(spec: dict[str, Any], *, where: str, problems: list[str]) -> list[Fraction]:
    missing = [k for k in ("min", "max", "step") if k not in spec]
    if missing:
        problems.append(f"{where}: a range needs min, max and step (missing {', '.join(missing)})")
        return []
    try:
        low, high, step = (_fraction(spec[k], what=f"{where}.{k}") for k in ("min", "max", "step"))
    except RhoSearchError as exc:
        problems.append(str(exc))
        return []
    if step == 0 or high < low:
        problems.append(f"{where}: needs step > 0 and max >= min")
        return []
    count = int((high - low) / step) + 1
    if count > MAX_CHOICES:  # beyond this a list of choices would not fit in memory anyway
        problems.append(f"{where}: a range of {count:,} values; at most {MAX_CHOICES:,} per "
                        "block (raise step or narrow min..max)")
        return []
    return [low + i * step for i in range(count)]


def parse_search_space(data: Any, *, source: str = "<memory>") -> SearchSpace:
    """Validates a search-space mapping; every problem is reported with its key path."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise RhoSearchError(f"{source}: expected a mapping with 'backbone' and 'rho'")
    unknown = sorted(map(str, set(data) - {"backbone", "rho", "constraints", "name",
                                            "description"}))
    problems += [f"{key}: unknown key (allowed: backbone, rho, constraints)" for key in unknown]
    backbone = data.get("backbone", "mobilevit_s")
    if not isinstance(backbone, str) or backbone not in BACKBONE_WIDTHS:
        problems.append(f"backbone: {backbone!r} is not one of {', '.join(BACKBONE_WIDTHS)}")
    rho_spec = data.get("rho")
    choices: list[tuple[Fraction, ...]] = []
    if not isinstance(rho_spec, dict):
        problems.append("rho: expected a mapping rho_1..rho_5 -> list or {min, max, step}")
        rho_spec = {}
    for key in sorted(map(str, set(rho_spec) - {f"rho_{k}" for k in range(1, NUM_BLOCKS + 1)})):
        problems.append(f"rho.{key}: unknown key (allowed: rho_1 .. rho_5)")
    for k in range(1, NUM_BLOCKS + 1):
        where = f"rho.rho_{k}"
        spec = rho_spec.get(f"rho_{k}", [0])
        values: list[Fraction] = []
        if isinstance(spec, dict):
            values = _range_choices(spec, where=where, problems=problems)
        elif isinstance(spec, list) and spec:
            for i, value in enumerate(spec):
                try:
                    values.append(_fraction(value, what=f"{where}[{i}]"))
                except RhoSearchError as exc:
                    problems.append(str(exc))
        else:
            problems.append(f"{where}: expected a non-empty list or {{min, max, step}}")
        choices.append(tuple(sorted(set(values))) or (Fraction(0),))
    constraints = data.get("constraints") or {}
    limits: dict[str, float | None] = {"max_overhead_pct": None, "max_gmacs": None}
    if not isinstance(constraints, dict):
        problems.append("constraints: expected a mapping")
        constraints = {}
    for key, value in constraints.items():
        if key not in limits:
            problems.append(f"constraints.{key}: unknown key (allowed: {', '.join(limits)})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            problems.append(f"constraints.{key}: {value!r} is not a finite number")
        elif value < 0:
            problems.append(f"constraints.{key}: {value!r} leaves no configuration; give a "
                            "limit of 0 or more")
        else:
            limits[key] = float(value)
    if not problems and all(max(c) == 0 for c in choices):
        problems.append("rho: every block is fixed at 0, so no configuration has a classifier")
    size = math.prod(len(c) for c in choices)
    if not problems and size > MAX_SPACE_SIZE:
        problems.append(f"rho: {size:,} configurations; a space holds at most "
                        f"{MAX_SPACE_SIZE:,} (the one-shot stage scores every one)")
    if problems:
        raise RhoSearchError(f"{source}: " + "; ".join(problems))
    return SearchSpace(
        backbone=backbone,
        choices=tuple(choices),
        max_overhead_pct=limits["max_overhead_pct"],
        max_gmacs=limits["max_gmacs"],
        source=source,
        name=str(data.get("name", Path(source).stem)),
    )


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    """Loads `search_spaces/<name>.yaml` by name, or any YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        candidate = SEARCH_SPACE_DIR / f"{name_or_path}.yaml"
        if not candidate.is_file():
            known = sorted(p.stem for p in SEARCH_SPACE_DIR.glob("*.yaml"))
            raise RhoSearchError(
                f"unknown search space {str(name_or_path)!r}; choose one of: {', '.join(known)} "
                "or give a path to a .yaml file"
            )
        path = candidate
    return parse_search_space(_read_yaml(path), source=str(path))


def configs_for(*, preset: str | None = None, rho: str | None = None,
                backbone: str | None = None, allow_all: bool = False) -> list[RhoConfig]:
    """The configurations a `--preset`/`--rho`/`--backbone` choice names: `rho` on `backbone`
    (default mobilevit_s), a preset (default the baseline), or every preset with `allow_all`."""
    if rho:
        return [RhoConfig.parse(rho, backbone=backbone or "mobilevit_s")]
    if allow_all and (preset or "all").lower() == "all":
        configs = [p.config for p in load_presets().values()]
    else:
        configs = [get_preset(preset or "baseline").config]
    if backbone is not None:  # a preset is a whole configuration, backbone included
        if backbone not in BACKBONE_WIDTHS:
            raise RhoSearchError(f"--backbone {backbone!r} is unknown; choose one of: "
                                 f"{', '.join(BACKBONE_WIDTHS)}")
        other = [c for c in configs if c.backbone != backbone]
        if other:
            raise RhoSearchError(f"--backbone {backbone}: the preset is a "
                                 f"{other[0].backbone} configuration; give --rho with --backbone")
    return configs
