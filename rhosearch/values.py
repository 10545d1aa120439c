"""Every kind of value a user hands rhosearch, checked once, at the edge, before anything is made.

    parser.add_argument("--epochs", type=values.EPOCHS)      # argparse calls the checker
    budget = values.parse_budget("2cpus,1h")                  # or the package does

One checker per KIND of value (a bounded whole number, a finite number, a study name, a
budget, a YAML file, a file to read, a place to write), so a rule holds for every flag and file
of that kind instead of for the cases someone thought of. Checkers used as argparse `type=`
raise `argparse.ArgumentTypeError` (argparse names the flag and exits with code 2); the others
raise `RhoSearchError`. The lowest layer: it imports nothing from the package but errors.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhosearch.errors import RhoSearchError
from rhosearch.host import usable_cpus

__all__ = [
    "Budget", "CLASSES", "EARLY_STOP", "EPOCHS", "RESOLUTION", "SAMPLERS", "SEED",
    "YAML_MAX_BYTES", "YAML_MAX_NODES", "at_least", "check_device", "check_new_file",
    "check_regular_file", "check_writable_folder", "finite", "key_value", "load_yaml",
    "nonempty", "one_of", "parse_budget", "read_only_sqlite", "study_name", "whole",
]


# --- numbers ----------------------------------------------------------------------------------


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in `low .. high` (a size is bounded: nothing plans
    100,000,000 epochs up front, nothing prices a 10**9-class head)."""
    def parse(text: str) -> int:
        try:
            number = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is outside {low} .. {high}")
        return number
    parse.__name__ = "whole number"
    return parse


def finite(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in `low .. high` (`nan` and `inf` never pass; with
    `above_low`, `low` itself does not either)."""
    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if number < low or number > high or (above_low and number == low):
            bound = f"above {low:g}" if above_low else f"{low:g}"
            raise argparse.ArgumentTypeError(f"{number:g} is outside {bound} .. {high:g}")
        return number
    parse.__name__ = "number"
    return parse


# What numpy, torch and Optuna's samplers all accept (below 2**32), with room for the noise
# floor's seeds, seed + 1 ... seed + K.
SEED = whole(0, 2**31 - 1)
EPOCHS = whole(1, 10_000)
RESOLUTION = whole(16, 4096)  # MobileViT halves the input 5 times: below 16 a conv has no room
CLASSES = whole(1, 100_000)


def nonempty(text: str) -> str:
    """An argparse type: text with something in it (`--rho ""` is a mistake, not "all")."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("'' is empty; give a value")
    return str(text).strip()


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: `KEY=VALUE` (`--set epochs=3`)."""
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --set epochs=3")
    return key.strip(), value.strip()


# --- settings objects -------------------------------------------------------------------------
# The checks a settings object (`SearchSettings`, `FinalistSettings`) runs on itself when it is
# made, whoever made it (the CLI, a test, a script): one line, before anything is created.

# What `--sampler` and `--early-stop` may name: the CLI's choices and the settings' check.
SAMPLERS = ("gp", "tpe", "nsga2", "random")
EARLY_STOP = ("none", "asha")


def one_of(value: str, choices: tuple[str, ...], *, what: str) -> None:
    """Refuses a name outside `choices`: `unknown <what> 'x'; choose one of: a, b`."""
    if value not in choices:
        raise RhoSearchError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def at_least(value: int, low: int, *, flag: str, hint: str) -> None:
    """Refuses a count below `low`: `<flag> <value>: <hint>`."""
    if value < low:
        raise RhoSearchError(f"{flag} {value}: {hint}")


# --- names ------------------------------------------------------------------------------------

_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def study_name(text: str) -> str:
    """A study name: a folder name on every system and an Optuna study name (`::` is ours),
    the same rule for every command."""
    if not _STUDY_NAME.fullmatch(str(text)):
        raise argparse.ArgumentTypeError(
            f"{str(text)[:40]!r}{'...' if len(str(text)) > 40 else ''} is not a study name; use "
            "up to 100 letters, digits, '.', '-' or '_', starting with a letter or digit")
    return str(text)


# --- resources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Resources for a search: CPUs and/or GPUs, and an optional wall-time limit."""

    cpus: float | None = None
    gpus: float = 0
    wall_s: float | None = None

    def describe(self) -> str:
        parts = [f"{self.gpus:g} GPU" if self.gpus else "",
                 f"{self.cpus:g} CPU" if self.cpus else ""]
        if self.wall_s:
            parts.append(f"{self.wall_s / 3600:g} h")
        return ", ".join(p for p in parts if p)


_BUDGET_PART = re.compile(r"^(\d+(?:\.\d+)?)(gpus?|cpus?|h|m|s)$")
_TIME_UNITS = {"h": 3600, "m": 60, "s": 1}
_MOST = {"cpu": 100_000, "gpu": 10_000, "wall_s": 366 * 24 * 3600}


def default_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    return usable_cpus()


def parse_budget(text: str | None) -> Budget:
    """Parses `6gpus`, `2cpus`, `4gpus,12h`, `8cpus,1gpu,30m`; None means all local CPUs.

    CPUs are whole (Ray starts with a whole number of them), GPUs may be a fraction, a time is
    above zero (`0h` is no budget at all, not an unlimited one)."""
    if text is None:
        return Budget(cpus=float(default_cpus()))
    values: dict[str, float] = {}
    for part in (p.strip().lower() for p in str(text).split(",")):
        match = _BUDGET_PART.match(part)
        if not match:
            raise RhoSearchError(
                f"budget {text!r}: cannot read {part!r}; write e.g. 6gpus, 2cpus or 4gpus,12h")
        number, unit = float(match.group(1)), match.group(2)
        kind = "wall_s" if unit in _TIME_UNITS else unit.rstrip("s")
        if kind in values:
            raise RhoSearchError(f"budget {text!r}: {kind.replace('_s', '')} given twice")
        value = number * _TIME_UNITS[unit] if unit in _TIME_UNITS else number
        if kind == "cpu" and not number.is_integer():
            raise RhoSearchError(f"budget {text!r}: {part} is not a whole number of CPUs (Ray "
                                 f"starts with whole CPUs); write e.g. {max(1, int(number))}cpus")
        if kind == "wall_s" and value <= 0:
            raise RhoSearchError(f"budget {text!r}: {part} leaves no time; give a time above "
                                 "zero or none (no time limit)")
        if value > _MOST[kind]:
            raise RhoSearchError(f"budget {text!r}: {part} is more than {_MOST[kind]:g}")
        values[kind] = value
    if not values.get("cpu") and not values.get("gpu"):
        raise RhoSearchError(f"budget {text!r} names no CPUs or GPUs; write e.g. 2cpus or 6gpus")
    return Budget(cpus=values.get("cpu"), gpus=values.get("gpu", 0), wall_s=values.get("wall_s"))


def budget(text: str) -> Budget:
    """An argparse type: `parse_budget`, refused before anything starts."""
    try:
        return parse_budget(text)
    except RhoSearchError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: " + str(exc).removeprefix(f"budget {text!r}: ").removeprefix(
                f"budget {text!r} ")) from None


