"""The audit as a step: computed once per dataset fingerprint and reused. `<out>/audit.json` records the inputs it was
made from (the data's fingerprints, the embedding settings, the label probe's folds and seed); a rerun with the same
inputs reads it back. Frozen features are cached by image fingerprint in `<out>/audit/embeddings.npz`, and a small
JPEG thumbnail of every image a report may show is written under `<out>/audit/thumbs/`."""

from __future__ import annotations

import datetime as _dt
import io
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import artifacts, provenance
from harness.audit import labels
from harness.audit.compute import TRAIN, compute_evidence
from harness.audit.hashes import to_pil
from harness.audit.readers import AUDIT_FILE
from harness.data import DataError, Dataset, class_folders, discover_test_sets, load_test, load_train
from harness.data.images import working_short_side
from harness.embeddings import DEFAULT_SIZE, EmbeddingSettings, settings_for
from harness.rundir import step_state

AUDIT_DIR = "audit"  # the embedding cache and the thumbnails, beside audit.json
VERSION = 1  # of the evidence's layout and computation: a change makes older audit.json files stale
THUMB_SIDE = 128  # longer side of a thumbnail, px
THUMB_TRAIN_LOWEST = 10  # training images with the lowest label quality that get a thumbnail


def audit_inputs(
    train: Dataset | None,
    tests: Mapping[str, Dataset],
    settings: EmbeddingSettings,
    fingerprints: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What audit.json is made from: the data's fingerprints (those given, e.g. run.json's, else computed here),
    the embedding settings and the label probe's folds and seed."""
    fp = dict(fingerprints or {})
    test_fp = dict(fp.get("test") or {})
    return {
        "version": VERSION,
        "train": (fp.get("train") or provenance.dataset_fingerprint(train)) if train is not None else None,
        "test": {split: test_fp.get(split) or provenance.dataset_fingerprint(ds) for split, ds in tests.items()},
        "embedding": settings.to_dict(),
        "label_folds": labels.FOLDS,
        "label_seed": 0,
    }


def _thumbnail(image) -> bytes:
    im = to_pil(image)
    im.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _shown(evidence: dict[str, Any]) -> set[str]:
    """The images a report may show: every test image, the training images a test image is close to or a copy of,
    those with the lowest label quality, and those in a duplicate or near-duplicate pair."""
    sets = evidence["sets"]
    names = {r["image"] for split, s in sets.items() if split != TRAIN for r in s["images"]}
    for s in sets.values():
        for r in s["images"]:
            for key in ("nearest_train", "hash_nearest_train"):
                if r.get(key) and (r["image"] in names or key == "hash_nearest_train"):
                    names.add(r[key]["image"])
            names.update(r.get("exact_train") or [])
            if r.get("exact_train") or r.get("label_issue"):
                names.add(r["image"])
    train = [r for r in (sets.get(TRAIN) or {}).get("images", []) if r.get("label_quality") is not None]
    names.update(r["image"] for r in sorted(train, key=lambda r: r["label_quality"])[:THUMB_TRAIN_LOWEST])
    return names


def _write_thumbnails(out: Path, evidence: dict[str, Any], sets: Mapping[str, Dataset]) -> None:
    """A thumbnail per shown image, named by its pixel fingerprint; records get its path relative to `out`."""
    wanted = _shown(evidence)
    by_name = {s.name: s for ds in sets.values() for s in ds.samples}
    for recs in evidence["sets"].values():
        for r in recs["images"]:
            if r["image"] not in wanted:
                r["thumbnail"] = None
                continue
            rel = f"{AUDIT_DIR}/thumbs/{r['pixels'][:20]}.jpg"
            if not (out / rel).is_file():
                artifacts.atomic_write_bytes(out / rel, _thumbnail(by_name[r["image"]].image))
            r["thumbnail"] = rel


def audit_step(
    out: Path,
    train: Dataset | None,
    tests: Mapping[str, Dataset],
    data_root: Path,
    fingerprints: Mapping[str, Any] | None = None,
    weights_file: Path | None = None,
    size: int = DEFAULT_SIZE,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`<out>/audit.json` for these datasets: read back when it was made from the same inputs, else computed (frozen
    features of the shipped backbone, reused from the cache where an image was seen before) and written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    settings = settings_for(size=size)
    inputs = audit_inputs(train, tests, settings, fingerprints)
    path = out / AUDIT_FILE
    state, why = step_state(path, inputs)
    if state == "current" and not force:
        log(f"audit: {AUDIT_FILE} is current (same data), reused")
        return artifacts.read_json(path)
    if state == "stale":
        log(f"audit: recomputing {AUDIT_FILE} ({why})")
    t0 = time.perf_counter()
    evidence = compute_evidence(train, tests, data_root, settings, out / AUDIT_DIR / "embeddings.npz", weights_file)
    sets: dict[str, Dataset] = ({TRAIN: train} if train is not None else {}) | dict(tests)
    _write_thumbnails(out, evidence, sets)
    record = {
        "schema": 1,
        "inputs": inputs,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "data_root": str(Path(data_root).resolve()),
        **evidence,
    }
    record["seconds"]["with_thumbnails"] = time.perf_counter() - t0
    artifacts.write_json(path, record)
    n = sum(len(s["images"]) for s in evidence["sets"].values())
    log(f"audit: {n} images in {time.perf_counter() - t0:.1f} s -> {path}")
    return record


def _test_classes(root: Path, split: str) -> set[str]:
    """The labels a test set uses: its class folders, or the primary and acceptable labels of its COCO file's images
    (empty when unreadable: the loader then says what is wrong)."""
    ann = root / "annotations" / f"{split}.json"
    if ann.is_file():
        try:
            images = artifacts.read_json(ann).get("images") or []
            return {
                str(label)
                for im in images
                if isinstance(im, dict)
                for label in [im.get("primary_label"), *(im.get("acceptable_labels") or [])]
                if isinstance(label, str)
            }
        except (ValueError, OSError, AttributeError, TypeError):
            return set()
    return {f.name for f in class_folders(root / split)} if (root / split).is_dir() else set()


def training_set(data_root: Path, image_size: int = DEFAULT_SIZE) -> Dataset | None:
    """The dataset's training set at the working size of a model of `image_size`, None when it has no train/ folder
    (a dataset of test sets only: the audit then has no reference to compare them with)."""
    root = Path(data_root)
    return load_train(root, max_short_side=working_short_side(image_size)) if (root / "train").is_dir() else None


def load_for_audit(
    data_root: Path, test_sets: Sequence[str] | None = None, image_size: int = DEFAULT_SIZE
) -> tuple[Dataset | None, dict[str, Dataset]]:
    """(training set or None when the dataset has no train/ folder, {test set: Dataset}) at the working size of a
    model of `image_size`; test sets discovered when not named. A test set's classes that training lacks are kept
    (the audit names them) rather than refused. Unreadable input raises the loaders' DataError."""
    root = Path(data_root)
    short = working_short_side(image_size)
    train = training_set(root, image_size)
    splits = list(test_sets) if test_sets else list(discover_test_sets(root))
    base = list(train.classes) if train is not None else []
    tests = {}
    for split in splits:
        extra = sorted(_test_classes(root, split) - set(base))
        tests[split] = load_test(root, split, tuple(base + extra), max_short_side=short)
    if train is None and not tests:
        raise DataError(f"{root}: nothing to audit: no train/ folder and no test set")
    return train, tests
