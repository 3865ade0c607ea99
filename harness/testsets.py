"""The test sets a model's steps run on: decoded once at the working size of its image size, and as the float arrays
onnxruntime is fed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from harness.data import Dataset, load_test, resize_batch, working_short_side


def load_test_sets(
    data_root: str | Path,
    splits: Sequence[str],
    classes: Sequence[str],
    image_size: int,
    tests: Mapping[str, Dataset] | None = None,
) -> dict[str, Dataset]:
    """{split: Dataset} of `splits`: those in `tests` (decoded once by the caller), the others loaded here
    (harness.data.load_test at the working size of a model of `image_size` px); a missing one raises DataError."""
    short = working_short_side(image_size)
    return {
        split: tests[split]
        if tests is not None and split in tests
        else load_test(Path(data_root), split, list(classes), max_short_side=short)
        for split in splits
    }


def as_arrays(tests: Mapping[str, Dataset], image_size: int) -> dict[str, tuple[Dataset, np.ndarray]]:
    """{split: (Dataset, float32 N x 3 x S x S array in [0, 1])}: each test set stretched to the model's input."""
    return {
        split: (ds, resize_batch([s.image for s in ds.samples], image_size).float().div_(255).numpy())
        for split, ds in tests.items()
    }