def check_device(text: str | None) -> None:
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


# --- files rhosearch reads --------------------------------------------------------------------

YAML_MAX_BYTES = 1_000_000
YAML_MAX_NODES = 100_000  # after aliases are expanded: a space or recipe has a few hundred


def check_regular_file(path: Path, *, what: str) -> os.stat_result:
    """Refuses anything but a regular file (a FIFO would block the first read forever, a
    device file never ends, a symlink loop raises ELOOP) without opening it."""
    try:
        info = os.stat(path)  # follows a symlink to its target; a loop raises ELOOP
    except OSError as exc:
        raise RhoSearchError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else
                "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file")
        raise RhoSearchError(f"{what} {path} is {kind}; give a regular file")
    return info


def check_file_tree(root: Path, *, suffixes: tuple[str, ...], what: str) -> int:
    """Walks `root` (following folder symlinks, as torchvision's ImageFolder does) and refuses
    a symlink loop, and any file with one of `suffixes` that is not a regular file (a FIFO, a
    device, a dangling or looping link), before anything opens one; returns the files counted.
    """
    seen: set[str] = set()
    count = 0

    def refuse(exc: OSError) -> None:
        raise RhoSearchError(f"{what} {exc.filename}: cannot read it "
                             f"({exc.strerror or exc})") from None

    for folder, _, files in os.walk(root, followlinks=True, onerror=refuse):
        real = os.path.realpath(folder)
        if real in seen:
            raise RhoSearchError(f"{what} {folder} leads back to {real} (a symlink loop or a "
                                 "folder linked twice); remove the link")
        seen.add(real)
        for name in files:
            if name.lower().endswith(suffixes):
                check_regular_file(Path(folder) / name, what=what)
                count += 1
    return count


def load_yaml(path: Path, *, what: str) -> Any:
    """A YAML file, read safely: a regular file of at most 1 MB, whose tree (aliases expanded)
    has at most YAML_MAX_NODES nodes, so a 600-byte alias bomb is refused, not expanded."""
    import yaml

    path = Path(path)
    info = check_regular_file(path, what=what)
    if info.st_size > YAML_MAX_BYTES:
        raise RhoSearchError(f"{what} {path} is {info.st_size} bytes; a YAML file rhosearch "
                             f"reads is at most {YAML_MAX_BYTES}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise RhoSearchError(f"{what} {path} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise RhoSearchError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RhoSearchError(f"{what} {path}{line} is not valid YAML; fix its syntax") from None
    if node is None:
        return None
    if _expanded_nodes(node) > YAML_MAX_NODES:
        raise RhoSearchError(f"{what} {path}: its aliases expand to more than {YAML_MAX_NODES} "
                             "values; write the values out")
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, TypeError):  # TypeError: an unhashable key, e.g. `? [a]: 1`
        raise RhoSearchError(f"{what} {path} is not valid YAML; fix its syntax") from None


