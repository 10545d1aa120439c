"""Data sets by name (on small files written here in the real on-disk formats) and the sampler."""

from __future__ import annotations

import os
import pickle
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_image_folder
from PIL import Image
from torch.utils.data import DataLoader

from rhosearch.errors import RhoSearchError
from rhosearch.training.data import (
    adopt_base,
    build_datasets,
    dataset_info,
    load_base,
    load_image,
)
from rhosearch.training.sampler import VariableBatchSampler, mss_resolutions


def write_cifar(root: Path, *, kind: str = "cifar10", per_batch: int = 4) -> Path:
    """CIFAR's python pickles: 5 train batches + test batch (CIFAR-10), or train + test (100)."""
    rng = np.random.default_rng(0)

    def batch(n: int, label_key: str, classes: int) -> dict:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        return {"data": data, label_key: [i % classes for i in range(n)]}

    def dump(path: Path, obj: dict) -> None:
        path.write_bytes(pickle.dumps(obj))

    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            dump(folder / f"data_batch_{i}", batch(per_batch, "labels", 10))
        dump(folder / "test_batch", batch(per_batch, "labels", 10))
        dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        dump(folder / "train", batch(5 * per_batch, "fine_labels", 100))
        dump(folder / "test", batch(per_batch, "fine_labels", 100))
        dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return root


@pytest.fixture
def no_cifar_md5(monkeypatch):
    # torchvision checks every CIFAR file against the md5 of the real download, which files
    # written by a test cannot match; existence is what these tests need checked.
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_digits_is_a_fixed_stratified_split_of_rgb_images_in_0_1():
    train, val = build_datasets("digits", resolution=32)
    assert (len(train), len(val)) == (1437, 360)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    val_labels = Counter(int(val.base[i][1]) for i in range(len(val)))
    assert set(val_labels) == set(range(10)) and min(val_labels.values()) >= 35
    again, _ = build_datasets("digits", resolution=32, seed=7)
    assert torch.equal(again.base.tensors[0], train.base.tensors[0])  # the seed moves no image
    assert dataset_info("digits") == 10


def test_subset_keeps_that_many_training_images():
    train, val = build_datasets("digits", resolution=32, subset=50)
    assert (len(train), len(val)) == (50, 360)


def test_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    train, val = build_datasets(str(root), resolution=32)
    assert (len(train), len(val)) == (6, 6) and dataset_info(str(root)) == 2
    image, label = val[5]
    assert image.shape == (3, 32, 32) and label == 1
    assert train[(0, 48)][0].shape == (3, 48, 48)


def test_a_data_set_is_read_once_per_process_and_an_adopted_copy_is_read_from_no_file(
        tmp_path):
    root = write_image_folder(tmp_path / "pets")
    loaded = load_base(str(root), subset=4)
    assert load_base(str(root), subset=4) is loaded and len(loaded.train) == 4
    # What a Ray worker gets from the driver: a pickled copy, then adopted. Its files gone,
    # the worker's build_datasets still finds the copy (the images load lazily by path, so
    # only the folder's listing is checked here).
    shipped = pickle.loads(pickle.dumps(loaded))
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = type(shipped)((str(other), None, 4, None), shipped.train, shipped.val)
    adopt_base(moved)
    train, val = build_datasets(str(other), resolution=32, subset=4)
    assert train.base is moved.train and val.base is moved.val
    with pytest.raises(RhoSearchError, match="train"):  # the folder itself is empty
        load_base(str(other), subset=5)


@pytest.mark.parametrize("kind, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_from_its_pickled_batches(tmp_path, no_cifar_md5, kind, classes):
    root = write_cifar(tmp_path, kind=kind)
    train, val = build_datasets(kind, resolution=32, root=root)
    assert (len(train), len(val)) == (20, 4) and dataset_info(kind) == classes
    image, label = train[3]
    assert image.shape == (3, 32, 32) and label == 3


def test_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(RhoSearchError, match="cifar-10-batches-py.*--download"):
        build_datasets("cifar10", resolution=32, root=tmp_path)


def _empty_val_class(root: Path) -> None:
    write_image_folder(root)
    for image in (root / "val/dog").iterdir():
        image.unlink()


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda root: None, "unknown data set"),
        (lambda root: root.mkdir(), "no train/ folder"),
        (_empty_val_class, "dog has no images"),
    ],
    ids=["missing", "no-train", "empty-class"],
)
def test_bad_image_folders(tmp_path, make, fragment):
    root = tmp_path / "images"
    make(root)
    with pytest.raises(RhoSearchError, match=fragment):
        build_datasets(str(root), resolution=32)


