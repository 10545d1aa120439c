"""Helpers the test files share (test files import this module, never each other)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# A small XXS space (18 rho vectors) for real searches in tests.
XXS_SPACE_YAML = """backbone: mobilevit_xxs
rho:
  rho_3: [0, 1/3, 1]
  rho_4: [0, 1/4, 1]
  rho_5: [3, 4]
"""


def write_image_folder(root: Path, *, classes=("cat", "dog"), per_class: int = 3) -> Path:
    """`root/{train,val}/<class>/<i>.png`: small random RGB images, the same on every call."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
