"""ImageFolder datasets: the train set `root/train/<class>/*.jpg`, test sets found and loaded (COCO-annotated or
ImageFolder), and the stratified split and oversampling of a training set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.data import images
from harness.data.coco import load_coco
from harness.data.images import DEFAULT_SHORT_SIDE
from harness.data.types import DataError, Dataset, Sample, inside

# what a class folder's photos may be (Pillow decodes each; a multi-frame GIF, WebP or TIFF gives its first frame)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# files an operating system leaves in folders: skipped like hidden files (and counted)
SYSTEM_FILES = ("Thumbs.db", "desktop.ini")


def _skipped(p: Path) -> bool:
    """Hidden files (.x.png, macOS's ._x.jpg resource forks, .DS_Store) and system files are never photos."""
    return p.name.startswith(".") or p.name in SYSTEM_FILES


def _is_image(p: Path) -> bool:
    return p.is_file() and not _skipped(p) and p.suffix.lower() in IMAGE_SUFFIXES


def _image_files(folder: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """(photos, skipped) of a class folder: every file that is not hidden is a photo, and one that is not an image
    format harness reads is a DataError naming it (never dropped silently); hidden and system files are skipped
    (the caller counts them). A photo that resolves outside the dataset root is a DataError."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    skipped = [p for p in files if _skipped(p)]
    photos = [p for p in files if not _skipped(p)]
    for f in photos:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"{f}: not an image harness reads (suffix {f.suffix or '(none)'!r}; it reads "
                f"{', '.join(IMAGE_SUFFIXES)}), and every file in a class folder is read as a photo; convert it "
                f"to JPEG or PNG, or move it out of {folder}"
            )
        _check_inside(root, f)
    return photos, skipped


def _check_inside(root: Path, f: Path) -> None:
    if not inside(root, f):
        raise DataError(
            f"{f}: resolves to {f.resolve()}, outside the dataset root {root}; copy the image into "
            f"the dataset instead of linking it"
        )


def ignored_note(ds: Dataset) -> str | None:
    """One line for the log: the hidden files `ds` skipped, counted and the first few named; None when none."""
    if not ds.ignored:
        return None
    n, names = len(ds.ignored), ", ".join(ds.ignored[:3]) + (", ..." if len(ds.ignored) > 3 else "")
    return f"{ds.name}: ignored {n} hidden file{'' if n == 1 else 's'} ({names})"


def class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sample(root: Path, f: Path, label: str, max_short_side: int | None) -> Sample:
    image, scale, size = images.decode_image(f, max_short_side)
    return Sample(f.relative_to(root).as_posix(), image, label, frozenset({label}), (), scale, size)


MIN_TRAIN_PER_CLASS = 2  # one to validate on, one to train on


def load_train(root: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE, min_per_class: int = 1) -> Dataset:
    """ImageFolder layout `root/train/<class>/*.jpg`; classes are the sorted folder names. Every class needs at
    least `min_per_class` photos, counted before any photo is decoded: training asks for MIN_TRAIN_PER_CLASS (a
    class without a validation photo would go unseen by the choice of the best epoch; with none at all the validation
    loss would be 0.0 and the first epoch always "best"); reading the set for anything else, for 1."""
    root = Path(root)
    split_dir = root / "train"
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: training folder missing; expected {root}/train/<class>/*.jpg")
    folders = class_folders(split_dir)
    if len(folders) < 2:
        raise DataError(f"{split_dir}: need at least 2 class folders, found {[f.name for f in folders]}")
    listed = {folder: _image_files(folder, root) for folder in folders}  # every folder listed before any decoding
    short = []
    for folder, (files, _) in listed.items():
        if not files:
            raise DataError(
                f"{folder}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        if len(files) < min_per_class:
            short.append(f"{folder} ({len(files)} photo{'' if len(files) == 1 else 's'})")
    if short:
        raise DataError(
            f"class folder{'s' if len(short) > 1 else ''} {', '.join(short)}: training holds out at least one photo "
            f"of every class for validation (the epoch with the best validation loss is the one kept) and trains on "
            f"the rest, so each class needs at least {min_per_class} photos; add photos to "
            f"{'them' if len(short) > 1 else 'it'}"
        )
    samples = [_sample(root, f, folder.name, max_short_side) for folder, (files, _) in listed.items() for f in files]
    ignored = [p for _, skipped in listed.values() for p in skipped]
    names = tuple(p.relative_to(root).as_posix() for p in ignored)
    return Dataset("train", tuple(f.name for f in folders), tuple(samples), has_regions=False, ignored=names)


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
        if not inside(root, p):
            raise DataError(
                f"{p}: resolves to {p.resolve()}, outside the dataset root {root}; copy the annotation "
                f"file into the dataset instead of linking it"
            )
        found.add(p.stem)
    return found


def _has_labelled_images(split_dir: Path, root: Path) -> bool:
    """True when `split_dir` holds a class folder (not hidden) with at least one image (not hidden)."""
    for c in class_folders(split_dir):
        images = [f for f in c.iterdir() if _is_image(f)]
        for f in images:
            _check_inside(root, f)
        if images:
            return True
    return False


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
    """A test split: COCO JSON at `root/annotations/<split>.json` if present, else ImageFolder
    `root/<split>/<class>/`."""
    root = Path(root)
    ann = root / "annotations" / f"{split}.json"
    if ann.is_file():
        return load_coco(root, ann, split, tuple(classes), max_short_side)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"test set {split!r} not found: neither {ann} nor the folder {split_dir} exists")
    folders = class_folders(split_dir)
    if not folders:
        raise DataError(f"{split_dir}: no annotation file {ann} and no <class>/ subfolders; cannot label the images")
    samples, ignored = [], []
    for folder in folders:
        if folder.name not in classes:
            raise DataError(f"{folder}: unknown class {folder.name!r}; the model's classes are {list(classes)}")
        files, skipped = _image_files(folder, root)
        ignored += skipped
        if not files:
            raise DataError(f"{folder}: class folder has no images")
        samples += [_sample(root, f, folder.name, max_short_side) for f in files]
    names = tuple(p.relative_to(root).as_posix() for p in ignored)
    return Dataset(split, tuple(classes), tuple(samples), has_regions=False, ignored=names)


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
