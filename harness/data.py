"""Load and validate a dataset (ImageFolder train set; COCO-annotated or ImageFolder test sets), split, oversample."""

from __future__ import annotations

import json
import os
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
    name: str  # normalised POSIX path relative to the dataset root, e.g. "test_difficult/img_5490.jpg"
    image: torch.Tensor  # uint8, 3 x H x W, decoded once, at working size
    label: str  # the primary label
    acceptable: frozenset[str]  # labels that count as correct for soft accuracy
    regions: tuple[Region, ...] = ()  # in pixels of `image` (scaled with it)
    scale: float = 1.0  # working pixels per stored pixel (<= 1)
    original_size: tuple[int, int] | None = None  # (width, height) of the stored photo, EXIF orientation applied


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


DEFAULT_SHORT_SIDE = 512


def working_short_side(image_size: int) -> int:
    """The shorter side images are kept at: twice the largest size in use, at least 512 (so the bundled 640 x 480
    photos stay as stored and published figures do not move)."""
    return max(2 * int(image_size), DEFAULT_SHORT_SIDE)


def _to_8bit(im: Image.Image) -> Image.Image:
    """High-bit-depth modes scaled to 8 bits (Pillow's convert('RGB') would clip them to white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(a * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    return im


def decode_image(path: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Decode to uint8 RGB 3 x H x W at working size: (tensor, scale, (stored width, stored height)).

    EXIF orientation is applied (phone photos are stored rotated), 16-bit images are scaled to 8 bits, CMYK /
    palette / alpha / grey become RGB, and the shorter side is reduced to `max_short_side` (never enlarged); JPEGs
    are decoded at reduced scale directly (draft mode), so a 12-megapixel photo never sits in memory at full size.
    Corrupt files and decompression bombs raise DataError naming the file.
    """
    import warnings

    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                orientation = im.getexif().get(0x0112, 1)
                w0, h0 = im.size
                if orientation in (5, 6, 7, 8):
                    w0, h0 = h0, w0
                scale = 1.0
                if max_short_side and min(w0, h0) > max_short_side:
                    scale = max_short_side / min(w0, h0)
                    if im.format == "JPEG":
                        # draft size is in stored orientation; it picks a power-of-two scale >= the request
                        want = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                        im.draft("RGB", want)
                im.load()
                im = ImageOps.exif_transpose(im)
                im = _to_8bit(im)
                if im.mode not in ("RGB",):
                    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                        im = im.convert("RGBA")
                        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                        im = Image.alpha_composite(bg, im)
                    im = im.convert("RGB")
                if scale < 1.0:
                    target = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
                    if im.size != target:
                        im = im.resize(target, Image.Resampling.LANCZOS)
                arr = np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a possible decompression bomb ({exc}); Pillow's limit is "
                        f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels. Downscale the image, or remove "
                        f"it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); replace or remove the file") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), scale, (w0, h0)


