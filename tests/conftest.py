"""Shared fixtures: the bundled dataset and tiny synthetic datasets written to tmp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "small-book-images"


@pytest.fixture(scope="session")
def bundled_root() -> Path:
    return BUNDLED


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A small solid-colour JPEG with a little noise, so classes are learnable and images differ."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(
        np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


COLORS = {"background": (30, 30, 30), "red": (220, 30, 30), "green": (30, 200, 40)}


@pytest.fixture()
def tiny_root(tmp_path: Path) -> Path:
    """ImageFolder train set (3 classes x 5 images) and an ImageFolder test split."""
    for cls, color in COLORS.items():
        for i in range(5):
            write_image(tmp_path / "train" / cls / f"{cls}_{i}.jpg", color, seed=i)
        write_image(tmp_path / "test_plain" / cls / f"t_{cls}.jpg", color, seed=99)
    return tmp_path
