"""rhosearch's command line: parses arguments and calls the package. No logic lives here.

    rhosearch count --preset all
    rhosearch --help

The flags several commands share are declared once, as argument groups (the study, the Ray
target, the data and recipe); every value is checked by its kind's checker in `values.py`
(argparse `type=`), so a bad value is refused before anything is created. Each runner only
calls one package function and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from rhosearch import values
from rhosearch.errors import RhoSearchError, Terminated
from rhosearch.training.datasets import BUILTIN
from rhosearch.vocab import ALL_STAGES, PRICED, SEARCH_STAGES, Stage, Status

# Each subcommand: a function adding its arguments and a function running it. Imports of the
# heavy modules (torch, ray) happen inside the runners so `--help` stays fast.
Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]


def _add_config_args(parser: argparse.ArgumentParser, *, allow_all: bool = False) -> None:
    which = parser.add_mutually_exclusive_group()
    preset_help = "a paper preset (baseline, exmvit-576 ... exmvit-928)"
    which.add_argument("--preset", type=values.nonempty,
                       help=preset_help + (" or 'all'" if allow_all else ""))
    which.add_argument("--rho", type=values.nonempty,
                       help="rho_3,rho_4,rho_5 or rho_1..rho_5, e.g. 4/3,5/4,4")
    parser.add_argument("--backbone", type=values.nonempty, help="mobilevit_s | mobilevit_xs | "
                        "mobilevit_xxs, for --rho (default: mobilevit_s; presets have their own)")


def _configs_from_args(args: argparse.Namespace, *, allow_all: bool = False) -> list:
    from rhosearch.core.space import configs_for

    return configs_for(preset=args.preset, rho=args.rho, backbone=args.backbone,
                       allow_all=allow_all)


def _recipe_names() -> str:
    """The recipes `recipes.yaml` defines, `full | full_small | proxy | ...`, for help texts.

    Read with yaml alone: `rhosearch.training.train` would import torch, and `--help` must
    stay fast.
    """
    from importlib import resources

    import yaml

    text = (resources.files("rhosearch.training") / "recipes.yaml").read_text()
    return " | ".join(name for name, value in yaml.safe_load(text).items()
                      if isinstance(value, dict))


# --- argument groups several commands share ---------------------------------------------------

DATA_HELP = " | ".join((*BUILTIN, "PATH (an ImageFolder: train/, val/)"))
STORAGE_HELP = "Optuna storage URL (default: SQLite in REPORTS_DIR/STUDY/study.db)"


def _add_study_args(parser: argparse.ArgumentParser, *, new: bool) -> None:
    """Which study: its name, its storage and the folder study folders live in. `new`: the
    command may create it (`search`), so the name has a default."""
    group = parser.add_argument_group("study")
    if new:
        group.add_argument("--study", type=values.study_name, default="default",
                           help="study name (default: %(default)s)")
    else:
        group.add_argument("--study", type=values.study_name, required=True,
                           help="the study's name")
    group.add_argument("--storage", type=values.nonempty, help=STORAGE_HELP)
    group.add_argument("--reports-dir", type=Path, default=Path("reports"),
                       help="where study folders are (default: reports)")


def _add_ray_args(parser: argparse.ArgumentParser, *, budget_example: str,
                  cpus_per_trial: bool = False) -> None:
    """Where jobs run: the budget, the Ray cluster, its shared storage, per-trial shares."""
    group = parser.add_argument_group("Ray")
    group.add_argument("--budget", type=values.budget,
                       help=f"resources, e.g. {budget_example} (CPUs whole; default: all "
                       "local CPUs)")
    group.add_argument("--address", type=values.nonempty,
                       help="join an existing Ray cluster (e.g. auto, ray://host:10001)")
    group.add_argument("--storage-path", metavar="URI", type=values.nonempty,
                       help="where Ray jobs keep checkpoints and files on their way to this "
                       "driver: a folder every Ray node can write, or a bucket (s3://..., "
                       "gs://...) (default: REPORTS_DIR/STUDY/ray on this machine)")
    group.add_argument("--gpus-per-trial", type=values.finite(0, 1024, above_low=True),
                       help="GPUs per trial or worker; a fraction is allowed, e.g. 0.5 "
                       "(default: 1 on a GPU budget)")
    if cpus_per_trial:
        group.add_argument("--cpus-per-trial", type=values.finite(0, 100_000, above_low=True),
                           help="CPUs per trial (default: 1)")


def _add_data_recipe_args(parser: argparse.ArgumentParser, *, data_default: str | None,
                          recipe_default: str) -> None:
    """What to train on and how: shared by `search`, `train` and `train-best`."""
    group = parser.add_argument_group("data and recipe")
    group.add_argument("--data", type=values.nonempty, default=data_default,
                       help=DATA_HELP + (f" (default: {data_default})" if data_default else
                                         " (default: the one the study searched on)"))
    group.add_argument("--data-root", type=Path,
                       help="where fashion-mnist/cifar10/cifar100 files live")
    group.add_argument("--download", action="store_true",
                       help="download fashion-mnist or CIFAR if missing")
    group.add_argument("--recipe", type=values.nonempty,
                       help=f"{_recipe_names()} or a recipe .yaml path (default: "
                       f"{recipe_default})")
    group.add_argument("--epochs", type=values.EPOCHS, help="override the recipe's epochs")
    group.add_argument("--set", type=values.key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="override any recipe field (repeatable)")


def _recipe_overrides(args: argparse.Namespace) -> dict:
    overrides = dict(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return overrides


def _command_line(flags: Sequence[str]) -> str:
    """A rhosearch command as a shell line: the program as this one was started (`rhosearch`
    on PATH, else the full path of the console script), its flags quoted."""
    import shlex
    import shutil

    program = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "rhosearch" else "rhosearch"
    if shutil.which("rhosearch") is None and Path(program).is_file():
        program = str(Path(program).resolve())
    return shlex.join([program, *flags])


def _resume_command(argv: Sequence[str]) -> str:
    """The command line that was run, with `--resume` added: what to type after an interrupt."""
    import shlex

    return shlex.join(["rhosearch", *(a for a in argv if a != "--resume"), "--resume"])


# --- count ------------------------------------------------------------------------------------


def _count_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, allow_all=True)
    parser.add_argument("--resolution", type=values.RESOLUTION, default=256,
                        help="input size (default: 256)")
    parser.add_argument("--classes", type=values.CLASSES, default=1000,
                        help="classes (default: 1000)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table: for people (default); csv, json: for programs")
    parser.add_argument("--method", choices=("fvcore", "closed-form"), default="fvcore",
                        help="fvcore (default): build each model and count its traced MACs; "
                        "closed-form: price it by formula, without building it (same counts)")


def _count(args: argparse.Namespace) -> int:
    from rhosearch.core.cost import cost_table
    from rhosearch.output import print_frame

    configs = _configs_from_args(args, allow_all=True)
    frame, notes = cost_table(
        configs, resolution=args.resolution, num_classes=args.classes,
        measure=args.method == "fvcore",
    )
    print_frame(frame, fmt=args.format, notes=notes)
    return 0


# --- search -----------------------------------------------------------------------------------


def _search_args(parser: argparse.ArgumentParser) -> None:
    _add_study_args(parser, new=True)
    parser.add_argument("--resume", action="store_true", help="continue an existing study")
    parser.add_argument("--trials", type=values.whole(1, 100_000), default=12,
                        help="proxy trials to train (default: 12)")
    parser.add_argument("--space", type=values.nonempty, default="exmobilevit_s",
                        help="search space name in search_spaces/ or a .yaml path "
                        "(default: %(default)s)")
    parser.add_argument("--stage", choices=SEARCH_STAGES, default=ALL_STAGES,
                        help="all (default): train the supernet and score the whole space "
                        "(a screen, printed beside the proxy), then every rho's head on "
                        "frozen baseline trunks (the head stage), then the proxy trials the "
                        "sampler proposes, then race the contenders with more paired seeds; "
                        "oneshot, head or proxy alone; resolve on an existing study")
    parser.add_argument("--sampler", default="gp", choices=values.SAMPLERS,
                        help="the Optuna sampler that proposes rho vectors (default: "
                        "%(default)s, the best of benchmarks/sampler_table.py: "
                        "docs/measurements.md)")
    parser.add_argument("--seed", type=values.SEED, default=0,
                        help="seed of the sampler, the weights and the data order (default: 0)")
    parser.add_argument("--gmacs-objective", action="store_true",
                        help="minimise GMACs as a third objective")
    parser.add_argument("--latency-objective", action="store_true",
                        help="minimise latency overhead over the baseline (ms, onnxruntime on "
                        "this CPU, 1 thread, 256 px): measured once into REPORTS_DIR/latency.csv"
                        " for the configurations its model needs, priced by that model for "
                        "the rest (each trial says which); needs the export extra")
    parser.add_argument("--latency-clock", choices=("wall", "cpu"), default="wall",
                        help="what --latency-objective times: wall (default) or the thread's "
                        "CPU time (steadier on a loaded machine; see rhosearch latency --clock)")
    parser.add_argument("--noise-seeds", type=values.whole(0, 100), default=3, metavar="K",
                        help="also train the baseline with K more seeds to measure the noise "
                        "floor every result is judged against (default: 3; 0: off)")
    parser.add_argument("--resolve-seeds", type=values.whole(0, 100), default=2, metavar="N",
                        help="the resolve stage gives each contender (the front and what "
                        "overlaps it) up to N more seeds, paired with the baseline's, until it "
                        "is told from the baseline or cannot be (default: 2; 0: off)")
    parser.add_argument("--resolve-contenders", type=values.whole(1, 1000), default=None,
                        metavar="K", help="the resolve stage races at most K contenders, best "
                        "first (default: as many as the budget trains at once, at least 2, so "
                        "a round takes one run's time)")
    parser.add_argument("--head-seeds", type=values.whole(1, 100), default=1, metavar="S",
                        help="head stage: head seeds per trunk and configuration (default: 1; "
                        "the trunk is the unit of its test, and its cost is linear in S)")
    parser.add_argument("--head-trunks", type=values.whole(0, 100), default=0, metavar="K",
                        help="head stage: K trunks beyond the noise floor's seeds (default: 0)")
    parser.add_argument("--enqueue-head-front", action="store_true", default=None,
                        help="queue the head stage's front as the first proxy trials after "
                        "the paper's (off: see docs/head-stage.md)")
    parser.add_argument("--enqueue-oneshot-front", action="store_true",
                        help="queue the one-shot front as the first proxy trials after the "
                        "paper's (off: the one-shot ranking does not agree with longer "
                        "training beyond noise, see docs/)")
    parser.add_argument("--early-stop", choices=values.EARLY_STOP, default="none",
                        help="none (default): every proxy trial runs all its epochs; asha: Ray "
                        "Tune's ASHA stops weak trials at half the epochs (on a 3-epoch proxy "
                        "its first rung does not predict the end beyond noise)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each proxy trial's checkpoint.pt (~57 MB each on MobileViT-S; "
                        "default: deleted when the trial ends, its metrics and result stay)")
    _add_data_recipe_args(parser, data_default="digits",
                          recipe_default="proxy_fmnist for fashion-mnist, proxy otherwise")
    _add_ray_args(parser, budget_example="6gpus, 2cpus, 4gpus,12h", cpus_per_trial=True)


def _search(args: argparse.Namespace) -> int:
    from rhosearch.core.space import load_search_space
    from rhosearch.deploy.latency import LatencySettings
    from rhosearch.drivers.search import SearchSettings, all_failed, next_steps, run_search
    from rhosearch.execution.resources import parse_budget
    from rhosearch.output import folder_size, human_size, print_frame
    from rhosearch.report.html import write_report

    settings = SearchSettings(
        study=args.study, space=load_search_space(args.space), trials=args.trials,
        budget=args.budget or parse_budget(None), data=args.data, data_root=args.data_root,
        download=args.download, recipe=args.recipe, recipe_overrides=_recipe_overrides(args),
        sampler=args.sampler, seed=args.seed, storage=args.storage, reports_dir=args.reports_dir,
        resume=args.resume, address=args.address, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, gmacs_objective=args.gmacs_objective,
        latency_objective=args.latency_objective,
        latency=LatencySettings(clock=args.latency_clock, max_seconds=10.0), stage=args.stage,
        noise_seeds=args.noise_seeds, early_stop=args.early_stop,
        resolve_seeds=args.resolve_seeds, resolve_contenders=args.resolve_contenders,
        enqueue_oneshot_front=args.enqueue_oneshot_front, head_seeds=args.head_seeds,
        head_trunks=args.head_trunks, enqueue_head_front=args.enqueue_head_front,
        keep_checkpoints=args.keep_checkpoints, storage_path=args.storage_path,
    )
    print(f"search {settings.study!r}: {settings.trials} trials on {settings.budget.describe()}, "
          f"space {settings.space.name} ({settings.space.size} rho vectors), data {settings.data}")
    outcome = run_search(settings)
    columns = ["name", "params", "overhead_params", "top1", "top1_lo", "top1_hi",
               "vs_baseline", "top1_diff", "p_value", "number"]
    if args.latency_objective:
        columns[3:3] = ["overhead_ms", "overhead_ms_lo", "overhead_ms_hi", "latency_source"]
    rounding = {"top1": 2, "top1_lo": 1, "top1_hi": 1, "top1_diff": 2, "p_value": 4}
    trials = outcome["trials"]
    if (trials["stage"] == Stage.HEAD).any():
        from rhosearch.record.study import pareto_front

        head_columns = [c for c in columns if c in trials.columns and c != "params"]
        print_frame(pareto_front(trials, stage=Stage.HEAD)[head_columns].round(rounding),
                    title="Pareto front (head stage, frozen trunks: a screen): mean top-1 "
                    "[95% interval over trunks] vs overhead params")
    front = outcome["front"][columns].round(rounding)
    print_frame(front, title="Pareto front (proxy): top-1 [95% interval] vs overhead params "
                f"({PRICED})")
    noise = outcome["noise"]
    if noise and noise.get("std") is not None:
        print(f"noise floor: baseline top-1 {noise['mean']:.2f}% ± {noise['std']:.2f} pts "
              f"(std over {len(noise['top1'])} seeds), validation set {noise['n_val']} images "
              f"(1 image = {100 / noise['n_val']:.2f} pts)")
    fidelity = outcome["fidelity"]
    if fidelity:
        print(f"one-shot vs proxy rank agreement: Kendall's tau = {fidelity['text']}")
    print(outcome["verdict"])
    folder = outcome["folder"]
    report = write_report(settings.study, storage=settings.storage, reports_dir=args.reports_dir)
    print(f"trials: {folder / 'trials.csv'}\nstudy:  {settings.storage or folder / 'study.db'}"
          f"\nreport: {report}\ndisk:   {human_size(folder_size(folder))} in {folder}"
          + ("" if args.keep_checkpoints else " (proxy checkpoints deleted; --keep-checkpoints)"))
    if outcome["interrupted"]:
        print(f"interrupted; resume with: {_resume_command(args.argv)}", file=sys.stderr)
        return _interrupted_code()
    failed = all_failed(outcome["trials"])
    if failed:
        print(f"rhosearch search: {failed}", file=sys.stderr)
        return 1
    print("\n".join(next_steps(settings, outcome, command=_command_line)))
    return 0


# --- report -----------------------------------------------------------------------------------


def _report_args(parser: argparse.ArgumentParser) -> None:
    _add_study_args(parser, new=False)
    parser.add_argument("--format", choices=("html", "csv", "json"), default="html",
                        help="html: write REPORTS_DIR/STUDY/index.html; csv/json: print the "
                        "front")
    parser.add_argument("--x", choices=("overhead", "gmacs", "latency"), default="overhead",
                        help="the cost objective of the front (default: %(default)s)")


def _report(args: argparse.Namespace) -> int:
    from rhosearch.report.front import X_COLUMNS, front_table
    from rhosearch.report.html import write_report

    x = X_COLUMNS[args.x]
    if args.format == "html":
        print(write_report(args.study, storage=args.storage, reports_dir=args.reports_dir, x=x))
        return 0
    from rhosearch.output import print_frame
    from rhosearch.record.study import load_study, trials_frame

    study = load_study(args.study, storage=args.storage, reports_dir=args.reports_dir)
    print_frame(front_table(trials_frame(study), x=x), fmt=args.format)
    return 0


# --- train ------------------------------------------------------------------------------------


def _train_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    _add_data_recipe_args(parser, data_default="digits",
                          recipe_default="proxy_fmnist for fashion-mnist, proxy otherwise")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/CONFIG_KEY)")
    parser.add_argument("--seed", type=values.SEED, default=0,
                        help="seed of the weights and the data order (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train(args: argparse.Namespace) -> int:
    from rhosearch.training.train import load_recipe, train_config

    config = _configs_from_args(args)[0]
    from rhosearch.training.datasets import proxy_recipe_for

    recipe = load_recipe(args.recipe or proxy_recipe_for(args.data), _recipe_overrides(args))
    out = args.out or Path("runs") / config.key
    values.check_device(args.device)
    values.check_run_folder(out, resume=args.resume, flag="--out")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        result = train_config(
            config, data=args.data, recipe=recipe, out_dir=out, seed=args.seed,
            resume=args.resume, data_root=args.data_root, download=args.download,
            device=args.device, progress=not args.no_progress,
        )
    except RhoSearchError:  # refused (e.g. an image found broken): no empty run folder stays
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something to keep
                folder.rmdir()
        raise
    ema = f" (EMA {result['ema_top1']:.2f}%)" if result["ema_top1"] is not None else ""
    top1 = "n/a" if result["top1"] is None else f"{result['top1']:.2f}%"
    top5 = "n/a" if result["top5"] is None else f"{result['top5']:.2f}%"
    print(f"{result['name']} [{result['rho']}] {result['status']}: top-1 {top1}{ema}, "
          f"top-5 {top5}, {result['params'] / 1e6:.3f}M params, {result['gmacs']:.3f} GMACs "
          f"at {result['resolution']}px, {result['epochs_done']} epochs in {result['wall_s']:.0f}s"
          f" -> {out / 'result.json'}")
    return 0 if result["status"] == Status.OK else 1


# --- train-best -------------------------------------------------------------------------------


def _train_best_args(parser: argparse.ArgumentParser) -> None:
    _add_study_args(parser, new=False)
    parser.add_argument("--resume", action="store_true",
                        help="continue each finalist from its checkpoint")
    parser.add_argument("--pick", type=values.nonempty, default="knee,best",
                        help="knee | best | under=PARAMS (e.g. under=5.7M), comma-separated "
                        "(default: %(default)s; the baseline is always added)")
    parser.add_argument("--top", type=values.whole(1, 100), default=1,
                        help="take the K first of each pick")
    parser.add_argument("--seed", type=values.SEED, default=0,
                        help="seed of the weights and the data order (default: 0)")
    parser.add_argument("--seeds", type=values.whole(1, 100), default=3, metavar="N",
                        help="train each finalist and the baseline control with N seeds "
                        "(seed ... seed+N-1) and compare them pairwise, Holm over the "
                        "finalists (default: 3; 1 gives no test)")
    parser.add_argument("--workers-per-finalist", type=values.whole(1, 1024), default=1,
                        help="N > 1: train each finalist on N workers with DDP (Ray Train)")
    _add_data_recipe_args(parser, data_default=None,
                          recipe_default="full, or full_small on small-image data sets")
    _add_ray_args(parser, budget_example="2cpus, 8gpus")


def _train_best(args: argparse.Namespace) -> int:
    from rhosearch.drivers.finalists import FinalistSettings, train_finalists
    from rhosearch.execution.resources import parse_budget
    from rhosearch.output import print_frame

    settings = FinalistSettings(
        study=args.study, storage=args.storage, reports_dir=args.reports_dir, pick=args.pick,
        top=args.top, budget=args.budget or parse_budget(None), gpus_per_trial=args.gpus_per_trial,
        workers_per_finalist=args.workers_per_finalist, recipe=args.recipe,
        recipe_overrides=_recipe_overrides(args), data=args.data, data_root=args.data_root,
        download=args.download, seed=args.seed, seeds=args.seeds, resume=args.resume,
        address=args.address, storage_path=args.storage_path,
    )
    outcome = train_finalists(settings)
    frame = outcome["finalists"]
    columns = ["pick", "name", "overhead_params", "seeds", "top1", "top1_std", "vs_baseline",
               "top1_diff", "p_value", "epochs_done", "status"]
    print_frame(frame[columns].round({"top1": 2, "top1_std": 2, "top1_diff": 2,
                                      "p_value": 4}),
                title="Finalists (full stage): top-1 (EMA when on), mean and std over seeds, "
                "paired against the baseline control, at 5 % over the finalists (Holm)")
    weights = outcome["runs"].dropna(subset=["weights"])
    for run in weights.itertuples():
        print(f"weights: {run.weights}   ({run.name} [{run.rho}], seed {run.seed})")
    print(f"finalists: {outcome['csv']}\ntrials:    {outcome['csv'].parent / 'trials.csv'}"
          f"\nreport:    {outcome['report']}   ({outcome['wall_s']:.0f}s)")
    if len(weights):
        print("next: " + _command_line(["export", "--weights", weights.iloc[0]["weights"],
                                         "--out", str(Path(weights.iloc[0]["weights"])
                                                      .with_suffix(".onnx"))]))
    return 0 if (frame["status"] == Status.OK).all() else 1


# --- export -----------------------------------------------------------------------------------


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True,
                        help="a model.safetensors written by rhosearch")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--resolution", type=values.RESOLUTION,
                        help="input size of the parity check and of a --static-size export "
                        "(default: the resolution the weights were trained at, from their "
                        "metadata; 256 when they have none)")
    parser.add_argument("--static-size", action="store_true",
                        help="fix the input's height and width at --resolution (default: "
                        "dynamic batch, height and width; the export takes a few seconds "
                        "instead of ~15-30 s)")


def _export(args: argparse.Namespace) -> int:
    from rhosearch.deploy.export import ONNX_ATOL, export_onnx, load_model, weights_resolution

    values.check_new_file(args.out, flag="--out", source=args.weights, source_flag="--weights")
    model = load_model(args.weights)
    trained_at = weights_resolution(args.weights)
    resolution = args.resolution or trained_at or 256
    exported = export_onnx(model, args.out, resolution=resolution,
                           dynamic_size=not args.static_size)
    source = ("--resolution" if args.resolution else
              "the weights' metadata" if trained_at else "default, not in the weights' metadata")
    shapes = " and ".join("x".join(map(str, s)) for s in exported.checked_shapes)
    print(f"{model.config.name} [{model.config.rho_text}] -> {exported.path} "
          f"({exported.exporter} exporter, input {exported.input_spec}; {resolution} px from "
          f"{source}); onnxruntime vs PyTorch on random {shapes} batches: max abs diff "
          f"{exported.max_abs_diff:.2e} (<= {ONNX_ATOL:g})")
    return 0


# --- latency ----------------------------------------------------------------------------------


def _latency_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, allow_all=True)
    parser.add_argument("--space", type=values.nonempty,
                        help="time every configuration of a search space (a name in "
                        "search_spaces/ or a .yaml path) instead of --preset/--rho")
    parser.add_argument("--resolution", type=values.whole(32, 4096), default=256,
                        help="input size (default: 256; the export takes 32 and above)")
    parser.add_argument("--batch", type=values.whole(1, 4096), default=1,
                        help="images per run (default: 1)")
    parser.add_argument("--threads", type=values.whole(1, 1024), default=1,
                        help="onnxruntime intra-op threads (default: 1)")
    parser.add_argument("--provider", choices=("cpu", "cuda", "all"), default="cpu",
                        help="onnxruntime execution provider; all: cpu, then cuda where "
                        "onnxruntime has it (default: cpu)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall (default): latency; cpu: the thread's CPU time, which a "
                        "loaded machine's waiting leaves out (--threads 1 only)")
    parser.add_argument("--max-seconds", type=values.finite(0, 86_400, above_low=True),
                        default=30.0, help="per configuration, stop adding rounds after this "
                        "long and call a difference still inside its interval 'within noise' "
                        "(default: 30)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where the latency table is kept, as latency.csv (default: reports)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table: for people (default); csv, json: for programs")


def _latency(args: argparse.Namespace) -> int:
    from rhosearch.deploy.latency import latency_report

    if args.space and (args.preset or args.rho):
        raise RhoSearchError("--space times a whole space; give it without --preset or --rho")
    values.check_writable_folder(args.reports_dir, flag="--reports-dir")
    if args.space:
        from rhosearch.core.space import load_search_space

        configs = list(load_search_space(args.space).configs())
    else:
        configs = _configs_from_args(args, allow_all=True)
    providers = ("cpu", "cuda") if args.provider == "all" else (args.provider,)
    return latency_report(
        configs, providers=providers, resolution=args.resolution, batch=args.batch,
        threads=args.threads, clock=args.clock, max_seconds=args.max_seconds,
        reports_dir=args.reports_dir, fmt=args.format)

COMMANDS: list[Command] = [
    ("count", "params, overhead and GMACs of configurations", _count_args, _count),
    ("train", "train one configuration (paper recipe or a proxy)", _train_args, _train),
    ("search", "multi-objective rho search (Optuna + Ray Tune)", _search_args, _search),
    ("report", "interactive Pareto report of a study (HTML, CSV, JSON)", _report_args, _report),
    ("train-best", "train the search's finalists in full (Ray; DDP with Ray Train)",
     _train_best_args, _train_best),
    ("export", "export trained weights to ONNX, checked against PyTorch", _export_args, _export),
    ("latency", "ONNX Runtime latency of configurations against the baseline, interleaved",
     _latency_args, _latency),
]


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (the project's error convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "argument --epochs: 0 is outside 1 .. 10000" -> "--epochs 0 is outside 1 .. 10000"
        message = re.sub(r"^argument (-[-\w]+)(/[-\w]+)*: ", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rhosearch",
        description="Architecture search over ExMobileViT's ExShortcut ratios (rho).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_args, run in COMMANDS:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_args(sub)
        sub.set_defaults(run=run)
    return parser


def _quiet_library_output(command: str) -> None:
    """Ray reads these once, when it is imported: worker lines unfolded (no "[repeated 3x]"
    hiding per-epoch lines) and, when output goes to a file, without ANSI colour codes. Ray's
    note that token authentication is on and Optuna's "A new study created in RDB" are for
    their developers, not for a rhosearch user: the commands print what they did."""
    import logging
    import os

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR)
    if command in ("search", "report", "train-best"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


_NOT_SET = object()


_TERMINATED: list[int] = []  # set by the handler: an interrupt may reach us re-raised by Ray


def _raise_terminated(signum: int, frame: object) -> None:
    _TERMINATED.append(signum)
    raise Terminated()


def _interrupted_code() -> int:
    """143 after SIGTERM (128 + 15), 130 after Ctrl-C (128 + 2), as shells report them."""
    return 143 if _TERMINATED else 130


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; `argv` defaults to the process's own arguments (the console script).

    The only place rhosearch reads `sys.argv`: the rest of the package gets what it needs as
    arguments (the resume hint is built from `argv`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # argparse itself exits with code 2 on a bad flag
    args.argv = argv
    _quiet_library_output(args.command)
    # SIGTERM (a scheduler, `kill`) stops a command as Ctrl-C does: the drivers mark their
    # running trials and say how to resume; `start_ray` keeps Ray from replacing this handler.
    in_main = threading.current_thread() is threading.main_thread()
    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else _NOT_SET
    try:
        return args.run(args)
    except RhoSearchError as exc:
        print(f"rhosearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = (f"; resume with: {_resume_command(args.argv)}"
                  if args.command in ("train", "train-best") else "")
        print(f"rhosearch {args.command}: interrupted{resume}", file=sys.stderr)
        return _interrupted_code()
    finally:
        if previous is not _NOT_SET:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
