"""rhosearch's command line: parses arguments and calls the package. No logic lives here.

    rhosearch count --preset all
    rhosearch --help

Longer than ~400 lines because it is seven commands' flags and help texts side by side, each
with its one-line checks; every runner only parses, calls one package function and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from rhosearch.errors import RhoSearchError, Terminated

# Each subcommand: a function adding its arguments and a function running it. Imports of the
# heavy modules (torch, ray) happen inside the runners so `--help` stays fast.
Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]


def _add_config_args(parser: argparse.ArgumentParser, *, allow_all: bool = False) -> None:
    which = parser.add_mutually_exclusive_group()
    preset_help = "a paper preset (baseline, exmvit-576 ... exmvit-928)"
    which.add_argument("--preset", help=preset_help + (" or 'all'" if allow_all else ""))
    which.add_argument("--rho", help="rho_3,rho_4,rho_5 or rho_1..rho_5, e.g. 4/3,5/4,4")
    parser.add_argument("--backbone", help="mobilevit_s | mobilevit_xs | mobilevit_xxs, for "
                        "--rho (default: mobilevit_s; presets have their own)")


def _configs_from_args(args: argparse.Namespace, *, allow_all: bool = False) -> list:
    from rhosearch.core.space import BACKBONE_WIDTHS, RhoConfig, get_preset, load_presets

    if args.rho:
        return [RhoConfig.parse(args.rho, backbone=args.backbone or "mobilevit_s")]
    if allow_all and (args.preset or "all").lower() == "all":
        configs = [p.config for p in load_presets().values()]
    else:
        configs = [get_preset(args.preset or "baseline").config]
    if args.backbone is not None:  # a preset is a whole configuration, backbone included
        if args.backbone not in BACKBONE_WIDTHS:
            raise RhoSearchError(f"--backbone {args.backbone!r} is unknown; choose one of: "
                                 f"{', '.join(BACKBONE_WIDTHS)}")
        other = [c for c in configs if c.backbone != args.backbone]
        if other:
            raise RhoSearchError(f"--backbone {args.backbone}: the preset is a "
                                 f"{other[0].backbone} configuration; give --rho with --backbone")
    return configs


def _seed(text: str) -> int:
    """A `--seed`: what numpy, torch and Optuna's samplers all accept (below 2**32), with room
    for the noise floor's seeds, seed + 1 ... seed + K."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= seed < 2**31:
        raise argparse.ArgumentTypeError(f"{seed} is outside 0 .. {2**31 - 1}")
    return seed


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


def _add_data_recipe_args(parser: argparse.ArgumentParser) -> None:
    """What to train on and how: shared by `search` and `train`."""
    parser.add_argument("--data", default="digits",
                        help="digits | cifar10 | cifar100 | PATH (ImageFolder: train/, val/)")
    parser.add_argument("--data-root", type=Path, help="where cifar10/cifar100 files live")
    parser.add_argument("--download", action="store_true", help="download CIFAR if missing")
    parser.add_argument("--recipe", help=f"{_recipe_names()} or a recipe .yaml path "
                        "(default: proxy_fmnist for fashion-mnist, proxy otherwise)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe field (repeatable)")


def _resume_command(argv: Sequence[str]) -> str:
    """The command line that was run, with `--resume` added: what to type after an interrupt."""
    import shlex

    return shlex.join(["rhosearch", *(a for a in argv if a != "--resume"), "--resume"])


# --- count ------------------------------------------------------------------------------------


def _count_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, allow_all=True)
    parser.add_argument("--resolution", type=int, default=256, help="input size (default: 256)")
    parser.add_argument("--classes", type=int, default=1000, help="classes (default: 1000)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table: for people (default); csv, json: for programs")
    parser.add_argument("--method", choices=("fvcore", "closed-form"), default="fvcore",
                        help="fvcore (default): build each model and count its traced MACs; "
                        "closed-form: price it by formula, without building it (same counts)")