def load_image(path: Path, max_short_side: int | None = None) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3 x H x W); corrupt files raise DataError naming the file."""
    return decode_image(path, max_short_side)[0]


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _image_files(folder: Path, root: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for f in files:
        if not _inside(root, f):
            raise DataError(f"{f}: resolves to {f.resolve()}, outside the dataset root {root}; copy the image into "
                            f"the dataset instead of linking it")
    return files


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sample(root: Path, f: Path, label: str, max_short_side: int | None) -> Sample:
    image, scale, size = decode_image(f, max_short_side)
    return Sample(f.relative_to(root).as_posix(), image, label, frozenset({label}), (), scale, size)


def load_train(root: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE) -> Dataset:
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
        files = _image_files(folder, root)
        if not files:
            raise DataError(f"{folder}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it")
        samples += [_sample(root, f, folder.name, max_short_side) for f in files]
    return Dataset("train", tuple(f.name for f in folders), tuple(samples), has_regions=False)


def load_test(root: Path, split: str, classes: Sequence[str], max_short_side: int | None = DEFAULT_SHORT_SIDE) -> Dataset:
    """A test split: COCO JSON at `root/annotations/<split>.json` if present, else ImageFolder `root/<split>/<class>/`."""
    root = Path(root)
    ann = root / "annotations" / f"{split}.json"
    if ann.is_file():
        return _load_coco(root, ann, split, tuple(classes), max_short_side)
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
        files = _image_files(folder, root)
        if not files:
            raise DataError(f"{folder}: class folder has no images")
        samples += [_sample(root, f, folder.name, max_short_side) for f in files]
    return Dataset(split, tuple(classes), tuple(samples), has_regions=False)


# --- COCO: one validation layer, typed, naming the file, the entry and the key ---------------------------------------

_NUM = (int, float)


def _fail(ann: Path, where: str, msg: str) -> DataError:
    return DataError(f"{ann}: {where}: {msg}; fix the annotation file")


def _req(obj: dict, key: str, types, ann: Path, where: str, what: str):
    if key not in obj:
        raise _fail(ann, where, f"missing key {key!r} ({what})")
    v = obj[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(ann, where, f"{key!r} = {v!r} must be {what}")
    if not isinstance(v, types):
        raise _fail(ann, where, f"{key!r} = {_short(v)} must be {what}")
    return v


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _list_of(obj: dict, key: str, ann: Path, where: str):
    v = obj.get(key)
    if not isinstance(v, list):
        raise _fail(ann, where, f"{key!r} must be a list (COCO format), not {_short(v)}")
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise _fail(ann, f"{key}[{i}]", f"must be an object, not {_short(item)}")
    return v


def _str_list(img: dict, key: str, ann: Path, where: str) -> list[str]:
    v = img.get(key, [])
    if isinstance(v, str) or not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(ann, where, f"{key!r} = {_short(v)} must be a list of label strings (e.g. [\"bayes\"])")
    return v


def _bbox(a: dict, ann: Path, where: str) -> tuple[float, float, float, float]:
    b = _req(a, "bbox", list, ann, where, "a list [x, y, width, height]")
    if len(b) != 4 or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in b):
        raise _fail(ann, where, f"'bbox' = {_short(b)} must be 4 numbers [x, y, width, height]")
    return tuple(float(x) for x in b)  # type: ignore[return-value]


def _polygon(a: dict, ann: Path, where: str) -> tuple[tuple[float, float], ...]:
    seg = a.get("segmentation") or []
    if not isinstance(seg, list) or not all(isinstance(p, list) for p in seg):
        raise _fail(ann, where, f"'segmentation' = {_short(seg)} must be a list of polygons [[x1, y1, x2, y2, ...]]")
    if not seg:
        return ()
    poly = seg[0]
    if len(poly) < 6 or len(poly) % 2 or not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in poly):
        raise _fail(ann, where, f"'segmentation'[0] = {_short(poly)} must be an even list of at least 6 numbers")
    return tuple((float(x), float(y)) for x, y in zip(poly[0::2], poly[1::2]))


def _load_coco(root: Path, ann: Path, split: str, classes: tuple[str, ...],
               max_short_side: int | None = DEFAULT_SHORT_SIDE) -> Dataset:
    try:
        coco = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{ann}: cannot read annotation JSON ({exc})") from exc
    if not isinstance(coco, dict):
        raise DataError(f"{ann}: the file holds {_short(coco)}, not a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{ann}: missing top-level key {key!r} (COCO format expected)")
    cats: dict[int, str] = {}
    for i, c in enumerate(_list_of(coco, "categories", ann, "top level")):
        cats[_req(c, "id", int, ann, f"categories[{i}]", "an integer")] = _req(c, "name", str, ann, f"categories[{i}]", "a string")
    known_other = {name for name in cats.values() if name not in classes}
    images = _list_of(coco, "images", ann, "top level")
    ids: dict[int, int] = {}
    for i, img in enumerate(images):
        iid = _req(img, "id", int, ann, f"images[{i}]", "an integer")
        if iid in ids:
            raise _fail(ann, f"images[{i}]", f"duplicate image id {iid} (also images[{ids[iid]}])")
        ids[iid] = i
    raw_regions: dict[int, list[tuple[str, tuple, tuple, str]]] = {}
    for i, a in enumerate(_list_of(coco, "annotations", ann, "top level")):
        where = f"annotations[{i}]"
        cid = _req(a, "category_id", int, ann, where, "an integer")
        image_id = _req(a, "image_id", int, ann, where, "an integer")
        bbox, poly = _bbox(a, ann, where), _polygon(a, ann, where)
        name = cats.get(cid)
        if name is None:
            raise _fail(ann, where, f"unknown category_id {cid} (categories are {sorted(cats)})")
        if image_id not in ids:
            raise _fail(ann, where, f"image_id {image_id} matches no entry of 'images'")
        if name not in classes:
            continue  # e.g. unknown_book: drawn in the data, not a class of the model
        raw_regions.setdefault(image_id, []).append((name, poly, bbox, where))
    samples = []
    for i, img in enumerate(images):
        where = f"images[{i}]"
        fname = _req(img, "file_name", str, ann, where, "a path relative to the dataset root")
        rel = Path(fname)
        path = root / rel
        if rel.is_absolute() or not fname.strip() or not _inside(root, path):
            raise _fail(ann, where, f"file_name {fname!r} is not inside the dataset root {root} (absolute or "
                                    f"climbing out with '..'); image paths must be relative to the root")
        if not path.is_file():
            raise DataError(f"{ann}: {where} (image {img['id']}) points at missing file {path}")
        labels = set(_str_list(img, "acceptable_labels", ann, where))
        primary = _req(img, "primary_label", str, ann, where, "a label string")
        bg = img.get("background_acceptable", False)
        if not isinstance(bg, bool):
            raise _fail(ann, where, f"'background_acceptable' = {_short(bg)} must be true or false")
        for lbl in labels | {primary}:
            if lbl not in classes:
                hint = " (a category that is not a model class)" if lbl in known_other else ""
                raise DataError(f"{ann}: {where}: image {fname} names unknown label {lbl!r}{hint}; classes are {list(classes)}")
        if bg:
            labels.add("background")
        labels.add(primary)
        tensor, scale, (w, h) = decode_image(path, max_short_side)
        regions = []
        tol = 1.0  # polygons are drawn by eye: allow a pixel of rounding at the frame
        for name, poly, (x, y, bw, bh), awhere in raw_regions.get(img["id"], []):
            if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol or bw <= 0 or bh <= 0:
                raise DataError(f"{ann}: {awhere}: box {[x, y, bw, bh]} of {name!r} on {fname} lies outside the {w}x{h} image")
            if any(px < -tol or py < -tol or px > w + tol or py > h + tol for px, py in poly):
                raise DataError(f"{ann}: {awhere}: polygon of {name!r} on {fname} has points outside the {w}x{h} image")
            regions.append(Region(name, tuple((px * scale, py * scale) for px, py in poly),
                                  (x * scale, y * scale, bw * scale, bh * scale)))
        samples.append(Sample(Path(os.path.normpath(fname)).as_posix(),
                              tensor, primary, frozenset(labels), tuple(regions), scale, (w, h)))
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
