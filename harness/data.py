"""Load and validate a dataset (ImageFolder train set; COCO-annotated or ImageFolder test sets), split, oversample."""

from __future__ import annotations

import json
import math
import posixpath
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
        a = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(a * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32))
        a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    return im


# what Pillow raises on corrupt, truncated or unsupported files (its plugins are not uniform)
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    ZeroDivisionError,
)


def decode_image(
    path: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE
) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Decode to uint8 RGB 3 x H x W at working size: (tensor, scale, (width, height) of the photo as displayed).

    EXIF orientation is applied first (phone photos are stored rotated; COCO coordinates refer to the photo as
    displayed), 16-bit images are scaled to 8 bits (I;16*: value / 257; I: the same when any value exceeds 255;
    F: [0, 1] when its maximum is at most 1, else 0..255), CMYK / palette / grey become RGB, alpha is composited on
    white, and the shorter side is reduced to `max_short_side` (never enlarged; None: full size) with Lanczos
    resampling. JPEGs are decoded at reduced scale directly (draft mode: DCT scaling by 1/2, 1/4 or 1/8), so a
    12-megapixel photo never sits in memory at full size. `scale` is working pixels per displayed pixel along the
    shorter side (1.0 when not reduced). Corrupt or truncated files and decompression bombs (Pillow's
    Image.MAX_IMAGE_PIXELS; its warning counts as an error too) raise DataError naming the file.
    """
    import warnings

    from PIL import ImageOps

    if max_short_side is not None and max_short_side < 1:
        raise ValueError(f"max_short_side must be a positive number of pixels or None, got {max_short_side!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                orientation = im.getexif().get(0x0112, 1)
                w0, h0 = im.size
                if orientation in (5, 6, 7, 8):
                    w0, h0 = h0, w0
                scale = 1.0
                if max_short_side is not None and min(w0, h0) > max_short_side:
                    scale = max_short_side / min(w0, h0)
                    if im.format == "JPEG":
                        # draft size is in stored orientation; it picks a power-of-two scale >= the request
                        want = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                        im.draft("RGB", want)
                im.load()
                if orientation != 1:
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
                        im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
                arr = np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({exc}); Pillow's limit is "
            f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels. Downscale the image, or remove "
            f"it"
        ) from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); replace or remove the file") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), scale, (w0, h0)


def load_image(path: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3 x H x W); corrupt files raise DataError naming the file."""
    return decode_image(path, max_short_side)[0]


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):  # unreadable, a symlink loop, an embedded NUL
        return False