def _expanded_nodes(root: Any) -> int:
    """How many nodes the tree holds once aliases are expanded, counted without expanding
    (each shared node's count is computed once)."""
    import yaml

    counts: dict[int, int] = {}

    def count(node: Any, depth: int) -> int:
        if depth > 200:
            return YAML_MAX_NODES + 1
        if id(node) in counts:
            return counts[id(node)]
        counts[id(node)] = YAML_MAX_NODES + 1  # a node inside itself (a recursive alias)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += count(child, depth + 1)
            if total > YAML_MAX_NODES:
                break
        counts[id(node)] = total
        return total

    return count(root, 0)


def read_only_sqlite(path: Path) -> str:
    """What a SQLite file is, opened read-only: "optuna" (a study storage), "empty" (0 bytes or
    no tables), "other" (someone's own database), "missing"; nothing is written to it."""
    import sqlite3

    if not path.exists():
        return "missing"
    if path.is_file() and path.stat().st_size == 0:
        return "empty"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return "other"
    if not tables:
        return "empty"
    return "optuna" if {"studies", "trials", "version_info"} <= tables else "other"


# --- places rhosearch writes ------------------------------------------------------------------


def check_writable_folder(folder: Path, *, flag: str) -> None:
    """Refuses a folder that is a file, a symlink, or cannot be created or written, leaving the
    disk as it was (the probe is an empty folder, removed at once)."""
    import tempfile

    folder = Path(folder)
    if folder.is_symlink():
        raise RhoSearchError(f"{flag} {folder} is a symlink; rhosearch writes only into "
                             "folders it can see are real (give the folder it points to)")
    if folder.exists() and not folder.is_dir():
        raise RhoSearchError(f"{flag} {folder} is a file; give a folder")
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RhoSearchError(f"{flag} {folder}: {parent} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(dir=parent, prefix=".rhosearch-probe-")).rmdir()
    except OSError as exc:
        raise RhoSearchError(f"{flag} {folder}: cannot write in {parent} "
                             f"({exc.strerror or exc})") from None


def check_new_file(path: Path, *, flag: str, source: Path | None = None,
                   source_flag: str = "", ours: Callable[[Path], bool] | None = None) -> None:
    """Refuses to write `path` through a symlink, over a folder, over the `source` it is made
    from, or over a file rhosearch did not write (`ours` says whether an existing file is one
    it wrote)."""
    path = Path(path)
    if path.is_symlink():
        raise RhoSearchError(f"{flag} {path} is a symlink; rhosearch does not write through "
                             "one (remove it or give another path)")
    if path.is_dir():
        raise RhoSearchError(f"{flag} {path} is a folder; give a file to write")
    if path.exists() and not path.is_file():
        raise RhoSearchError(f"{flag} {path} is not a regular file; rhosearch does not write "
                             "into it (remove it or give another path)")
    if source is not None and path.exists() and Path(source).exists() \
            and path.samefile(source):
        raise RhoSearchError(f"{flag} {path} is the {source_flag} file; it would overwrite its "
                             f"own input (give another {flag})")
    if path.exists() and ours is not None and not ours(path):
        raise RhoSearchError(f"{flag} {path} exists and was not written by rhosearch; "
                             "move it or give another path (nothing was changed)")


def check_run_folder(out: Path, *, resume: bool, flag: str) -> None:
    """Refuses a run folder rhosearch cannot write, or whose run it would overwrite: a run is
    continued only from its checkpoint (a finished or a finalist's folder has none, and
    starting over there would replace its result)."""
    from rhosearch.vocab import RunFile

    check_writable_folder(out, flag=flag)
    ran = [name for name in (RunFile.CHECKPOINT, RunFile.METRICS, RunFile.RESULT)
           if (Path(out) / name).exists()]
    if ran and not resume:
        raise RhoSearchError(f"{flag} {out} holds a run already; add --resume to continue it "
                             f"or give another {flag} (nothing was changed)")
    if ran and resume and RunFile.CHECKPOINT not in ran:
        raise RhoSearchError(f"{flag} {out} holds a run without {RunFile.CHECKPOINT}: there is "
                             f"nothing to resume, and starting over would replace its "
                             f"{' and '.join(ran)}; give another {flag} (nothing was changed)")
