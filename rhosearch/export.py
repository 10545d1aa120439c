"""Ship a trained ExMobileViT: safetensors weights that describe themselves, and ONNX.

    rhosearch export --weights reports/demo/finalists/KEY/model.safetensors --out model.onnx

    save_weights(model, "model.safetensors", num_classes=10)   # config goes into the metadata
    model = load_model("model.safetensors")                    # needs nothing else
    timm.create_model("exmobilevit_s_928", pretrained=True, num_classes=10,
                      pretrained_cfg_overlay=dict(file="model.safetensors", num_classes=10))

A weights file's metadata holds the backbone, the rho vector and the number of classes (plus
what the caller adds, e.g. the top-1 it validated at), so `load_model` rebuilds the model from
the file alone. The keys are `ExMobileViT.state_dict()`'s, which is also what timm's
`pretrained_cfg_overlay=dict(file=...)` path loads for the registered paper presets.

`export_onnx` uses the TorchScript-based exporter by default (`dynamo=False`). Both exporters
handle MobileViT's unfold/attention/fold with a dynamic batch axis on torch 2.14 and both match
onnxruntime to ~2e-7, but the dynamo one takes 13-18 s even for a 32 px XXS model (vs ~1-10 s)
and prints its progress; pass `dynamo=True` (`--dynamo`) for it. Every export is checked:
onnxruntime and PyTorch run the same random batch, and a max abs difference above `atol` is an
error (the file is removed), never a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from rhosearch.errors import RhoSearchError
from rhosearch.model import ExMobileViT, create_model
from rhosearch.space import RhoConfig

__all__ = [
    "OnnxExport", "export_onnx", "load_model", "read_metadata", "save_weights", "timm_name",
]

ONNX_ATOL = 1e-4


def save_weights(model: ExMobileViT, path: Path | str, *,
                 extra: dict[str, Any] | None = None) -> Path:
    """Writes `model`'s state dict as safetensors with its configuration in the metadata.

    Args:
        model: a plain ExMobileViT (unwrap DDP or EMA first).
        path: the `.safetensors` file to write (its folder is created).
        extra: more metadata (values are stored as text; non-strings as JSON).
    """
    config = model.config
    metadata = {
        "format": "pt", "backbone": config.backbone, "rho": config.rho_text,
        "num_classes": str(model.num_classes), "drop_rate": str(model.head_drop.p),
        "name": config.name,
    }
    registered = timm_name(config)
    if registered:
        metadata["timm_name"] = registered
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(state, temporary, metadata=metadata)
    temporary.replace(path)
    return path


def read_metadata(path: Path | str) -> dict[str, str]:
    """The metadata of a weights file written by `save_weights`."""
    path = Path(path)
    if not path.is_file():
        raise RhoSearchError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise RhoSearchError(f"{path} is not a safetensors file ({exc})") from None
    missing = [k for k in ("backbone", "rho", "num_classes") if k not in metadata]
    if missing:
        raise RhoSearchError(f"{path} has no {', '.join(missing)} in its metadata; it was not "
                             "written by rhosearch (use timm.create_model with its config)")
    return metadata


def load_model(path: Path | str) -> ExMobileViT:
    """Rebuilds the ExMobileViT a `save_weights` file describes and loads it (eval mode)."""
    metadata = read_metadata(path)
    config = RhoConfig.parse(metadata["rho"], backbone=metadata["backbone"])
    model = create_model(config, num_classes=int(metadata["num_classes"]),
                         drop_rate=float(metadata.get("drop_rate", 0.1)))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def timm_name(config: RhoConfig) -> str | None:
    """The timm registry name that builds `config` (the paper's presets), or None."""
    return config.timm_name


class OnnxExport(NamedTuple):
    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]
    exporter: str


def _onnx_outputs(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: images.numpy()})[0])


def export_onnx(
    model: ExMobileViT, path: Path | str, *, resolution: int = 256, batch_size: int = 2,
    atol: float = ONNX_ATOL, seed: int = 0, opset: int = 18, dynamo: bool = False,
) -> OnnxExport:
    """Exports `model` to ONNX (dynamic batch axis) and checks onnxruntime agrees with PyTorch.

    Args:
        model: the model to export (put in eval mode; moved to CPU).
        path: the `.onnx` file to write.
        resolution: input height and width.
        batch_size: rows of the random parity batch (>1 exercises the dynamic batch axis).
        atol: the largest max abs difference accepted between the two runtimes' logits.
        dynamo: use the `torch.export`-based exporter instead of the TorchScript one.

    Raises:
        RhoSearchError: when the outputs differ by more than `atol` (the file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = torch.rand(1, 3, resolution, resolution)
    images = torch.rand(batch_size, 3, resolution, resolution,
                        generator=torch.Generator().manual_seed(seed))
    names = dict(input_names=["images"], output_names=["logits"], opset_version=opset)
    if dynamo:
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: batch},), **names)
    else:
        with warnings.catch_warnings():  # timm's shape checks are constants for a fixed size
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False, **names,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad():
        expected = model(images)
    diff = float((_onnx_outputs(path, images) - expected).abs().max())
    if not diff <= atol:  # also catches NaN
        path.unlink(missing_ok=True)
        raise RhoSearchError(f"ONNX output differs from PyTorch by {diff:.3g} (> {atol:g}) at "
                             f"{resolution}px; {path} was removed")
    return OnnxExport(path, diff, tuple(images.shape), "dynamo" if dynamo else "torchscript")