def _count(args: argparse.Namespace) -> int:
    from rhosearch.core.cost import cost_table
    from rhosearch.output import print_frame

    if args.resolution < 16:  # MobileViT halves the input 5 times; below 16 a conv has no room
        raise RhoSearchError(f"--resolution {args.resolution}: give at least 16")
    if args.classes < 1:
        raise RhoSearchError(f"--classes {args.classes}: give at least 1")
    configs = _configs_from_args(args, allow_all=True)
    frame, notes = cost_table(
        configs, resolution=args.resolution, num_classes=args.classes,
        measure=args.method == "fvcore",
    )
    print_frame(frame, fmt=args.format, notes=notes)
    return 0


# --- search -----------------------------------------------------------------------------------


def _search_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", help="resources, e.g. 6gpus, 2cpus, 4gpus,12h "
                        "(default: all local CPUs)")
    parser.add_argument("--trials", type=int, default=12,
                        help="proxy trials to train (default: 12)")
    parser.add_argument("--study", default="default", help="study name (default: %(default)s)")
    parser.add_argument("--space", default="exmobilevit_s",
                        help="search space name in search_spaces/ or a .yaml path "
                        "(default: %(default)s)")
    _add_data_recipe_args(parser)
    parser.add_argument("--sampler", default="gp", choices=("gp", "tpe", "nsga2", "random"),
                        help="the Optuna sampler that proposes rho vectors (default: "
                        "%(default)s, the best of benchmarks/sampler_table.py; see README)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the sampler, the weights and the data order (default: 0)")
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in reports/STUDY/)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where study folders go (default: reports)")
    parser.add_argument("--resume", action="store_true", help="continue an existing study")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each proxy trial's checkpoint.pt (~57 MB each on MobileViT-S; "
                        "default: deleted when the trial ends, its metrics and result stay)")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto, ray://host:10001)")
    parser.add_argument("--storage-path", metavar="URI",
                        help="where Ray jobs keep checkpoints and files on their way to this "
                        "driver: a folder every Ray node can write, or a bucket (s3://..., "
                        "gs://...) (default: reports/STUDY/ray on this machine)")
    parser.add_argument("--gpus-per-trial", type=float, help="fractional allowed, e.g. 0.5")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: 1)")
    parser.add_argument("--stage", choices=("all", "oneshot", "proxy"), default="all",
                        help="all (default): train the supernet, score the space, then proxy "
                        "trials starting from its front; oneshot or proxy alone")
    parser.add_argument("--gmacs-objective", action="store_true",
                        help="minimise GMACs as a third objective")
    parser.add_argument("--noise-seeds", type=int, default=3, metavar="K",
                        help="also train the baseline with K more seeds to measure the noise "
                        "floor every result is judged against (default: 3; 0: off)")
    parser.add_argument("--enqueue-oneshot-front", action="store_true",
                        help="queue the one-shot front as the first proxy trials after the "
                        "paper's (off: the one-shot ranking does not agree with longer "
                        "training beyond noise, see README)")
    parser.add_argument("--early-stop", choices=("none", "asha"), default="none",
                        help="none (default): every proxy trial runs all its epochs; asha: Ray "
                        "Tune's ASHA stops weak trials at half the epochs (see README: on a "
                        "3-epoch proxy its first rung does not predict the end beyond noise)")


def _recipe_overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise RhoSearchError(f"--set {item!r}: write KEY=VALUE, e.g. --set epochs=3")
        overrides[key.strip()] = value.strip()
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return overrides


def _search(args: argparse.Namespace) -> int:
    import optuna

    from rhosearch.core.space import load_search_space
    from rhosearch.drivers.search import SearchSettings, run_search
    from rhosearch.execution.resources import parse_budget
    from rhosearch.output import folder_size, human_size, print_frame
    from rhosearch.report.html import write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines say it all
    if args.trials < 1:
        raise RhoSearchError(f"--trials {args.trials}: give at least 1")
    settings = SearchSettings(
        study=args.study, space=load_search_space(args.space), trials=args.trials,
        budget=parse_budget(args.budget), data=args.data, data_root=args.data_root,
        download=args.download, recipe=args.recipe, recipe_overrides=_recipe_overrides(args),
        sampler=args.sampler, seed=args.seed, storage=args.storage, reports_dir=args.reports_dir,
        resume=args.resume, address=args.address, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, gmacs_objective=args.gmacs_objective,
        stage=args.stage, noise_seeds=args.noise_seeds, early_stop=args.early_stop,
        enqueue_oneshot_front=args.enqueue_oneshot_front,
        keep_checkpoints=args.keep_checkpoints, storage_path=args.storage_path,
    )
    print(f"search {settings.study!r}: {settings.trials} trials on {settings.budget.describe()}, "
          f"space {settings.space.name} ({settings.space.size} rho vectors), data {settings.data}")
    outcome = run_search(settings)
    columns = ["name", "params", "overhead_params", "top1", "top1_lo", "top1_hi",
               "vs_baseline", "number"]
    front = outcome["front"][columns].round({"top1": 2, "top1_lo": 1, "top1_hi": 1})
    print_frame(front, title="Pareto front (proxy): top-1 [95% interval] vs overhead params "
                "(priced at 256 px, 1000 classes)")
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
    return 0