def test_unreadable_image_is_named(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "train/cat/0.png").write_bytes(b"not a png")
    train, _ = build_datasets(str(root), resolution=32)
    with pytest.raises(RhoSearchError, match=r"cannot read image .*cat/0\.png"):
        train[0]


# --- sampler ----------------------------------------------------------------------------------


def test_mss_resolutions_scale_with_the_base():
    assert mss_resolutions(256) == (160, 192, 256, 288, 320)
    assert mss_resolutions(32) == (16, 32, 48)
    assert all(r % 16 == 0 for r in mss_resolutions(64))


def test_batches_keep_pixels_constant_and_cover_every_sample_once():
    sampler = VariableBatchSampler(1000, base_resolution=256, base_batch_size=128,
                                   resolutions=mss_resolutions(256), seed=3)
    assert sampler.batch_sizes == {160: 327, 192: 227, 256: 128, 288: 101, 320: 81}
    for r, b in sampler.batch_sizes.items():
        assert b * r * r <= 128 * 256 * 256 < (b + 1) * r * r
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert {len({res for _, res in batch}) for batch in batches} == {1}
    assert len({res for batch in batches for _, res in batch}) > 1
    indices = [i for batch in batches for i, _ in batch]
    assert set(indices) == set(range(1000)) and len(indices) - 1000 < 327  # tail fills up
    assert indices[:1000] == sampler.shard()


def test_epochs_reshuffle_reproducibly():
    sampler = VariableBatchSampler(100, base_resolution=32, base_batch_size=10, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_the_length_is_planned_once_per_epoch_at_imagenet_size():
    # `train_one_epoch` asks `len()` of the loader; at 1.28 M samples a plan is ~7 k batches of
    # Python (13 ms on 2 shared cores), so asked per step it outweighed a GPU step.
    sampler = VariableBatchSampler(1281167, base_resolution=256, base_batch_size=128,
                                   resolutions=mss_resolutions(256))
    steps = len(sampler)
    start = time.perf_counter()
    for _ in range(200):
        assert len(sampler) == steps
    assert time.perf_counter() - start < 0.2  # 2.7 s when every call planned the epoch again
    first = sampler.plan()
    sampler.set_epoch(1)
    assert sampler.plan() != first and sampler.plan(0) == first  # still per epoch


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_shards_and_the_same_steps(world_size):
    samplers = [
        VariableBatchSampler(101, base_resolution=64, base_batch_size=8, seed=1, rank=rank,
                             world_size=world_size, resolutions=mss_resolutions(64))
        for rank in range(world_size)
    ]
    shards = [s.shard() for s in samplers]
    assert len({len(s) for s in shards}) == 1
    assert set().union(*map(set, shards)) == set(range(101))
    unpadded = [set(s) for s in shards]
    assert sum(map(len, unpadded)) - 101 < world_size  # only the wrap-around padding repeats
    assert len({tuple(s.plan()) for s in samplers}) == 1


def test_loader_batches_come_at_their_resolution():
    train, _ = build_datasets("digits", resolution=32, subset=64)
    sampler = VariableBatchSampler(len(train), base_resolution=32, base_batch_size=16,
                                   resolutions=mss_resolutions(32))
    for (images, labels), (resolution, batch_size) in zip(DataLoader(train, batch_sampler=sampler),
                                                          sampler.plan(), strict=True):
        assert images.shape == (batch_size, 3, resolution, resolution)
        assert labels.shape == (batch_size,)


def write_fashion_mnist(root: Path, *, train: int = 30, test: int = 20, gz: bool = True) -> Path:
    """The four IDX files (Debian ships them gzipped) with `train`/`test` random 28x28 images."""
    import gzip

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        pixels = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        files = {
            f"{split}-images-idx3-ubyte": (2051).to_bytes(4, "big") + count.to_bytes(4, "big")
            + (28).to_bytes(4, "big") * 2 + pixels.tobytes(),
            f"{split}-labels-idx1-ubyte": (2049).to_bytes(4, "big") + count.to_bytes(4, "big")
            + labels.tobytes(),
        }
        for name, content in files.items():
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (root / name).write_bytes(content)
    return root


@pytest.fixture
def fmnist_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_an_idx_folder(fmnist_cache, gz):
    root = write_fashion_mnist(fmnist_cache / "fm", gz=gz)
    train, val = build_datasets("fashion-mnist", resolution=32, root=root)
    assert (len(train), len(val)) == (30, 20)
    image, label = val[3]
    assert image.shape == (3, 32, 32) and label == 3
    assert dataset_info("fashion-mnist") == 10
    # Fixed stratified subsets: two of each class, the same whatever the training seed.
    a, b = (build_datasets("fashion-mnist", resolution=32, root=root, val_subset=10, seed=s)[1]
            for s in (0, 1))
    assert [a[i][1] for i in range(10)] == [b[i][1] for i in range(10)]
    assert Counter(a[i][1] for i in range(10)) == {k: 1 for k in range(10)}


def test_fashion_mnist_missing_names_the_package(fmnist_cache):
    with pytest.raises(RhoSearchError, match="apt-get install dataset-fashion-mnist"):
        build_datasets("fashion-mnist", resolution=32, root=fmnist_cache / "nowhere")
    root = write_fashion_mnist(fmnist_cache / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(RhoSearchError, match="t10k-labels-idx1-ubyte.gz is missing"):
        build_datasets("fashion-mnist", resolution=32, root=root)


def test_fashion_mnist_truncated_files_are_named(fmnist_cache):
    root = write_fashion_mnist(fmnist_cache / "gz")
    gz = root / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(RhoSearchError, match="train-images-idx3-ubyte.gz is truncated"):
        build_datasets("fashion-mnist", resolution=32, root=root)
    raw = write_fashion_mnist(fmnist_cache / "raw", gz=False)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-784])
    with pytest.raises(RhoSearchError, match="t10k-images-idx3-ubyte .* truncated"):
        build_datasets("fashion-mnist", resolution=32, root=raw)
    assert not list((fmnist_cache / "cache").rglob("*-ubyte"))  # nothing half-checked cached