def _image_files(folder: Path, root: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for f in files:
        if not _inside(root, f):
            raise DataError(
                f"{f}: resolves to {f.resolve()}, outside the dataset root {root}; copy the image into "
                f"the dataset instead of linking it"
            )
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
            raise DataError(
                f"{folder}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        samples += [_sample(root, f, folder.name, max_short_side) for f in files]
    return Dataset("train", tuple(f.name for f in folders), tuple(samples), has_regions=False)


NOT_TEST_SETS = ("train", "annotations")  # folders beside the test sets that are never one


def _coco_splits(root: Path) -> set[str]:
    """Names of the `root/annotations/<split>.json` files (not hidden, not train.json; linked out: DataError)."""
    folder = root / "annotations"
    if not folder.is_dir():
        return set()
    found = set()
    for p in folder.iterdir():
        if p.suffix != ".json" or p.name.startswith(".") or p.stem in NOT_TEST_SETS or not p.is_file():
            continue
        if not _inside(root, p):
            raise DataError(
                f"{p}: resolves to {p.resolve()}, outside the dataset root {root}; copy the annotation "
                f"file into the dataset instead of linking it"
            )
        found.add(p.stem)
    return found


def _has_labelled_images(split_dir: Path, root: Path) -> bool:
    """True when `split_dir` holds a class folder (not hidden) with at least one image (not hidden)."""
    return any(any(not f.name.startswith(".") for f in _image_files(c, root)) for c in _class_folders(split_dir))


def discover_test_sets(root: Path) -> tuple[str, ...]:
    """The dataset's test sets, for a profile that names none: every `root/annotations/<split>.json` (COCO) and every
    folder beside `train/` holding `<class>/` folders with images (ImageFolder), sorted by name, each once (a split
    with both is one test set; load_test reads its COCO file). Never a test set: `train` (also `annotations/
    train.json`), `annotations`, hidden names. Images or annotation files that link outside the root, an unreadable
    folder, or no test set at all raise DataError naming the root and what to do."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; pass --data DIR holding train/<class>/*.jpg and test sets")
    try:
        found = _coco_splits(root)
        for p in sorted(root.iterdir()):
            if p.name in NOT_TEST_SETS or p.name.startswith(".") or p.name in found or not p.is_dir():
                continue
            if _has_labelled_images(p, root):
                found.add(p.name)
    except OSError as exc:  # a folder that cannot be listed (permissions, a vanished mount)
        raise DataError(
            f"{root}: cannot list the dataset's test sets ({exc}); fix the folder's permissions, or name "
            f"the test sets, e.g. --set 'test_sets=[\"test\"]'"
        ) from exc
    if not found:
        raise DataError(
            f"{root}: no test set found: looked for annotations/<split>.json (COCO) and for folders "
            f"<split>/<class>/*.jpg beside train/ (images: {', '.join(IMAGE_SUFFIXES)}); add a test set, "
            f"or name the test sets in the profile, e.g. --set 'test_sets=[\"x\"]'"
        )
    return tuple(sorted(found))


def load_test(
    root: Path, split: str, classes: Sequence[str], max_short_side: int | None = DEFAULT_SHORT_SIDE
) -> Dataset:
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
#
# The whole JSON document is checked before any image is decoded, so a typo in entry 900 costs no decoding and a
# path outside the dataset root is refused before anything is read from it.


@dataclass(frozen=True)
class _Entry:
    """One checked images[i]."""

    where: str  # "images[3]"
    id: int
    name: str  # normalised POSIX path relative to the root
    path: Path
    primary: str
    acceptable: frozenset[str]


@dataclass(frozen=True)
class _Annotation:
    """One checked annotations[i] of a model class, in pixels of the stored photo."""

    where: str  # "annotations[7]"
    label: str
    polygon: tuple[tuple[float, float], ...]
    bbox: tuple[float, float, float, float]


def _fail(ann: Path, where: str, msg: str) -> DataError:
    return DataError(f"{ann}: {where}: {msg}; fix the annotation file")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _req(obj: dict, key: str, types, ann: Path, where: str, what: str):
    """obj[key], which must exist and be of `types` (bool is never an int here); else DataError naming the key."""
    if key not in obj:
        raise _fail(ann, where, f"missing key {key!r} ({what})")
    v = obj[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
        raise _fail(ann, where, f"{key!r} = {_short(v)} must be {what}")
    return v


def _opt(obj: dict, key: str, types, default, ann: Path, where: str, what: str):
    return _req(obj, key, types, ann, where, what) if key in obj else default


def _list_of(obj: dict, key: str, ann: Path) -> list[dict]:
    """A top-level list whose items are all objects."""
    v = obj[key]
    if not isinstance(v, list):
        raise _fail(ann, "top level", f"{key!r} must be a list (COCO format), not {_short(v)}")
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise _fail(ann, f"{key}[{i}]", f"must be an object, not {_short(item)}")
    return v


def _str_list(obj: dict, key: str, ann: Path, where: str) -> list[str]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):  # a bare string is refused, not iterated
        raise _fail(ann, where, f'{key!r} = {_short(v)} must be a list of label strings (e.g. ["bayes"])')
    return v


def _bbox(a: dict, ann: Path, where: str) -> tuple[float, float, float, float]:
    b = _req(a, "bbox", list, ann, where, "a list [x, y, width, height]")
    if len(b) != 4 or not all(_is_number(x) for x in b):
        raise _fail(ann, where, f"'bbox' = {_short(b)} must be 4 numbers [x, y, width, height]")
    return tuple(float(x) for x in b)  # type: ignore[return-value]


def _polygon(a: dict, ann: Path, where: str) -> tuple[tuple[float, float], ...]:
    """The first polygon of `segmentation` (all are checked; absent or null: no polygon)."""
    seg = a.get("segmentation")
    if seg is None:
        return ()
    if not isinstance(seg, list):
        raise _fail(
            ann,
            where,
            f"'segmentation' = {_short(seg)} must be a list of polygons [[x1, y1, x2, y2, ...]] "
            f"(RLE masks are not supported)",
        )
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_is_number(x) for x in poly):
            raise _fail(
                ann,
                where,
                f"'segmentation'[{k}] = {_short(poly)} must be an even-length list of at least "
                f"6 numbers [x1, y1, x2, y2, x3, y3, ...]",
            )
    return tuple((float(x), float(y)) for x, y in zip(seg[0][0::2], seg[0][1::2])) if seg else ()


def _read_coco(ann: Path) -> dict:
    try:
        coco = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{ann}: cannot read annotation JSON ({exc}); fix or regenerate the file") from exc
    if not isinstance(coco, dict):
        raise DataError(
            f"{ann}: the file holds {_short(coco)}, not a COCO object with images, annotations and "
            f"categories; fix the annotation file"
        )
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{ann}: missing top-level key {key!r} (COCO format expected)")
    return coco


def _categories(coco: dict, ann: Path) -> dict[int, str]:
    cats: dict[int, str] = {}
    for i, c in enumerate(_list_of(coco, "categories", ann)):
        where = f"categories[{i}]"
        cid = _req(c, "id", int, ann, where, "an integer")
        if cid in cats:
            raise _fail(ann, where, f"duplicate category id {cid}")
        cats[cid] = _req(c, "name", str, ann, where, "a string")
    return cats


def _image_path(root: Path, fname: str, ann: Path, where: str) -> tuple[str, Path]:
    """(normalised POSIX name, path) of a file_name that stays inside the root, symlinks followed; else DataError."""
    name = posixpath.normpath(fname) if fname.strip() and "\0" not in fname else ""
    absolute = PurePosixPath(fname).is_absolute() or bool(PureWindowsPath(fname).anchor)
    climbs = not name or name == ".." or name.startswith("../")
    # both the lexical and the physical reading ("link/.." goes where the link points) must stay inside
    if absolute or climbs or not (_inside(root, root / name) and _inside(root, root / fname)):
        raise _fail(
            ann,
            where,
            f"file_name {_short(fname)} is not inside the dataset root {root} (absolute, or "
            f"climbing out with '..' or a symlink); image paths must be relative to the root",
        )
    return name, root / name


def _images(coco: dict, root: Path, ann: Path, classes: tuple[str, ...], known_other: set[str]) -> list[_Entry]:
    entries: list[_Entry] = []
    seen: dict[int, str] = {}
    for i, img in enumerate(_list_of(coco, "images", ann)):
        where = f"images[{i}]"
        iid = _req(img, "id", int, ann, where, "an integer")
        if iid in seen:
            raise _fail(ann, where, f"duplicate image id {iid} (also {seen[iid]})")
        seen[iid] = where
        fname = _req(img, "file_name", str, ann, where, "a path relative to the dataset root")
        name, path = _image_path(root, fname, ann, where)
        where = f"{where} ({name})"
        primary = _req(img, "primary_label", str, ann, where, "a label string")
        labels = set(_str_list(img, "acceptable_labels", ann, where))
        for lbl in sorted(labels | {primary}):
            if lbl not in classes:
                hint = " (a category that is not a model class)" if lbl in known_other else ""
                raise _fail(ann, where, f"image {fname} names unknown label {lbl!r}{hint}; classes are {list(classes)}")
        if _opt(img, "background_acceptable", bool, False, ann, where, "true or false"):
            labels.add("background")
        entries.append(_Entry(where, iid, name, path, primary, frozenset(labels | {primary})))
    if not entries:
        raise DataError(f"{ann}: no images listed; add entries to 'images'")
    return entries


def _annotations(
    coco: dict, ann: Path, cats: dict[int, str], image_ids: set[int], classes: tuple[str, ...]
) -> dict[int, list[_Annotation]]:
    """Checked annotations of model classes by image id (others, e.g. unknown_book, are checked and dropped)."""
    by_image: dict[int, list[_Annotation]] = {}
    for i, a in enumerate(_list_of(coco, "annotations", ann)):
        where = f"annotations[{i}]"
        cid = _req(a, "category_id", int, ann, where, "an integer")
        image_id = _req(a, "image_id", int, ann, where, "an integer")
        bbox, poly = _bbox(a, ann, where), _polygon(a, ann, where)
        if cid not in cats:
            raise _fail(ann, where, f"unknown category_id {cid} (categories are {sorted(cats)})")
        if image_id not in image_ids:
            raise _fail(ann, where, f"image_id {image_id} matches no entry of 'images'")
        if cats[cid] in classes:
            by_image.setdefault(image_id, []).append(_Annotation(where, cats[cid], poly, bbox))
    return by_image


def _regions(
    ann: Path, entry: _Entry, anns: Sequence[_Annotation], size: tuple[int, int], factors: tuple[float, float]
) -> tuple[Region, ...]:
    """Bounds checked in stored pixels (`size`), then scaled per axis by `factors` onto the working image."""
    w, h = size
    sx, sy = factors
    tol = 1.0  # polygons are drawn by eye: allow a pixel of rounding at the frame
    out = []
    for a in anns:
        x, y, bw, bh = a.bbox
        if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol or bw <= 0 or bh <= 0:
            raise DataError(
                f"{ann}: {a.where}: box {list(a.bbox)} of {a.label!r} on {entry.name} lies outside the "
                f"{w}x{h} image; fix the annotation file"
            )
        if any(px < -tol or py < -tol or px > w + tol or py > h + tol for px, py in a.polygon):
            raise DataError(
                f"{ann}: {a.where}: polygon of {a.label!r} on {entry.name} has points outside the "
                f"{w}x{h} image; fix the annotation file"
            )
        out.append(
            Region(a.label, tuple((px * sx, py * sy) for px, py in a.polygon), (x * sx, y * sy, bw * sx, bh * sy))
        )
    return tuple(out)


def _load_coco(
    root: Path, ann: Path, split: str, classes: tuple[str, ...], max_short_side: int | None = DEFAULT_SHORT_SIDE
) -> Dataset:
    coco = _read_coco(ann)
    cats = _categories(coco, ann)
    entries = _images(coco, root, ann, classes, {n for n in cats.values() if n not in classes})
    by_image = _annotations(coco, ann, cats, {e.id for e in entries}, classes)
    samples = []
    for e in entries:
        if not e.path.is_file():
            raise DataError(f"{ann}: {e.where}: points at missing file {e.path}; add the file or remove the entry")
        tensor, scale, (w, h) = decode_image(e.path, max_short_side)
        factors = (tensor.shape[2] / w, tensor.shape[1] / h) if scale != 1.0 else (1.0, 1.0)
        regions = _regions(ann, e, by_image.get(e.id, []), (w, h), factors)
        samples.append(Sample(e.name, tensor, e.primary, e.acceptable, regions, scale, (w, h)))
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
