"""The baseline ladder as a step of `harness run` (after the audit) and `harness check`: a linear probe and
k-nearest-neighbours (harness.baselines.fit) on frozen ImageNet features (harness.embeddings) of the run's training
split, each evaluated on every test set with the models' own metrics (harness.evaluate.split_metrics: per-image
predictions with their probabilities, soft and strict accuracy, Wilson intervals). `<out>/baselines.json` records the
inputs it was made from (data fingerprints, classes, feature settings, scikit-learn's version, the grids); a rerun
with the same inputs reads it back.

Features: for `harness run`, those of the run's backbone when its ImageNet weights can be had offline (at the
profile's image size), else those of the shipped EfficientNet-Lite0; for `harness check`, the shipped Lite0 at 224 px.
Vectors are cached by image fingerprint: in the audit's cache when the settings are the audit's, else in
`<out>/baselines/embeddings.npz`."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sklearn

from harness import artifacts
from harness.audit.step import AUDIT_DIR, audit_inputs
from harness.backbones import check_weights_available
from harness.baselines import fit
from harness.baselines.files import BASELINES_FILE
from harness.checkpoints import WeightsUnavailable
from harness.data import Dataset
from harness.embeddings import DEFAULT_BACKBONE, DEFAULT_SIZE, EmbeddingSettings, embed, settings_for
from harness.evaluate import split_metrics
from harness.rundir import CURRENT, STALE, step_state

VERSION = 1  # of the evidence's layout and computation: a change makes older baselines.json files stale
OWN_CACHE = "baselines/embeddings.npz"  # when the features are not the audit's


def feature_choice(
    backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE, weights_file: Path | None = None
) -> tuple[EmbeddingSettings, Path | None, str]:
    """(the feature settings, the weights file to read them with, why these): `backbone`'s ImageNet features when its
    weights can be had offline, else the shipped EfficientNet-Lite0's (at the same size)."""
    try:
        check_weights_available(backbone, weights_file)
        return settings_for(backbone, size, weights_file), weights_file, f"the run's backbone {backbone}"
    except WeightsUnavailable as exc:
        why = f"the shipped {DEFAULT_BACKBONE}: {backbone}'s ImageNet weights are not available offline ({exc})"
        return settings_for(DEFAULT_BACKBONE, size), None, why


def baselines_inputs(
    train_fp: str | None, test_fps: Mapping[str, str], classes: Sequence[str], settings: EmbeddingSettings
) -> dict[str, Any]:
    """What baselines.json is made from."""
    return {
        "version": VERSION,
        "train": train_fp,
        "test": dict(test_fps),
        "classes": list(classes),
        "features": settings.to_dict(),
        "sklearn": sklearn.__version__,
        "grids": {"C": list(fit.CS), "k": list(fit.KS), "max_folds": fit.MAX_FOLDS, "seed": fit.SEED},
    }


def _cache(out: Path, settings: EmbeddingSettings) -> Path:
    return out / AUDIT_DIR / "embeddings.npz" if settings == settings_for() else out / OWN_CACHE


def compute_baselines(
    train: Dataset,
    tests: Mapping[str, Dataset],
    classes: Sequence[str],
    settings: EmbeddingSettings,
    cache: Path | None = None,
    weights_file: Path | None = None,
) -> dict[str, Any]:
    """The evidence (baselines.json without its inputs): the fits and, per test set, each baseline's split_metrics."""
    t0 = time.perf_counter()
    order = [s.image for s in train.samples] + [s.image for ds in tests.values() for s in ds.samples]
    vectors, computed = embed(order, settings, cache, weights_file)
    t1 = time.perf_counter()
    x_train = vectors[: len(train.samples)]
    labels = [s.label for s in train.samples]
    out: dict[str, Any] = {
        "train": {"n": len(labels), "counts": {c: labels.count(c) for c in sorted(set(labels))}},
        "features_computed": computed,
        "skipped": "",
        "test_sets": {},
    }
    try:
        fitted = {"probe": fit.fit_probe(x_train, labels), "knn": fit.fit_knn(x_train, labels)}
    except fit.CannotFit as exc:
        return out | {"skipped": f"skipped: {exc}", "seconds": {"features": t1 - t0, "total": t1 - t0}}
    t2 = time.perf_counter()
    start = len(train.samples)
    for split, ds in tests.items():
        x = vectors[start : start + len(ds.samples)]
        start += len(ds.samples)
        if not ds.samples:
            continue
        out["test_sets"][split] = {
            name: split_metrics(ds, None, classes, probabilities=fit.probabilities(f, x, classes))
            for name, f in fitted.items()
        }
    t3 = time.perf_counter()
    out |= {name: f.record() for name, f in fitted.items()}
    out["seconds"] = {"features": t1 - t0, "fit": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
    return out


def baselines_step(
    out: Path,
    train: Dataset | None,
    tests: Mapping[str, Dataset],
    classes: Sequence[str],
    fingerprints: Mapping[str, Any] | None = None,
    features: tuple[EmbeddingSettings, Path | None, str] | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`<out>/baselines.json` for these datasets: read back when made from the same inputs, else computed and
    written. `fingerprints`: run.json's data fingerprints ({"train": ..., "test": {split: ...}}), computed when absent;
    `features`: feature_choice's answer (default: the shipped Lite0 at 224 px). No training set: recorded as skipped."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    settings, weights_file, why = features or feature_choice()
    data = audit_inputs(train, tests, settings, fingerprints)  # the data's fingerprints, as the audit takes them
    inputs = baselines_inputs(data["train"], data["test"], classes, settings)
    path = out / BASELINES_FILE
    state, reason = step_state(path, inputs)
    if state == CURRENT and not force:
        log(f"baselines: {BASELINES_FILE} is current (same data and features), reused")
        return artifacts.read_json(path)
    if state == STALE:
        log(f"baselines: recomputing {BASELINES_FILE} ({reason})")
    t0 = time.perf_counter()
    if train is None:
        evidence: dict[str, Any] = {"skipped": "skipped: the dataset has no train/ folder to fit a baseline on"}
        evidence["test_sets"] = {}
    else:
        evidence = compute_baselines(train, tests, classes, settings, _cache(out, settings), weights_file)
    record = {
        "schema": 1,
        "inputs": inputs,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "features": settings.to_dict() | {"why": why},
        **evidence,
    }
    artifacts.write_json(path, record)
    said = "; ".join(
        f"{split}: probe soft {e['probe']['soft']['value']:.2f}, kNN soft {e['knn']['soft']['value']:.2f}"
        for split, e in record["test_sets"].items()
    )
    log(f"baselines: {said or record.get('skipped')} ({time.perf_counter() - t0:.1f} s) -> {path}")
    return record


def promise(features: tuple[EmbeddingSettings, Path | None, str]) -> dict[str, Any]:
    """run.json's record that the run computes the ladder (so a missing baselines.json is an ERROR, never absent),
    with feature_choice's answer: the feature settings and why those."""
    settings, _, why = features
    return {"file": BASELINES_FILE, "features": settings.to_dict(), "why": why}
