"""Data sets by name and the paper's transforms (the sampler is `training/sampler.py`).

    train_set, val_set = build_datasets("digits", resolution=32)
    sampler = VariableBatchSampler(len(train_set), base_resolution=256, base_batch_size=128)
    loader = DataLoader(train_set, batch_sampler=sampler)   # one resolution per batch

A data set is named one way everywhere: `digits` (scikit-learn's 8x8 digits, embedded, no
download), `fashion-mnist` (28x28 clothing images, read by torchvision from the four IDX files
of Debian's `dataset-fashion-mnist` package or any folder holding them, never downloaded),
`cifar10` / `cifar100` (torchvision, under `root`), or a folder in ImageFolder layout
(`PATH/train/<class>/*`, `PATH/val/<class>/*`). Images reach the model as [0, 1] RGB without
mean/std normalisation: timm's MobileViT configs have mean 0 and std 1.

Multi-scale training (MobileViT's MSS) needs the resolution to be chosen per batch, so the
sampler yields batches of `(index, resolution)` pairs and `ScaledDataset` crops each sample to the
resolution it is handed; a plain `int` index gets the base resolution (validation).

The registry of names and their recipes is `training/datasets.py`; Fashion-MNIST's IDX files
are checked in `training/fashion_mnist.py`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision.transforms import v2

from rhosearch.errors import RhoSearchError
from rhosearch.host import usable_cpus
from rhosearch.training.datasets import BUILTIN, DATASETS
from rhosearch.training.fashion_mnist import fashion_mnist_files
from rhosearch.values import check_file_tree

__all__ = [
    "CIFAR_CLASSES",
    "DIGITS_VAL_FRACTION",
    "BaseData",
    "ScaledDataset",
    "adopt_base",
    "build_datasets",
    "dataset_info",
    "load_base",
    "train_transform",
    "val_transform",
    "worker_count",
]

CIFAR_CLASSES = {name: DATASETS[name].classes for name in ("cifar10", "cifar100")}
DIGITS_VAL_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0  # fixed: the validation set must not move with the training seed


# --- naming data sets -------------------------------------------------------------------------


def _folder_classes(root: Path, split: str) -> list[str]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise RhoSearchError(
            f"{root} has no {split}/ folder; an image folder needs {split}/<class>/<image> files"
        )
    from torchvision.datasets.folder import IMG_EXTENSIONS

    # Before anything opens a file: a FIFO named .png would block the first read for ever,
    # and a symlink loop would keep ImageFolder's walk going for ever.
    check_file_tree(split_dir, suffixes=IMG_EXTENSIONS, what="image folder entry")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise RhoSearchError(f"{split_dir} has no class folders; expected {split}/<class>/<image>")
    if len(classes) == 1:  # a classifier of one class learns nothing: top-1 is always 100 %
        raise RhoSearchError(f"{split_dir} has one class folder ({classes[0]}); a classifier "
                             "needs at least 2")
    for name in classes:
        if not any(f.is_file() for f in (split_dir / name).iterdir()):
            raise RhoSearchError(f"class folder {split_dir / name} has no images")
    return classes


def _as_folder(name: str) -> Path | None:
    """`name` as an ImageFolder root, or None when it names a built-in data set."""
    if name in BUILTIN:
        return None
    path = Path(name).expanduser()
    if not path.exists():
        raise RhoSearchError(
            f"unknown data set {name!r}: not {', '.join(BUILTIN)} or an existing folder"
        )
    if not path.is_dir():
        raise RhoSearchError(f"data set {name!r} is a file; give a folder with train/ and val/")
    return path


def dataset_info(name: str, root: Path | str | None = None) -> int:
    """Number of classes of a data set, without loading it (folders: counts train/ subfolders)."""
    if name in DATASETS:
        return DATASETS[name].classes
    return len(_folder_classes(_as_folder(name), "train"))


# --- transforms -------------------------------------------------------------------------------


def train_transform(
    resolution: int, *, crop_scale: Sequence[float] = (0.08, 1.0), hflip: float = 0.5
) -> v2.Transform:
    """The paper's augmentation: random resized crop and horizontal flip, nothing else."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(resolution, scale=tuple(crop_scale), antialias=True),
        v2.RandomHorizontalFlip(hflip),
        v2.ToDtype(torch.float32, scale=True),
    ])


