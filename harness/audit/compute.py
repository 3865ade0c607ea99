"""The audit's evidence, one record per image of every set (training set and each test set): file sha256, pixel
fingerprint, perceptual hashes, the nearest training image by hash and by frozen-feature cosine similarity (for a
training image: its nearest OTHER training image, the leave-one-out reference), exact copies, out-of-sample label
scores and CleanVision's image properties. Judgements (near copy or not, suspect or not) are made from these records
by harness.audit.readers, with the thresholds of the moment."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import sha256_file
from harness.audit import hashes, health, labels, similarity
from harness.data import DataError, Dataset
from harness.embeddings import EmbeddingSettings, embed, image_fingerprint

TRAIN = "train"  # the training set's key among the audit's sets


def _file_sha(root: Path, name: str) -> str:
    path = Path(root) / name
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file to hash it ({exc.strerror or exc}); check the dataset") from exc


def _base_record(root: Path, sample, split: str) -> dict[str, Any]:
    pil = hashes.to_pil(sample.image)
    h, m = hashes.phash_pair(pil)
    return {
        "image": sample.name,
        "label": sample.label,
        "acceptable": sorted(sample.acceptable),
        "sha256": _file_sha(root, sample.name),
        "pixels": image_fingerprint(sample.image),
        "phash": h,
        "phash_mirror": m,
        "size": list(sample.original_size) if sample.original_size else None,
        "properties": health.properties(sample.image, pil),
    }


def _nearest_records(records: list[dict], train_records: list[dict], feats: np.ndarray, train_feats: np.ndarray, own):
    """Fill each record's nearest training image (cosine), nearest by perceptual hash and exact copies in training.
    `own`: the records are the training set's (each image's own entry left out)."""
    idx, sim = similarity.nearest(feats, train_feats, leave_one_out=own)
    pairs = [(r["phash"], r["phash_mirror"]) for r in records]
    train_pairs = [(r["phash"], r["phash_mirror"]) for r in train_records]
    dist = hashes.mirrored_distances(pairs, train_pairs).astype(float)
    if own and len(records):
        np.fill_diagonal(dist, np.inf)
    for i, r in enumerate(records):
        if train_records and np.isfinite(sim[i]):
            t = train_records[int(idx[i])]
            r["nearest_train"] = {"image": t["image"], "label": t["label"], "similarity": float(sim[i])}
        else:
            r["nearest_train"] = None
        if train_records and np.isfinite(dist[i]).any():
            j = int(np.argmin(dist[i]))
            r["hash_nearest_train"] = {"image": train_records[j]["image"], "distance": int(dist[i, j])}
        else:
            r["hash_nearest_train"] = None
        r["exact_train"] = [
            t["image"]
            for t in train_records
            if t is not r and (t["sha256"] == r["sha256"] or t["pixels"] == r["pixels"])
        ]


def compute_evidence(
    train: Dataset | None,
    tests: Mapping[str, Dataset],
    data_root: Path,
    settings: EmbeddingSettings,
    cache: Path | None = None,
    weights_file: Path | None = None,
    folds: int = labels.FOLDS,
    seed: int = 0,
) -> dict[str, Any]:
    """The audit's evidence (audit.json without its inputs): per set, per image records; the label probe's settings
    and notes; the training classes; seconds per stage."""
    t0 = time.perf_counter()
    sets: dict[str, Dataset] = ({TRAIN: train} if train is not None else {}) | dict(tests)
    records = {split: [_base_record(Path(data_root), s, split) for s in ds.samples] for split, ds in sets.items()}
    t1 = time.perf_counter()
    order = [(split, i) for split, ds in sets.items() for i in range(len(ds.samples))]
    vectors, computed = embed([sets[s].samples[i].image for s, i in order], settings, cache, weights_file)
    t2 = time.perf_counter()
    feats: dict[str, np.ndarray] = {}
    start = 0
    for split, ds in sets.items():
        feats[split] = vectors[start : start + len(ds.samples)]
        start += len(ds.samples)
    train_records = records.get(TRAIN, [])
    train_feats = feats.get(TRAIN, np.zeros((0, vectors.shape[1]), np.float32))
    for split, recs in records.items():
        _nearest_records(recs, train_records, feats[split], train_feats, own=split == TRAIN)
    t3 = time.perf_counter()
    flat = [r for recs in records.values() for r in recs]
    scores, probed = labels.score_labels(vectors, [r["label"] for r in flat], folds, seed)
    for k, r in enumerate(flat):
        r["label_quality"] = scores.quality[k]
        r["suggested"] = scores.suggested[k]
        r["suggested_probability"] = scores.suggested_probability[k]
        r["label_issue"] = scores.issue[k]
    t4 = time.perf_counter()
    return {
        "classes": list(train.classes) if train is not None else sorted({r["label"] for r in flat}),
        "has_train": train is not None,
        "sets": {split: {"images": recs} for split, recs in records.items()},
        "labels": {
            "method": "K-fold logistic regression (scikit-learn, standardised features, C=1) over every labelled "
            "image of every set, ranked by cleanlab's self-confidence; flagged by cleanlab.filter.find_label_issues "
            "(prune_by_noise_rate)",
            "folds": folds,
            "seed": seed,
            "classes_probed": list(probed),
            "skipped": scores.skipped,
            "notes": list(scores.notes),
        },
        "embedding": settings.to_dict() | {"computed": computed, "reused": len(order) - computed},
        "seconds": {
            "hashes_and_properties": t1 - t0,
            "embeddings": t2 - t1,
            "nearest": t3 - t2,
            "labels": t4 - t3,
            "total": t4 - t0,
        },
    }