# --- report -----------------------------------------------------------------------------------


def _report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in reports/STUDY/)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where study folders are (default: reports)")
    parser.add_argument("--format", choices=("html", "csv", "json"), default="html",
                        help="html: write reports/STUDY/index.html; csv/json: print the front")
    parser.add_argument("--x", choices=("overhead", "gmacs"), default="overhead",
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
    _add_data_recipe_args(parser)
    parser.add_argument("--out", type=Path, help="run folder (default: runs/CONFIG_KEY)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the weights and the data order (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train(args: argparse.Namespace) -> int:
    from rhosearch.training.train import load_recipe, train_config

    config = _configs_from_args(args)[0]
    from rhosearch.drivers.search import proxy_recipe_for

    recipe = load_recipe(args.recipe or proxy_recipe_for(args.data), _recipe_overrides(args))
    out = args.out or Path("runs") / config.key
    _check_device(args.device)
    _check_writable(out, flag="--out")
    if not args.resume and any((out / name).exists() for name in RUN_FILES):
        raise RhoSearchError(f"--out {out} holds a run already; add --resume to continue it "
                             "or give another --out (nothing was changed)")
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
    return 0 if result["status"] == "ok" else 1


# What a run folder holds once a run has started (see train.py): never overwritten unasked.
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "result.json")


def _check_device(text: str | None) -> None:
    """Refuses a --device this machine cannot train on, before anything is built."""
    if text is None:
        return
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise RhoSearchError(f"--device {text!r}: write cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise RhoSearchError(f"--device {text}: rhosearch trains on cpu or cuda")
    have = torch.cuda.device_count() if device.type == "cuda" else 1
    if device.type == "cuda" and have == 0:
        raise RhoSearchError(f"--device {text}: this machine has no CUDA GPU; use --device cpu")
    if device.index is not None and device.index >= have:
        raise RhoSearchError(f"--device {text}: this machine has {have} GPU(s), cuda:0 .. "
                             f"cuda:{have - 1}")


def _check_writable(folder: Path, *, flag: str) -> None:
    """Refuses a folder that is a file or cannot be created or written, leaving the disk as
    it was (the probe is an empty folder, removed at once)."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise RhoSearchError(f"{flag} {folder} is a file; give a folder")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RhoSearchError(f"{flag} {folder}: {parent} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(dir=parent, prefix=".rhosearch-probe-")).rmdir()
    except OSError as exc:
        raise RhoSearchError(f"{flag} {folder}: cannot write in {parent} "
                             f"({exc.strerror or exc})") from None


# --- train-best -------------------------------------------------------------------------------


def _train_best_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the searched study")
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in reports/STUDY/)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where study folders are (default: reports)")
    parser.add_argument("--pick", default="knee,best",
                        help="knee | best | under=PARAMS (e.g. under=5.7M), comma-separated "
                        "(default: %(default)s; the baseline is always added)")
    parser.add_argument("--top", type=int, default=1, help="take the K first of each pick")
    parser.add_argument("--budget", help="resources, e.g. 2cpus, 8gpus (default: all local CPUs)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per worker (default: 1 on a "
                        "GPU budget)")
    parser.add_argument("--workers-per-finalist", type=int, default=1,
                        help="N > 1: train each finalist on N workers with DDP (Ray Train)")
    parser.add_argument("--recipe", help=f"{_recipe_names()} or a recipe .yaml path (default: "
                        "full, or full_small on digits/cifar)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe field (repeatable)")
    parser.add_argument("--data", help="data set (default: the one the study searched on)")
    parser.add_argument("--data-root", type=Path, help="where cifar10/cifar100 files live")
    parser.add_argument("--download", action="store_true", help="download CIFAR if missing")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the weights and the data order (default: 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train each finalist and the baseline control with N seeds "
                        "(seed ... seed+N-1) and compare them pairwise (default: 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each finalist from its checkpoint")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto)")
    parser.add_argument("--storage-path", metavar="URI",
                        help="where Ray jobs keep checkpoints and files on their way to this "
                        "driver: a folder every Ray node can write, or a bucket (s3://..., "
                        "gs://...) (default: reports/STUDY/ray on this machine)")


def _train_best(args: argparse.Namespace) -> int:
    from rhosearch.drivers.finalists import FinalistSettings, train_finalists
    from rhosearch.execution.resources import parse_budget
    from rhosearch.output import print_frame

    settings = FinalistSettings(
        study=args.study, storage=args.storage, reports_dir=args.reports_dir, pick=args.pick,
        top=args.top, budget=parse_budget(args.budget), gpus_per_trial=args.gpus_per_trial,
        workers_per_finalist=args.workers_per_finalist, recipe=args.recipe,
        recipe_overrides=_recipe_overrides(args), data=args.data, data_root=args.data_root,
        download=args.download, seed=args.seed, seeds=args.seeds, resume=args.resume,
        address=args.address, storage_path=args.storage_path,
    )
    outcome = train_finalists(settings)
    frame = outcome["finalists"]
    columns = ["pick", "name", "overhead_params", "seeds", "top1", "top1_std", "vs_baseline",
               "epochs_done", "status"]
    print_frame(frame[columns].round(2), title="Finalists (full stage): top-1 (EMA when on), "
                "mean and std over seeds, paired against the baseline control")
    print(f"finalists: {outcome['csv']}   weights: {outcome['folder']}/<key>/model.safetensors"
          f"   report: {outcome['report']}   ({outcome['wall_s']:.0f}s)")
    return 0 if (frame["status"] == "ok").all() else 1


# --- export -----------------------------------------------------------------------------------


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True,
                        help="a model.safetensors written by rhosearch")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--resolution", type=int,
                        help="input size of the parity check and of a --static-size export "
                        "(default: the resolution the weights were trained at, from their "
                        "metadata; 256 when they have none)")
    parser.add_argument("--static-size", action="store_true",
                        help="fix the input's height and width at --resolution (default: "
                        "dynamic batch, height and width; the export takes a few seconds "
                        "instead of ~15-30 s)")


def _export(args: argparse.Namespace) -> int:
    from rhosearch.deploy.export import ONNX_ATOL, export_onnx, load_model, weights_resolution

    if args.resolution is not None and args.resolution < 16:
        raise RhoSearchError(f"--resolution {args.resolution}: give at least 16")
    if args.out.is_dir():
        raise RhoSearchError(f"--out {args.out} is a folder; give the .onnx file to write")
    if args.out.exists() and args.weights.exists() and args.out.samefile(args.weights):
        raise RhoSearchError(f"--out {args.out} is the --weights file; the export would "
                             "overwrite its own input (give another --out)")
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


COMMANDS: list[Command] = [
    ("count", "params, overhead and GMACs of configurations", _count_args, _count),
    ("train", "train one configuration (paper recipe or a proxy)", _train_args, _train),
    ("search", "multi-objective rho search (Optuna + Ray Tune)", _search_args, _search),
    ("report", "interactive Pareto report of a study (HTML, CSV, JSON)", _report_args, _report),
    ("train-best", "train the search's finalists in full (Ray; DDP with Ray Train)",
     _train_best_args, _train_best),
    ("export", "export trained weights to ONNX, checked against PyTorch", _export_args, _export),
]


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (the project's error convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
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


def _quiet_ray_output() -> None:
    """Ray reads these once, when it is imported: worker lines unfolded (no "[repeated 3x]"
    hiding per-epoch lines) and, when output goes to a file, without ANSI colour codes."""
    import os

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


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
    _quiet_ray_output()
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
