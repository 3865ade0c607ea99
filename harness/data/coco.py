"""The COCO annotation reader of a test set: the whole JSON document checked (typed, naming the file, the entry and the
key) before any image is decoded; polygons and boxes scaled onto the working images."""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from harness.data import images
from harness.data.images import DEFAULT_SHORT_SIDE
from harness.data.types import DataError, Dataset, Region, Sample, inside

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
    if absolute or climbs or not (inside(root, root / name) and inside(root, root / fname)):
        raise _fail(
            ann,
            where,
            f"file_name {_short(fname)} is not inside the dataset root {root} (absolute, or "
            f"climbing out with '..' or a symlink); image paths must be relative to the root",
        )
    return name, root / name


def _image_entries(coco: dict, root: Path, ann: Path, classes: tuple[str, ...], known_other: set[str]) -> list[_Entry]:
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


def load_coco(
    root: Path, ann: Path, split: str, classes: tuple[str, ...], max_short_side: int | None = DEFAULT_SHORT_SIDE
) -> Dataset:
    """The test set `split` from the COCO file `ann`: images decoded at working size, regions scaled onto them."""
    coco = _read_coco(ann)
    cats = _categories(coco, ann)
    entries = _image_entries(coco, root, ann, classes, {n for n in cats.values() if n not in classes})
    by_image = _annotations(coco, ann, cats, {e.id for e in entries}, classes)
    samples = []
    for e in entries:
        if not e.path.is_file():
            raise DataError(f"{ann}: {e.where}: points at missing file {e.path}; add the file or remove the entry")
        tensor, scale, (w, h) = images.decode_image(e.path, max_short_side)
        factors = (tensor.shape[2] / w, tensor.shape[1] / h) if scale != 1.0 else (1.0, 1.0)
        regions = _regions(ann, e, by_image.get(e.id, []), (w, h), factors)
        samples.append(Sample(e.name, tensor, e.primary, e.acceptable, regions, scale, (w, h)))
    return Dataset(split, classes, tuple(samples), has_regions=True)