def val_transform(resolution: int, *, crop_pct: float = 0.9) -> v2.Transform:
    """Resize the short side to resolution / crop_pct, then center-crop (timm's eval recipe)."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(math.floor(resolution / crop_pct), antialias=True),
        v2.CenterCrop(resolution),
        v2.ToDtype(torch.float32, scale=True),
    ])


class ScaledDataset(Dataset):
    """Applies a resolution-dependent transform to an untransformed (image, label) data set.

    Indexed by `(index, resolution)` (what `VariableBatchSampler` yields) or by `index`, which
    uses `resolution`. One transform per resolution is built on first use and kept.
    """

    def __init__(self, base: Dataset, *, resolution: int, train: bool,
                 crop_scale: Sequence[float] = (0.08, 1.0), hflip: float = 0.5,
                 crop_pct: float = 0.9) -> None:
        self.base = base
        self.resolution = resolution
        self.train = train
        self.options = (dict(crop_scale=crop_scale, hflip=hflip) if train
                        else dict(crop_pct=crop_pct))
        self._transforms: dict[int, v2.Transform] = {}

    def __len__(self) -> int:
        return len(self.base)

    def transform(self, resolution: int) -> v2.Transform:
        if resolution not in self._transforms:
            make = train_transform if self.train else val_transform
            self._transforms[resolution] = make(resolution, **self.options)
        return self._transforms[resolution]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, resolution = item if isinstance(item, tuple) else (item, self.resolution)
        image, label = self.base[index]
        return self.transform(resolution)(image), int(label)


# --- the data sets ----------------------------------------------------------------------------


def _digits() -> tuple[Dataset, Dataset]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 grey levels -> uint8 RGB images of shape (3, 8, 8); the transforms upscale them.
    images = torch.tensor(digits.images * (255 / 16), dtype=torch.uint8)
    images = images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target)
    train_idx, val_idx = train_test_split(
        range(len(labels)), test_size=DIGITS_VAL_FRACTION, stratify=digits.target,
        random_state=_DIGITS_SPLIT_SEED,
    )
    train_idx, val_idx = torch.tensor(train_idx), torch.tensor(val_idx)
    return (TensorDataset(images[train_idx], labels[train_idx]),
            TensorDataset(images[val_idx], labels[val_idx]))


def _fashion_mnist(root: Path | None) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import FashionMNIST

    cache_root = fashion_mnist_files(root)

    def as_rgb(train: bool) -> TensorDataset:
        split = FashionMNIST(str(cache_root), train=train, download=False)
        images = split.data.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # uint8 (N,3,28,28)
        return TensorDataset(images, split.targets)

    return as_rgb(True), as_rgb(False)


def _cifar(name: str, root: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(root or "data").expanduser()
    folder = root / cls.base_folder
    if not download and not folder.is_dir():
        raise RhoSearchError(
            f"{name} not found: expected {folder}/; pass --download to fetch it, or --data-root "
            "to point at the folder holding it"
        )
    try:
        return cls(root, train=True, download=download), cls(root, train=False)
    except RuntimeError as exc:  # torchvision: missing file or md5 mismatch
        raise RhoSearchError(
            f"{name} under {folder} is incomplete or corrupted ({exc}); delete it and --download"
        ) from None
    except OSError as exc:
        raise RhoSearchError(f"{name}: cannot read {root}: {exc.strerror or exc}") from None


def load_image(path: str | Path) -> PIL.Image.Image:
    """An image as 8-bit RGB, scaled by its real bit depth: PIL's `convert("RGB")` clips a
    16-bit grayscale PNG's values at 255 (99.7 % of a typical image's pixels become white)."""
    with PIL.Image.open(path) as image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            pixels = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max() <= 65535 else \
                float(pixels.max())
            scaled = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
            return PIL.Image.fromarray(scaled, mode="L").convert("RGB")
        return image.convert("RGB")


class _CheckedImageFolder(Dataset):
    """torchvision's ImageFolder, whose unreadable images fail with the file's name."""

    def __init__(self, root: Path, classes: list[str]) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(root), allow_empty=True)
        if self.folder.classes != classes:
            raise RhoSearchError(
                f"{root} has classes {self.folder.classes}, but train/ has {classes}; "
                "train/ and val/ need the same class folders"
            )
        counts = torch.bincount(torch.tensor(self.folder.targets, dtype=torch.long),
                                minlength=len(classes))
        for name, count in zip(classes, counts.tolist(), strict=True):
            if count == 0:
                raise RhoSearchError(f"class folder {root / name} has no images")

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.folder.samples[index]
        try:
            return load_image(path), label
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
            raise RhoSearchError(f"cannot read image {path}: {exc}") from None


def _image_folder(root: Path) -> tuple[Dataset, Dataset]:
    classes = _folder_classes(root, "train")
    _folder_classes(root, "val")
    return _CheckedImageFolder(root / "train", classes), _CheckedImageFolder(root / "val", classes)


def build_datasets(
    name: str, *, resolution: int, root: Path | str | None = None, download: bool = False,
    subset: int | None = None, val_subset: int | None = None, seed: int = 0,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5, crop_pct: float = 0.9,
) -> tuple[ScaledDataset, ScaledDataset]:
    """Training and validation sets, transformed for `resolution`.

    Args:
        name: `digits`, `cifar10`, `cifar100` or an ImageFolder root.
        resolution: base training and validation image size.
        root: where CIFAR lives (default `./data`); ignored for digits and folders.
        download: fetch CIFAR when it is missing.
        subset: keep this many training images, a fixed stratified sample (for proxies).
        val_subset: keep this many validation images, a fixed stratified sample.
        seed: unused for the subsets, which stay fixed whatever the training seed, so runs
            with different seeds (and the noise floor) see the same images.
    """
    base = load_base(name, root=root, download=download, subset=subset, val_subset=val_subset)
    train_base, val_base = base.train, base.val
    train = ScaledDataset(train_base, resolution=resolution, train=True, crop_scale=crop_scale,
                          hflip=hflip)
    val = ScaledDataset(val_base, resolution=resolution, train=False, crop_pct=crop_pct)
    return train, val


@dataclasses.dataclass(frozen=True)
class BaseData:
    """A data set's untransformed training and validation sets, as `load_base` read them.

    The search driver loads them once (which checks the data before anything runs) and hands
    them to its Ray jobs, which `adopt_base` them: a worker then needs neither the files nor
    their reader (scikit-learn for digits: about 1 s of imports per worker), and a `--download`
    happens once, in the driver. An image folder's samples are paths: its images must still be
    at the same path on every node.
    """

    key: tuple[Any, ...]  # (name, root, subset, val_subset)
    train: Dataset
    val: Dataset


# Per process, the newest few: a warm Ray worker runs trial after trial on the same data, and
# reading Fashion-MNIST's IDX files or scanning an ImageFolder tree each time is the start-up
# tax warm workers exist to avoid. Safe to share: nothing writes to them (the transforms live
# in `ScaledDataset`, made per call), and a failure is not kept.
_LOADED: OrderedDict[tuple[Any, ...], BaseData] = OrderedDict()
_LOADED_MAX = 4


def load_base(name: str, *, root: Path | str | None = None, download: bool = False,
              subset: int | None = None, val_subset: int | None = None) -> BaseData:
    """The untransformed training and validation sets (see `build_datasets` for the
    arguments), loaded once per process; `len(load_base(...).val)` is the `n` of every top-1's
    binomial interval."""
    key = (name, Path(root) if root else None, subset, val_subset)
    if key not in _LOADED:
        folder = _as_folder(name)
        if folder is not None:
            train, val = _image_folder(folder)
        elif name == "digits":
            train, val = _digits()
        elif name == "fashion-mnist":
            train, val = _fashion_mnist(key[1])
        else:
            train, val = _cifar(name, key[1], download)
        adopt_base(BaseData(key, _stratified_subset(train, subset),
                            _stratified_subset(val, val_subset)))
    _LOADED.move_to_end(key)
    return _LOADED[key]


def adopt_base(data: BaseData) -> None:
    """Keeps `data` (loaded by another process, e.g. the search driver) as this process's copy:
    `build_datasets` with the same name, root and subsets then reads nothing."""
    _LOADED.setdefault(data.key, data)
    while len(_LOADED) > _LOADED_MAX:
        _LOADED.popitem(last=False)


def _labels(dataset: Dataset) -> list[int]:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].tolist()
    if isinstance(dataset, _CheckedImageFolder):
        return list(dataset.folder.targets)
    if hasattr(dataset, "targets"):  # torchvision's CIFAR
        return list(dataset.targets)
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _stratified_subset(dataset: Dataset, count: int | None) -> Dataset:
    """`count` images keeping each class's share, the same ones on every call (fixed seed)."""
    if count is None or count >= len(dataset):
        return dataset
    from sklearn.model_selection import train_test_split

    labels = _labels(dataset)
    try:
        keep, _ = train_test_split(range(len(labels)), train_size=count, stratify=labels,
                                   random_state=_DIGITS_SPLIT_SEED)
    except ValueError:  # a class too small to split: fall back to a plain fixed sample
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:count]
        keep = keep.tolist()
    return Subset(dataset, sorted(keep))


def worker_count(requested: int) -> int:
    """Data-loader workers: the request, capped by the CPUs this process may use."""
    return max(0, min(requested, usable_cpus() - 1))
