"""Readers of the audit's per-image evidence (audit.json), never of a stored summary: which test images are near
copies of a training image, and which labels are suspect, under the thresholds of the moment ([thresholds.audit]).

A test image is a near copy of a training image when it is an exact copy (same file bytes or same pixels), when it is
at least as close to its nearest training image (cosine similarity of frozen features) as the `near_copy_quantile` of
the training images are to their nearest other training image (leave-one-out), or when their perceptual hashes differ
by at most `hash_distance_max` bits (a mirrored copy included)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.audit.similarity import reference_level
from harness.thresholds import AuditRule

AUDIT_FILE = "audit.json"
TRAIN = "train"
FIX = "rerun harness run (the audit is its first step) or harness audit --out {run_dir}"
Reading = tuple[float | None, str]  # (value or None, why there is none / a note)


class Malformed(ValueError):
    """audit.json does not hold the records a reader needs; the message names the set and what is wrong."""


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: unreadable ({exc})"
    if not isinstance(obj, dict):
        return None, f"{path.name}: not a JSON object"
    return obj, ""


def read_audit(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(audit.json's evidence, "") or (None, why it cannot be used): missing, unreadable, or made from other data
    than run.json records (its fingerprints)."""
    run_dir = Path(run_dir)
    evidence, why = _read(run_dir / AUDIT_FILE)
    fix = FIX.format(run_dir=run_dir)
    if evidence is None:
        return None, f"{why}; {fix}"
    proto, _ = _read(run_dir / "run.json")
    raw_data = (proto or {}).get("data")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
    raw_made = evidence.get("inputs")
    made: Mapping[str, Any] = raw_made if isinstance(raw_made, Mapping) else {}
    if not made:
        return None, f"{AUDIT_FILE} records no inputs (made by an older harness); {fix}"
    train_now, test_now = data.get("train"), data.get("test") if isinstance(data.get("test"), Mapping) else {}
    if train_now and made.get("train") != train_now:
        return None, f"{AUDIT_FILE} was made from another training set than run.json's; {fix}"
    raw_tests = made.get("test")
    tests_made: Mapping[str, Any] = raw_tests if isinstance(raw_tests, Mapping) else {}
    for split, fp in (test_now or {}).items():
        if tests_made.get(split) != fp:
            return None, f"{AUDIT_FILE} was made from another {split} than run.json's; {fix}"
    return evidence, ""


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def records(evidence: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """The per-image records of one set, each checked to be what the readers use (Malformed otherwise)."""
    sets = evidence.get("sets")
    if not isinstance(sets, Mapping) or split not in sets:
        raise Malformed(f"audit.json has no set {split!r}; rerun the audit")
    recs = sets[split].get("images") if isinstance(sets[split], Mapping) else None
    if not isinstance(recs, list):
        raise Malformed(f"audit.json: sets.{split}.images is not a list of per-image records; rerun the audit")
    for n, r in enumerate(recs):
        where = f"audit.json: sets.{split}.images[{n}]"
        if not isinstance(r, dict) or not isinstance(r.get("image"), str) or not isinstance(r.get("label"), str):
            raise Malformed(f"{where} is not an image record (image, label); rerun the audit")
        near = r.get("nearest_train")
        if near is not None and (
            not isinstance(near, dict) or not _num(near.get("similarity")) or abs(near["similarity"]) > 1 + 1e-6
        ):
            raise Malformed(f"{where}.nearest_train has no similarity in [-1, 1]; rerun the audit")
        hashed = r.get("hash_nearest_train")
        if hashed is not None and (not isinstance(hashed, dict) or not _num(hashed.get("distance"))):
            raise Malformed(f"{where}.hash_nearest_train has no distance; rerun the audit")
    return recs


def reference(evidence: Mapping[str, Any], rule: AuditRule) -> tuple[float | None, list[float]]:
    """(the near-copy level: the rule's quantile of the training images' leave-one-out similarities, those
    similarities); (None, []) when the dataset has no training set (or of one image)."""
    if not evidence.get("has_train"):
        return None, []
    loo = [r["nearest_train"]["similarity"] for r in records(evidence, TRAIN) if r.get("nearest_train")]
    return reference_level(loo, rule.near_copy_quantile), loo


def near_copies(evidence: Mapping[str, Any], split: str, rule: AuditRule) -> list[dict[str, Any]]:
    """The images of `split` that are near copies of a training image: image, its training source, how it was found
    ('exact copy', 'features', 'perceptual hash'), similarity and hash distance to that source. For the training set
    itself: its images with an exact copy or a hash match among the OTHER training images (duplicates within it)."""
    level, _ = reference(evidence, rule)
    out = []
    for r in records(evidence, split):
        near, hashed = r.get("nearest_train") or {}, r.get("hash_nearest_train") or {}
        exact = [x for x in r.get("exact_train") or [] if isinstance(x, str)]
        if exact:
            source, how = exact[0], "exact copy"
        elif split != TRAIN and level is not None and near and near["similarity"] >= level - 1e-9:
            source, how = near["image"], "features"
        elif hashed and hashed["distance"] <= rule.hash_distance_max:
            source, how = hashed["image"], "perceptual hash"
        else:
            continue
        out.append(
            {
                "image": r["image"],
                "label": r["label"],
                "source": source,
                "how": how,
                "similarity": near.get("similarity") if near.get("image") == source else None,
                "hash_distance": hashed.get("distance") if hashed.get("image") == source else None,
            }
        )
    return out


def read_independence(evidence: Mapping[str, Any], split: str, rule: AuditRule) -> Reading:
    """The share of `split`'s images that are near copies of a training image."""
    if not evidence.get("has_train"):
        return None, "skipped: the dataset has no training set to compare the test set with"
    try:
        recs = records(evidence, split)
        if not recs:
            return None, f"skipped: {split} has no image"
        level, _ = reference(evidence, rule)
        if level is None:
            return None, "skipped: the training set has fewer than 2 images (no leave-one-out reference)"
        return len(near_copies(evidence, split, rule)) / len(recs), ""
    except Malformed as exc:
        return None, str(exc)


def suspects(evidence: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """The images of `split` whose label cleanlab flags, lowest label quality first, each marked `acceptable` when
    the suggested label is one of the image's acceptable labels (an ambiguous primary label, not a wrong one)."""
    out = [
        {
            "image": r["image"],
            "label": r["label"],
            "suggested": r.get("suggested"),
            "probability": r.get("suggested_probability"),
            "quality": r.get("label_quality"),
            "acceptable": r.get("suggested") in (r.get("acceptable") or []),
        }
        for r in records(evidence, split)
        if r.get("label_issue") is True
    ]
    return sorted(out, key=lambda s: s["quality"] if _num(s["quality"]) else 2.0)


def read_label_suspects(evidence: Mapping[str, Any], split: str) -> Reading:
    """The share of `split`'s images whose label cleanlab flags and whose suggested label the image does not accept."""
    skipped = (evidence.get("labels") or {}).get("skipped") if isinstance(evidence.get("labels"), Mapping) else None
    if skipped:
        return None, f"skipped: labels not probed ({skipped})"
    try:
        recs = records(evidence, split)
        if not recs:
            return None, f"skipped: {split} has no image"
        if any(not isinstance(r.get("label_issue"), bool) for r in recs):
            return None, f"audit.json: an image of {split} has no label_issue flag; rerun the audit"
        return sum(1 for s in suspects(evidence, split) if not s["acceptable"]) / len(recs), ""
    except Malformed as exc:
        return None, str(exc)
