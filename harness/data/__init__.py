"""Load and validate a dataset (ImageFolder train set; COCO-annotated or ImageFolder test sets), split, oversample.
Every loader decodes through `harness.data.images.decode_image`, looked up there at each call (patch it there)."""

from __future__ import annotations

from harness.data.coco import load_coco
from harness.data.imagefolder import (
    IMAGE_SUFFIXES,
    MIN_TRAIN_PER_CLASS,
    NOT_TEST_SETS,
    class_folders,
    discover_test_sets,
    ignored_note,
    load_test,
    load_train,
    oversample,
    stratified_split,
)
from harness.data.images import DEFAULT_SHORT_SIDE, decode_image, resize_batch, working_short_side
from harness.data.types import DataError, Dataset, Region, Sample

__all__ = [
    "DEFAULT_SHORT_SIDE",
    "IMAGE_SUFFIXES",
    "MIN_TRAIN_PER_CLASS",
    "NOT_TEST_SETS",
    "DataError",
    "Dataset",
    "Region",
    "Sample",
    "class_folders",
    "decode_image",
    "discover_test_sets",
    "ignored_note",
    "load_coco",
    "load_test",
    "load_train",
    "oversample",
    "resize_batch",
    "stratified_split",
    "working_short_side",
]
