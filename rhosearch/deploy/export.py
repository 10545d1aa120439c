"""Ship a trained ExMobileViT: safetensors weights that describe themselves, and ONNX.

    rhosearch export --weights reports/demo/finalists/KEY/model.safetensors --out model.onnx

    save_weights(model, "model.safetensors", num_classes=10)   # config goes into the metadata
    model = load_model("model.safetensors")                    # needs nothing else
    import rhosearch.core.model  # registers the presets in timm, then:
    timm.create_model("exmobilevit_s_928", pretrained=True, num_classes=10,
                      pretrained_cfg_overlay=dict(file="model.safetensors", num_classes=10))

A weights file's metadata holds the backbone, the rho vector and the number of classes (plus
what the caller adds, e.g. the top-1 it validated at), so `load_model` rebuilds the model from
the file alone. The keys are `ExMobileViT.state_dict()`'s, which is also what timm's
`pretrained_cfg_overlay=dict(file=...)` path loads for the registered paper presets.

`export_onnx` follows the weights: `rhosearch export` exports at the resolution a file was
trained at (its `resolution` metadata; `--resolution` overrides it), and the ONNX graph takes a
dynamic batch and a dynamic height and width wherever one graph can serve them: every multiple
of `size_multiple` (64 for a model with all five blocks), the sizes at which timm's MobileViT
blocks need no resizing. That takes the `torch.export`-based exporter (~15-30 s on a CPU); the
TorchScript one records MobileViT's patch counts as constants, so `--static-size` uses it (a
few seconds) with the size fixed. Every export is checked: onnxruntime and PyTorch run the same
random batches (two sizes and two batch sizes when dynamic), and a max abs difference above
`atol` is an error (the file is removed), never a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from rhosearch.core.model import ExMobileViT, create_model
from rhosearch.core.space import RhoConfig
from rhosearch.errors import RhoSearchError

__all__ = [
    "OnnxExport", "export_onnx", "load_model", "read_metadata", "save_weights", "size_multiple",
    "timm_name", "weights_resolution",
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
    try:
        config = RhoConfig.parse(metadata["rho"], backbone=metadata["backbone"])
        classes = int(metadata["num_classes"])
        drop_rate = float(metadata.get("drop_rate", 0.1))
        if not 1 <= classes <= 100_000 or not 0 <= drop_rate < 1:
            raise ValueError
        model = create_model(config, num_classes=classes, drop_rate=drop_rate)
        model.load_state_dict(load_file(str(path)), strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError):  # RuntimeError: shapes differ
        raise RhoSearchError(
            f"{path}: its weights do not match its metadata (rho {metadata['rho']!r} on "
            f"{metadata['backbone']!r}, {metadata['num_classes']!r} classes, drop rate "
            f"{metadata.get('drop_rate', '0.1')!r}); it was not written by this rhosearch as "
            "it is (re-save it with save_weights)") from None
    return model.eval()


def timm_name(config: RhoConfig) -> str | None:
    """The timm registry name that builds `config` (the paper's presets), or None."""
    return config.timm_name


def weights_resolution(path: Path | str) -> int | None:
    """The input size a weights file was trained at (its `resolution` metadata), or None."""
    value = read_metadata(path).get("resolution")
    try:
        resolution = json.loads(value) if value is not None else None
    except json.JSONDecodeError:
        return None
    valid = isinstance(resolution, (int, float)) and 16 <= resolution <= 4096
    return int(resolution) if valid else None


def size_multiple(config: RhoConfig) -> int:
    """The input sizes one exported graph serves: multiples of this.

    timm's MobileViT block (blocks 3-5, at strides 8, 16, 32) cuts its feature map into 2x2
    patches and, for an odd size, resizes it first, choosing in Python; an exported graph keeps
    one choice. Sizes whose feature maps are even at every block the model builds need no
    resizing: multiples of 2 x the deepest block's stride. A model without MobileViT blocks
    (depth <= 2) is convolutions only and takes any size.
    """
    return 2 ** (config.depth + 1) if config.depth >= 3 else 1


class OnnxExport(NamedTuple):
    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]
    exporter: str
    input_spec: str  # e.g. "batch x 3 x H x W (H, W multiples of 64)" or "batch x 3 x 64 x 64"
    checked_shapes: tuple[tuple[int, ...], ...]  # every batch onnxruntime and PyTorch compared


def _onnx_outputs(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: images.numpy()})[0])


