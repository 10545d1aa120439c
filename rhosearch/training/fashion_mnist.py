"""Fashion-MNIST's four IDX files, checked and unpacked once for torchvision.

Debian's `dataset-fashion-mnist` package (or any folder given as --data-root) holds them; nothing
is downloaded. A missing, truncated or foreign file is named in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from rhosearch.errors import RhoSearchError
from rhosearch.training.checkpoint import write_atomic

__all__ = ["FASHION_MNIST_DIR", "fashion_mnist_files"]

# Where Debian's `dataset-fashion-mnist` package puts its four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_files(root: Path | str | None = None) -> Path:
    """Checks the four Fashion-MNIST IDX files under `root` (default: Debian's package folder)
    and unpacks them once into a cache laid out as torchvision's `FashionMNIST` expects
    (`<cache>/FashionMNIST/raw/`); returns the cache root to hand to torchvision.

    Each file may be gzipped (as Debian ships them: recompressed, so torchvision's MD5s of the
    upstream .gz files do not apply; gzip's CRC is checked) or already unpacked; either way its
    IDX header must match its length, and images and labels their counts. Hand-written because
    torchvision only checks that the unpacked files are present: a truncated one would fail
    deep inside a training run instead of here, named.
    """
    import hashlib

    from torchvision.datasets import FashionMNIST

    source = Path(root or FASHION_MNIST_DIR).expanduser()
    if not source.is_dir():
        raise RhoSearchError(f"fashion-mnist not found: {source} is not a folder; "
                             f"{_FASHION_MNIST_HINT}")
    files = {gz.removesuffix(".gz"): _idx_source(source, gz) for gz, _ in FashionMNIST.resources}
    # The cache is keyed by the files' paths, sizes and times: a changed source is re-checked.
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                     for p in files.values())
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
        f"rhosearch/fashion-mnist-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}")
    raw = cache_root / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in files):
        return cache_root
    contents = {name: _read_maybe_gzip(path) for name, path in files.items()}  # unpacked once
    counts = {name: _idx_count(name, content) for name, content in contents.items()}
    for split in ("train", "t10k"):
        images, labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if images != labels:
            raise RhoSearchError(f"fashion-mnist in {source}: {split} has {images} images but "
                                 f"{labels} labels; the files do not belong together")
        highest = max(contents[f"{split}-labels-idx1-ubyte"][8:], default=0)
        if highest >= 10:  # ten classes: a label of 10 or more would index past the head
            raise RhoSearchError(f"fashion-mnist in {source}: {split} has label {highest}; "
                                 "Fashion-MNIST's labels are 0..9 (reinstall its files)")
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name, content in contents.items():
            write_atomic(raw / name, content)  # workers may unpack at once: each its own file
    except (OSError, RhoSearchError) as exc:  # write_atomic says an OS error as one line
        raise RhoSearchError(f"fashion-mnist: cannot write its cache in {cache_root.parent} "
                             f"({getattr(exc, 'strerror', None) or exc}); set XDG_CACHE_HOME "
                             "to a folder you can write") from None
    return cache_root


_FASHION_MNIST_HINT = ("install Debian's dataset-fashion-mnist package (apt-get install "
                       "dataset-fashion-mnist) or point --data-root at a folder holding its four "
                       "IDX files")


def _idx_source(source: Path, gz_name: str) -> Path:
    for path in (source / gz_name, source / gz_name.removesuffix(".gz")):
        if path.is_file():
            return path
    raise RhoSearchError(f"fashion-mnist file {gz_name} is missing from {source}; "
                         f"{_FASHION_MNIST_HINT}")


def _read_maybe_gzip(path: Path) -> bytes:
    import gzip
    import zlib

    content = path.read_bytes()
    if path.suffix != ".gz":
        return content
    try:  # gzip checks its CRC and length: a truncated or damaged file fails here
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as exc:
        raise RhoSearchError(f"fashion-mnist file {path} is truncated or corrupted ({exc}); "
                             "reinstall dataset-fashion-mnist") from None


def _idx_count(name: str, content: bytes) -> int:
    """The item count of an IDX file whose header agrees with its length (else an error)."""
    images = "images" in name
    header = 16 if images else 8
    fields = [int.from_bytes(content[i:i + 4], "big") for i in range(0, min(header,
                                                                            len(content)), 4)]
    magic, shape = (2051, (28, 28)) if images else (2049, ())
    ok = (len(fields) == header // 4 and fields[0] == magic and tuple(fields[2:]) == shape
          and len(content) == header + fields[1] * (784 if images else 1))
    if not ok:
        raise RhoSearchError(f"fashion-mnist file {name} ({len(content)} bytes) is truncated "
                             "or not a Fashion-MNIST IDX file; reinstall dataset-fashion-mnist")
    return fields[1]
