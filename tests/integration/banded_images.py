"""Class-per-folder image trees that a tiny model learns in a few steps: class k has a bright
band at its own place on dark noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ant", "bee", "cow")


def write_banded_tree(root: Path, per_class: int, seed: int) -> None:
    """Write ``per_class`` 32x32 PNGs for each of CLASSES under ``root/<class>/``."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, size=(32, 32, 3), dtype=np.uint8)
            pixels[:, 10 * k : 10 * k + 10] = 230
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
