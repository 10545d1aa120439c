"""Renders a report in headless Chromium, offline, and checks that the plot was drawn.

    python tests/render_report.py /tmp/rhosearch_reports     # three demo studies -> PNGs

Builds the three studies a report must read well for (a fresh search, the same after
`train-best` with a 2-epoch full stage near chance, and one where every top-1 ties), with
synthetic top-1s over the default search space and real closed-form costs (256 px, 1000
classes), writes each report through cli.py, loads it in Chromium with networking off, and
prints what it found: plot SVGs, points, the tables' laid-out widths, screenshot pixel spread.
`tests/test_report.py` uses the same helpers.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=15000",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def render(html_path: Path, *, screenshot: Path | None = None, size: str = "1400,2200",
           timeout: float = 120) -> str:
    """Loads `html_path` in headless Chromium; returns the DOM after scripts ran."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH")
    with tempfile.TemporaryDirectory() as profile:
        flags = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}"]
        url = html_path.resolve().as_uri()
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        if screenshot is not None:
            subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True,
                           timeout=timeout, check=True)
    return dom


def pixel_spread(png: Path) -> tuple[float, int]:
    """(grey-level standard deviation, number of distinct colours) of a screenshot."""
    from PIL import Image, ImageStat

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24) or []
    return ImageStat.Stat(image.convert("L")).stddev[0], len(colours)


def trial_attrs(config, cost_model, stage: str, top1: float | None, number: int, *,
                n_val: int = 360, seed: int = 0) -> dict:
    cost = cost_model.price(config)
    return {
        "stage": stage, "name": config.name, "backbone": config.backbone, "rho": config.rho_text,
        "classifier_channels": config.classifier_channels, "params": cost.params,
        "overhead_params": cost.overhead_params, "overhead_pct": round(cost.overhead_pct, 3),
        "gmacs": round(cost.macs / 1e9, 4), "top1": top1,
        "top5": None if top1 is None else min(100.0, top1 + 2.5), "n_val": n_val, "seed": seed,
        "epochs_done": {"oneshot": 0, "noise": 3, "proxy": 3, "full": 2}[stage],
        "wall_s": 10.0 + number, "status": "ok" if top1 is not None else "failed", "reason": "",
    }


VARIANTS = ("fresh", "trained", "ties")


def build_demo_study(storage: str, name: str = "demo", *, seed: int = 0,
                     variant: str = "trained") -> optuna.Study:
    """A study as `rhosearch search` (and `train-best`) leave it, with synthetic top-1s.

    fresh: 40 one-shot scores, 24 proxy trials (the paper's six first; 2 pruned, 1 failed) and
        the baseline's 3 noise seeds; trained: the same plus 5 full-stage finalists (the
        baseline control among them) trained with seeds 0, 1, 2 for 2 epochs, near chance
        (10-35 %); ties: every top-1 equal (a 3-class folder at chance).
    """
    from rhosearch.core.cost import CostModel
    from rhosearch.core.space import baseline_config, load_presets, load_search_space
    from rhosearch.record.study import stage_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    configs = list(load_search_space("exmobilevit_s").configs())
    cost_model = CostModel("mobilevit_s", resolution=256, num_classes=1000)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=["maximize", "minimize"])
    n_val = 30 if variant == "ties" else 360
    study.set_user_attr("data", "photos-3class" if variant == "ties" else "digits")
    study.set_user_attr("n_val", n_val)
    rhos = sorted({c.rho_text for c in configs})
    distributions = {"rho": optuna.distributions.CategoricalDistribution(rhos)}

    def quality(config) -> float:
        return 0.02 * config.classifier_channels ** 0.5 + 0.3 * float(config.rho[2] > 0)

    def top1_of(value: float) -> float:
        return 33.33 if variant == "ties" else round(value, 2)

    def add(target, config, stage: str, top1: float | None, state=optuna.trial.TrialState.COMPLETE,
            trial_seed: int = 0):
        attrs = trial_attrs(config, cost_model, stage, top1, len(target.trials), n_val=n_val,
                            seed=trial_seed)
        values = None if top1 is None else [top1, attrs["overhead_params"]]
        target.add_trial(optuna.trial.create_trial(
            state=state, values=values, user_attrs=attrs, params={"rho": config.rho_text},
            distributions=distributions,
        ))

    oneshot, noise = stage_study(study, "oneshot"), stage_study(study, "noise")
    sampled = rng.sample(configs, 40)
    for config in sampled:
        add(oneshot, config, "oneshot", top1_of(78 + 8 * quality(config) + rng.gauss(0, 1.2)))
    paper = [p.config for p in load_presets().values()]
    found = [c for c in sorted(sampled, key=quality, reverse=True) if c not in paper][:18]
    for i, config in enumerate(paper + found):
        if i in (9, 13):
            add(study, config, "proxy", None, optuna.trial.TrialState.PRUNED)
        elif i == 17:
            add(study, config, "proxy", None, optuna.trial.TrialState.FAIL)
        else:
            add(study, config, "proxy", top1_of(86 + 5 * quality(config) + rng.gauss(0, 1.5)))
    baseline = baseline_config()
    for noise_seed in (1, 2, 3):
        add(noise, baseline, "noise", top1_of(86 + 5 * quality(baseline) + rng.gauss(0, 1.5)),
            trial_seed=noise_seed)
    runs = [t.user_attrs["top1"] for t in study.trials + noise.trials
            if t.user_attrs.get("rho") == baseline.rho_text and t.user_attrs.get("top1")]
    mean = sum(runs) / len(runs)
    std = (sum((v - mean) ** 2 for v in runs) / (len(runs) - 1)) ** 0.5
    study.set_user_attr("noise_floor", {"mean": mean, "std": std, "seeds": [0, 1, 2, 3],
                                        "top1": runs, "n_val": n_val})
    if variant == "trained":  # as `train-best --seeds 3` leaves it
        finalists = [*found[:3], paper[3], baseline]
        levels = [10 + 25 * rng.random() for _ in finalists]
        for full_seed in (0, 1, 2):
            for config, level in zip(finalists, levels, strict=True):
                add(study, config, "full", top1_of(level + rng.gauss(0, 1.5)),
                    trial_seed=full_seed)
    return study


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "/tmp/rhosearch_reports")
    out.mkdir(parents=True, exist_ok=True)
    reports = Path(tempfile.mkdtemp(prefix="rhosearch_report_"))
    for variant in VARIANTS:
        (reports / variant).mkdir()
        build_demo_study(f"sqlite:///{reports / variant / 'study.db'}", variant, variant=variant)
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", "--study",
                                 variant, "--reports-dir", str(reports)],
                                capture_output=True, text=True)
        if result.returncode:
            print(result.stderr)
            return 1
        html_path = Path(result.stdout.strip())
        screenshot = out / f"{variant}.png"
        dom = render(html_path, screenshot=screenshot, size="1400,3000")
        stddev, colours = pixel_spread(screenshot)
        widths = [int(w) for w in re.findall(r'class="fit" data-width="(\d+)"', dom)]
        svgs, points = dom.count('class="main-svg"'), dom.count('<path class="point')
        print(f"{variant}: {html_path} ({html_path.stat().st_size / 1e6:.2f} MB) -> "
              f"{screenshot}; main-svg {svgs}, points {points}, table widths {widths} px, "
              f"grey stddev {stddev:.1f}, {colours} colours")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
