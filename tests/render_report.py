"""Renders a report in headless Chromium, offline, and checks that the plot was drawn.

    python tests/render_report.py /tmp/rhosearch_report.png     # demo study -> screenshot

Builds a realistic demo study (synthetic top-1s over the default search space, real closed-form
costs at 64 px and 10 classes), writes its report through cli.py, loads it in Chromium with
networking off, and prints what it found: plot SVGs, scatter points, screenshot pixel spread.
`tests/test_report.py` uses the same helpers.
"""

from __future__ import annotations

import random
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


def trial_attrs(config, cost_model, stage: str, top1: float | None, number: int) -> dict:
    cost = cost_model.price(config)
    return {
        "stage": stage, "name": config.name, "backbone": config.backbone, "rho": config.rho_text,
        "classifier_channels": config.classifier_channels, "params": cost.params,
        "overhead_params": cost.overhead_params, "overhead_pct": round(cost.overhead_pct, 3),
        "gmacs": round(cost.macs / 1e9, 4), "top1": top1,
        "top5": None if top1 is None else min(100.0, top1 + 2.5),
        "epochs_done": {"oneshot": 0, "proxy": 3, "full": 30}[stage], "wall_s": 10.0 + number,
        "status": "ok" if top1 is not None else "failed", "reason": "",
    }


def build_demo_study(storage: str, name: str = "demo", *, seed: int = 0) -> optuna.Study:
    """A three-stage study: 40 one-shot, 24 proxy (2 pruned, 1 failed) and 5 full trials."""
    from rhosearch.cost import CostModel
    from rhosearch.space import load_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    configs = list(load_search_space("exmobilevit_s").configs())
    cost_model = CostModel("mobilevit_s", resolution=64, num_classes=10)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=["maximize", "minimize"])
    rhos = sorted({c.rho_text for c in configs})
    distributions = {"rho": optuna.distributions.CategoricalDistribution(rhos)}

    def quality(config) -> float:
        return 0.02 * config.classifier_channels ** 0.5 + 0.3 * float(config.rho[2] > 0)

    def add(config, stage: str, top1: float | None, state=optuna.trial.TrialState.COMPLETE):
        attrs = trial_attrs(config, cost_model, stage, top1, len(study.trials))
        values = None if top1 is None else [top1, attrs["overhead_params"]]
        study.add_trial(optuna.trial.create_trial(
            state=state, values=values, user_attrs=attrs, params={"rho": config.rho_text},
            distributions=distributions,
        ))

    sampled = rng.sample(configs, 40)
    for config in sampled:
        add(config, "oneshot", round(78 + 8 * quality(config) + rng.gauss(0, 1.2), 2))
    for i, config in enumerate(sorted(sampled, key=quality, reverse=True)[:24]):
        if i in (5, 11):
            add(config, "proxy", None, optuna.trial.TrialState.PRUNED)
        elif i == 17:
            add(config, "proxy", None, optuna.trial.TrialState.FAIL)
        else:
            add(config, "proxy", round(90 + 5 * quality(config) + rng.gauss(0, 0.6), 2))
    for config in sorted(sampled, key=quality, reverse=True)[:5]:
        add(config, "full", round(96 + 2 * quality(config) + rng.gauss(0, 0.3), 2))
    return study


def main(argv: list[str]) -> int:
    screenshot = Path(argv[0] if argv else "/tmp/rhosearch_report.png")
    reports = Path(tempfile.mkdtemp(prefix="rhosearch_report_"))
    (reports / "demo").mkdir()
    build_demo_study(f"sqlite:///{reports / 'demo' / 'study.db'}")
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "report", "--study", "demo",
                             "--reports-dir", str(reports)], capture_output=True, text=True)
    print(result.stdout.strip(), result.stderr.strip())
    html_path = Path(result.stdout.strip())
    dom = render(html_path, screenshot=screenshot)
    stddev, colours = pixel_spread(screenshot)
    print(f"html: {html_path} ({html_path.stat().st_size / 1e6:.2f} MB)")
    svgs, points = dom.count('class="main-svg"'), dom.count('<path class="point')
    print(f"main-svg: {svgs}, scatter points: {points}, screenshot: {screenshot} "
          f"(grey stddev {stddev:.1f}, {colours} colours)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
