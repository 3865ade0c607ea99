"""Load and validate a dataset (ImageFolder train set; COCO-annotated or ImageFolder test sets), split, oversample."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(ValueError):
    """The dataset on disk is not usable; the message names the file at fault and what to do."""


@dataclass(frozen=True)
class Region:
    """One labelled object: its class and its polygon / box in pixels of the stored image."""

    label: str
    polygon: tuple[tuple[float, float], ...]
    bbox: tuple[float, float, float, float]  # COCO x, y, w, h


@dataclass(frozen=True)
class Sample:
    name: str  # path relative to the dataset root, e.g. "test_difficult/img_5490.jpg"
    image: torch.Tensor  # uint8, 3 x H x W, decoded once
    label: str  # the primary label
    acceptable: frozenset[str]  # labels that count as correct for soft accuracy
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    has_regions: bool  # False for plain ImageFolder test sets: localization checks are skipped

    @property
    def labels(self) -> list[int]:
        return [self.classes.index(s.label) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


def load_image(path: Path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3 x H x W); corrupt files raise DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); replace or remove the file") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_train(root: Path) -> Dataset:
    """ImageFolder layout `root/train/<class>/*.jpg`; classes are the sorted folder names."""
    root = Path(root)
    split_dir = root / "train"
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: training folder missing; expected {root}/train/<class>/*.jpg")
    folders = _class_folders(split_dir)
    if len(folders) < 2:
        raise DataError(f"{split_dir}: need at least 2 class folders, found {[f.name for f in folders]}")
    samples = []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise DataError(f"{folder}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it")
        for f in files:
            samples.append(Sample(str(f.relative_to(root)), load_image(f), folder.name, frozenset({folder.name})))
    return Dataset("train", tuple(f.name for f in folders), tuple(samples), has_regions=False)


def load_test(root: Path, split: str, classes: Sequence[str]) -> Dataset:
    """A test split: COCO JSON at `root/annotations/<split>.json` if present, else ImageFolder `root/<split>/<class>/`."""
    root = Path(root)
    ann = root / "annotations" / f"{split}.json"
    if ann.is_file():
        return _load_coco(root, ann, split, tuple(classes))
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"test set {split!r} not found: neither {ann} nor the folder {split_dir} exists")
    folders = _class_folders(split_dir)
    if not folders:
        raise DataError(f"{split_dir}: no annotation file {ann} and no <class>/ subfolders; cannot label the images")
    samples = []
    for folder in folders:
        if folder.name not in classes:
            raise DataError(f"{folder}: unknown class {folder.name!r}; the model's classes are {list(classes)}")
        files = _image_files(folder)
        if not files:
            raise DataError(f"{folder}: class folder has no images")
        for f in files:
            samples.append(Sample(str(f.relative_to(root)), load_image(f), folder.name, frozenset({folder.name})))
    return Dataset(split, tuple(classes), tuple(samples), has_regions=False)


def _load_coco(root: Path, ann: Path, split: str, classes: tuple[str, ...]) -> Dataset:
    try:
        coco = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{ann}: cannot read annotation JSON ({exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{ann}: missing top-level key {key!r} (COCO format expected)")
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    known_other = {name for name in cats.values() if name not in classes}
    regions: dict[int, list[Region]] = {}
    for a in coco["annotations"]:
        name = cats.get(a.get("category_id"))
        if name is None:
            raise DataError(f"{ann}: annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
        if name not in classes:
            continue  # e.g. unknown_book: drawn in the data, not a class of the model
        seg = a.get("segmentation") or []
        poly = tuple(zip(seg[0][0::2], seg[0][1::2])) if seg else ()
        x, y, w, h = a["bbox"]
        regions.setdefault(a["image_id"], []).append(Region(name, tuple((float(px), float(py)) for px, py in poly), (x, y, w, h)))
    samples = []
    for img in coco["images"]:
        path = root / img["file_name"]
        if not path.is_file():
            raise DataError(f"{ann}: image {img['id']} points at missing file {path}")
        labels = set(img.get("acceptable_labels", []))
        primary = img.get("primary_label")
        for lbl in labels | {primary}:
            if lbl not in classes:
                hint = " (a category that is not a model class)" if lbl in known_other else ""
                raise DataError(f"{ann}: image {img['file_name']} names unknown label {lbl!r}{hint}; classes are {list(classes)}")
        if img.get("background_acceptable"):
            labels.add("background")
        labels.add(primary)
        tensor = load_image(path)
        h, w = tensor.shape[1:]
        for r in regions.get(img["id"], []):
            x, y, bw, bh = r.bbox
            tol = 1.0  # polygons are drawn by eye: allow a pixel of rounding at the frame
            if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol or bw <= 0 or bh <= 0:
                raise DataError(f"{ann}: box {list(r.bbox)} of {r.label!r} on {img['file_name']} lies outside the {w}x{h} image")
        samples.append(Sample(img["file_name"], tensor, primary, frozenset(labels), tuple(regions.get(img["id"], []))))
    if not samples:
        raise DataError(f"{ann}: no images listed")
    return Dataset(split, classes, tuple(samples), has_regions=True)


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per-class split so every class appears in both parts (at least one image each where it has two)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def oversample(labels: Sequence[int], indices: Sequence[int], seed: int) -> list[int]:
    """Repeat each class's images (whole copies, then a random remainder) up to the largest class's count."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    target = max(len(v) for v in by_class.values())
    out: list[int] = []
    for c in sorted(by_class):
        idx = by_class[c]
        reps, rest = divmod(target, len(idx))
        out += idx * reps + [int(i) for i in rng.choice(idx, size=rest, replace=False)]
    return sorted(out)


def resize_batch(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Stretch every image to size x size (as the reference's Keras loader did): uint8 N x 3 x size x size."""
    return torch.stack([TF.resize(im, [size, size], antialias=True) for im in images])
