"""Run state on disk: checkpoints that load without running code, written so a crash keeps the
last good one.

    save_checkpoint(out_dir / CHECKPOINT, state)         # atomically: tmp file + os.replace
    state = load_checkpoint(out_dir / CHECKPOINT, identity=identity)   # or RhoSearchError
    write_atomic(out_dir / "result.json", text)

A checkpoint is read with `torch.load(weights_only=True)`: PyTorch's restricted unpickler
accepts tensors and plain containers of numbers and strings, and refuses any other global, so a
crafted `checkpoint.pt` (a run folder on a shared disk) cannot execute code. Everything in one
is therefore a tensor or plain data: state dicts, the epoch and step, the metrics history, the
run's identity (its recipe as a dict) and the random-number states, whose NumPy and Python
parts are written as lists and tuples of ints (`rng_state`), not as NumPy arrays.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from rhosearch.errors import RhoSearchError

__all__ = [
    "CHECKPOINT", "FORMAT", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state",
    "write_atomic",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = "rhosearch-checkpoint/2"  # 1: pickled NumPy RNG state, loadable only unsafely


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python random states, as checkpoint-safe data."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=[name, keys.tolist(), position, has_gauss, cached_gaussian])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss,
                         cached_gaussian))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as strict JSON: a non-finite float (a diverged epoch's NaN loss) becomes null,
    since `json.dumps` would write `NaN`, which strict parsers (JavaScript's, jq's) refuse."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), indent=indent, allow_nan=False)


def write_atomic(path: Path, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
    """Writes `path` through a temporary file beside it and a rename: readers (and a resume
    after a crash or a full disk) see the old file or the new one, never part of one. The
    temporary file is removed if writing fails; an OS error comes back as one line."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if callable(content):
                content(file)
            else:
                file.write(content.encode() if isinstance(content, str) else content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RhoSearchError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes `state` (tensors and plain data only) atomically as a checkpoint."""
    write_atomic(path, lambda file: torch.save({"format": FORMAT, **state}, file))


def load_checkpoint(path: Path, *, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reads a checkpoint without executing anything in it.

    Raises RhoSearchError (one line) when the file is damaged, is not a rhosearch checkpoint
    of this format, or (given `identity`) belongs to another run.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, garbled, or holding objects the safe loader refuses
        raise RhoSearchError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: damaged, or not a rhosearch "
            "checkpoint); delete it to start the run over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format", "none") if isinstance(state, dict) else type(state).__name__
        raise RhoSearchError(f"{path} is not a {FORMAT} checkpoint (found {found}); delete it "
                             "to start the run over")
    if identity is not None and state.get("identity") != identity:
        raise RhoSearchError(
            f"{path} belongs to another run ({state.get('identity')}); use another --out or "
            "leave out --resume"
        )
    return state
