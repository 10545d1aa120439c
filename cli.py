"""rhosearch's command line: parses arguments and calls the package. No logic lives here.

    rhosearch count --preset all
    rhosearch --help
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rhosearch.errors import RhoSearchError

# Each subcommand: a function adding its arguments and a function running it. Imports of the
# heavy modules (torch, ray) happen inside the runners so `--help` stays fast.
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _add_config_args(parser: argparse.ArgumentParser, *, allow_all: bool = False) -> None:
    which = parser.add_mutually_exclusive_group()
    preset_help = "a paper preset (baseline, exmvit-576 ... exmvit-928)"
    which.add_argument("--preset", help=preset_help + (" or 'all'" if allow_all else ""))
    which.add_argument("--rho", help="rho_3,rho_4,rho_5 or rho_1..rho_5, e.g. 4/3,5/4,4")
    parser.add_argument("--backbone", default="mobilevit_s",
                        help="mobilevit_s | mobilevit_xs | mobilevit_xxs (default: %(default)s)")


def _configs_from_args(args: argparse.Namespace, *, allow_all: bool = False) -> list:
    from rhosearch.space import RhoConfig, get_preset, load_presets

    if args.rho:
        return [RhoConfig.parse(args.rho, backbone=args.backbone)]
    if allow_all and (args.preset or "all").lower() == "all":
        return [p.config for p in load_presets().values()]
    return [get_preset(args.preset or "baseline").config]


# --- count ------------------------------------------------------------------------------------


def _count_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, allow_all=True)
    parser.add_argument("--resolution", type=int, default=256, help="input size (default: 256)")
    parser.add_argument("--classes", type=int, default=1000, help="classes (default: 1000)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--method", choices=("fvcore", "closed-form"), default="fvcore",
                        help="build and trace each model, or price it by formula")


def _count(args: argparse.Namespace) -> int:
    from rhosearch.cost import cost_table
    from rhosearch.output import print_frame

    configs = _configs_from_args(args, allow_all=True)
    frame, notes = cost_table(
        configs, resolution=args.resolution, num_classes=args.classes,
        measure=args.method == "fvcore",
    )
    print_frame(frame, fmt=args.format, notes=notes)
    return 0


COMMANDS: list[Command] = [
    ("count", "params, overhead and GMACs of configurations", _count_args, _count),
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself exits with code 2 on a bad flag
    try:
        return args.run(args)
    except RhoSearchError as exc:
        print(f"rhosearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rhosearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
