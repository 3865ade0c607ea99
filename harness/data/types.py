"""The dataset's types (DataError, Region, Sample, Dataset) and the rule every reader applies to paths: nothing
outside the dataset root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """The dataset on disk is not usable; the message names the file at fault and what to do."""


@dataclass(frozen=True)
class Region:
    """One labelled object: its class and its polygon / box in pixels of its Sample's image (the working size)."""

    label: str
    polygon: tuple[tuple[float, float], ...]
    bbox: tuple[float, float, float, float]  # COCO x, y, w, h


@dataclass(frozen=True)
class Sample:
    name: str  # normalised POSIX path relative to the dataset root, e.g. "test_difficult/img_5490.jpg"
    image: torch.Tensor  # uint8, 3 x H x W, decoded once, at working size
    label: str  # the primary label
    acceptable: frozenset[str]  # labels that count as correct for soft accuracy
    regions: tuple[Region, ...] = ()  # in pixels of `image` (scaled with it)
    scale: float = 1.0  # working pixels per original pixel along the shorter side (<= 1; never upscaled)
    original_size: tuple[int, int] | None = None  # (width, height) of the stored photo, EXIF orientation applied


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    has_regions: bool  # False for plain ImageFolder test sets: localization checks are skipped
    ignored: tuple[str, ...] = ()  # hidden files skipped in its class folders (.x.png, macOS ._x.jpg, .DS_Store)

    @property
    def labels(self) -> list[int]:
        return [self.classes.index(s.label) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


def inside(root: Path, path: Path) -> bool:
    """True when `path`, symlinks followed, lies inside `root` (False when it cannot be resolved)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):  # unreadable, a symlink loop, an embedded NUL
        return False