@pytest.mark.parametrize("command", [["search", "--trials", "1"],
                                     ["train", "--preset", "baseline"]])
def test_cli_refuses_missing_fashion_mnist_in_one_line(fmnist_cache, capsys, command):
    from rhosearch import cli

    root = write_fashion_mnist(fmnist_cache / "fm")
    (root / "train-labels-idx1-ubyte.gz").unlink()
    reports = fmnist_cache / "reports"
    where = (["--out", str(fmnist_cache / "run")] if command[0] == "train"
             else ["--reports-dir", str(reports)])
    code = cli.main([*command, "--data", "fashion-mnist", "--data-root", str(root), *where])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "train-labels-idx1-ubyte.gz is missing" in err
    assert not reports.exists() and not (fmnist_cache / "run").exists()


def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    """PIL's convert("RGB") clipped a 16-bit grayscale PNG at 255: a ramp 0..65535 became 99.6 %
    white. Scaled, the ramp stays a ramp: half the pixels below mid-grey."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = np.asarray(load_image(tmp_path / "deep.png"))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 0] == 255).mean() < 0.01
    assert abs(float(np.median(pixels[..., 0])) - 127.5) <= 1
    assert np.array_equal(pixels[..., 0], np.rint(ramp / 257).astype(np.uint8))


def test_fashion_mnist_with_a_label_past_nine_is_refused(fmnist_cache):
    root = write_fashion_mnist(fmnist_cache / "fm")
    import gzip

    labels = root / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[8 + 5] = 12
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(RhoSearchError, match="label 12"):
        build_datasets("fashion-mnist", resolution=32, root=root)


def test_an_unwritable_cache_folder_is_one_line(tmp_path, monkeypatch):
    root = write_fashion_mnist(tmp_path / "fm")
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/rhosearch-cache")
    with pytest.raises(RhoSearchError, match="cannot write its cache.*XDG_CACHE_HOME"):
        build_datasets("fashion-mnist", resolution=32, root=root)