def _add_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_onnx(
    model: ExMobileViT, path: Path | str, *, resolution: int = 256, batch_size: int = 2,
    atol: float = ONNX_ATOL, seed: int = 0, opset: int = 18, dynamic_size: bool = True,
) -> OnnxExport:
    """Exports `model` to ONNX and checks onnxruntime agrees with PyTorch.

    The batch axis is always dynamic. With `dynamic_size` (default) height and width are too,
    for every multiple of `size_multiple(config)`: that needs the `torch.export`-based
    exporter (~15-30 s), since the TorchScript one records MobileViT's patch counts as
    constants. Without it the fast TorchScript exporter fixes the size at `resolution` (any
    size then works, odd feature maps included).

    Args:
        model: the model to export (put in eval mode; moved to CPU).
        path: the `.onnx` file to write.
        resolution: the example input's height and width (a multiple of `size_multiple` when
            `dynamic_size`); dynamic exports are also checked at `resolution + multiple`.
        batch_size: rows of the random parity batch (>1 exercises the dynamic batch axis).
        atol: the largest max abs difference accepted between the two runtimes' logits.
        dynamic_size: dynamic height and width (else fixed at `resolution`).

    Raises:
        RhoSearchError: a size the graph cannot serve, or outputs that differ by more than
            `atol` (whatever was at `path` stays as it was).
    """
    # Written beside `path` and moved onto it once checked: a failed export leaves what was
    # there before.
    _require_export_extra()
    final = Path(path)
    scratch = final.with_name(f".{final.name}.tmp")
    try:
        exported = _export_checked(model, scratch, resolution=resolution,
                                   batch_size=batch_size, atol=atol, seed=seed, opset=opset,
                                   dynamic_size=dynamic_size)
        os.replace(scratch, final)
    finally:
        scratch.unlink(missing_ok=True)
        # The exporter keeps large weights in an external `.data` file beside the graph;
        # `_add_onnx_metadata` saves the graph again with them inside, so it is left over.
        scratch.with_name(scratch.name + ".data").unlink(missing_ok=True)
    return exported._replace(path=final)


def _require_export_extra() -> None:
    """One line, not an ImportError's traceback, when the `export` extra is not installed."""
    import importlib

    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RhoSearchError(f"export needs {', '.join(missing)}, from the export extra: "
                             "pip install 'rhosearch[export]'")


def _export_checked(model: ExMobileViT, path: Path, *, resolution: int, batch_size: int,
                    atol: float, seed: int, opset: int, dynamic_size: bool) -> OnnxExport:
    """`export_onnx`'s work, into `path`."""
    multiple = size_multiple(model.config)
    if dynamic_size and resolution % multiple:
        raise RhoSearchError(
            f"resolution {resolution} is not a multiple of {multiple}, the sizes this model's "
            f"MobileViT blocks take without resizing; use a multiple (e.g. "
            f"{max(multiple, round(resolution / multiple) * multiple)}) or --static-size")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    sizes = [resolution, resolution + multiple] if dynamic_size else [resolution]
    batches = [torch.rand(batch_size + i, 3, size, size, generator=generator)
               for i, size in enumerate(sizes)]
    names = dict(input_names=["images"], output_names=["logits"], opset_version=opset)
    if dynamic_size:
        dynamic = torch.export.Dim.DYNAMIC
        torch.onnx.export(model, (batches[0],), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},), **names)
        spec = f"batch x 3 x H x W (H, W: multiples of {multiple})"
    else:
        with warnings.catch_warnings():  # timm's shape checks are constants for a fixed size
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (batches[0],), str(path), dynamo=False, **names,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        spec = f"batch x 3 x {resolution} x {resolution}"
    diff = 0.0
    for images in batches:
        with torch.no_grad():
            expected = model(images)
        try:
            got = _onnx_outputs(path, images)
        except Exception as exc:  # onnxruntime raises its own types; the graph cannot serve it
            path.unlink(missing_ok=True)
            first = str(exc).splitlines()[0][:200]
            raise RhoSearchError(f"the ONNX graph fails on a {tuple(images.shape)} input "
                                 f"({first}); nothing was written; try --static-size") from None
        diff = max(diff, float((got - expected).abs().max()))
        if not diff <= atol:  # also catches NaN
            path.unlink(missing_ok=True)
            raise RhoSearchError(f"ONNX output differs from PyTorch by {diff:.3g} (> {atol:g}) "
                                 f"at {images.shape[-1]}px; nothing was written")
    _add_onnx_metadata(path, {
        "rhosearch.backbone": model.config.backbone, "rhosearch.rho": model.config.rho_text,
        "rhosearch.resolution": str(resolution), "rhosearch.input": spec})
    return OnnxExport(path, diff, tuple(batches[0].shape), "dynamo" if dynamic_size
                      else "torchscript", spec, tuple(tuple(b.shape) for b in batches))
