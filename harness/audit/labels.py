"""Label suspects: out-of-sample class probabilities from a K-fold logistic regression on frozen image features
(scikit-learn), ranked by cleanlab (Northcutt et al., confident learning): the given label's out-of-sample probability
is its label quality score (cleanlab.rank, self-confidence), and cleanlab.filter.find_label_issues flags the labels
it finds likely wrong."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FOLDS = 5
C = 1.0  # inverse L2 strength of the probe: scikit-learn's default, on features standardised within each fold
MIN_PER_CLASS = 2  # a class with fewer labelled images cannot be predicted out of sample


@dataclass(frozen=True)
class LabelScores:
    """Per image: the out-of-sample probability of its given label (cleanlab's self-confidence quality score), the
    most probable label and its probability, and whether cleanlab flags the label; `notes` what was said on the way
    (cleanlab's warnings, classes left out)."""

    quality: tuple[float | None, ...]
    suggested: tuple[str | None, ...]
    suggested_probability: tuple[float | None, ...]
    issue: tuple[bool, ...]
    notes: tuple[str, ...] = ()
    skipped: str = ""  # why nothing was scored ("" when scored)


def fold_of(labels: Sequence[int], folds: int, seed: int) -> np.ndarray:
    """A fold number per image, stratified: each class's images shuffled (seeded) and dealt round-robin, the first
    fold of each class starting where the previous class's dealing stopped (so small classes spread over folds)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=int)
    start = 0
    for c in sorted(set(labels)):
        idx = np.array([i for i, y in enumerate(labels) if y == c])
        rng.shuffle(idx)
        out[idx] = (start + np.arange(len(idx))) % folds
        start = (start + len(idx)) % folds
    return out


def out_of_sample_probabilities(
    features: np.ndarray, labels: Sequence[int], n_classes: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """N x n_classes probabilities, each image's from a logistic regression fitted on the other folds (a class absent
    from those folds gets probability 0 there). Rows sum to 1."""
    y = np.asarray(labels, dtype=int)
    k = max(2, min(folds, int(np.bincount(y).max())))
    fold = fold_of(list(y), k, seed)
    probs = np.zeros((len(y), n_classes))
    for f in range(k):
        test, train = fold == f, fold != f
        if not test.any():
            continue
        seen = np.unique(y[train])
        if len(seen) == 1:  # one class left to learn from: it is the only answer
            probs[np.ix_(test, seen)] = 1.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        with warnings.catch_warnings():
            # a probe that stops a little short of the optimum still ranks labels; never an error for the audit
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
    probs = np.clip(probs, 1e-6, None)  # cleanlab divides by them; a class a fold never saw is unlikely, not impossible
    return probs / probs.sum(axis=1, keepdims=True)


def score_labels(
    features: np.ndarray, labels: Sequence[str], folds: int = FOLDS, seed: int = 0
) -> tuple[LabelScores, tuple[str, ...]]:
    """(LabelScores per image, the classes probed) for images with given `labels`: classes with fewer than
    MIN_PER_CLASS images are not probed (their images get None and a note); fewer than 2 probed classes: skipped."""
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    classes = tuple(c for c, n in counts.items() if n >= MIN_PER_CLASS)
    notes = [
        f"class {c!r} has {n} image(s), fewer than {MIN_PER_CLASS}: its labels are not probed"
        for c, n in counts.items()
        if n < MIN_PER_CLASS
    ]
    n = len(labels)
    if len(classes) < 2:
        why = f"fewer than 2 classes with at least {MIN_PER_CLASS} images ({counts})"
        return LabelScores((None,) * n, (None,) * n, (None,) * n, (False,) * n, tuple(notes), why), classes
    keep = [i for i, c in enumerate(labels) if c in classes]
    y = np.array([classes.index(labels[i]) for i in keep])
    probs = out_of_sample_probabilities(features[keep], list(y), len(classes), folds, seed)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        quality = get_label_quality_scores(y, probs, method="self_confidence")
        flagged = find_label_issues(y, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    notes += sorted({f"cleanlab: {w.message}" for w in said})
    q: list[float | None] = [None] * n
    sug: list[str | None] = [None] * n
    sug_p: list[float | None] = [None] * n
    issue = [False] * n
    for row, i in enumerate(keep):
        best = int(np.argmax(probs[row]))
        q[i], sug[i], sug_p[i] = float(quality[row]), classes[best], float(probs[row, best])
        issue[i] = bool(flagged[row])
    return LabelScores(tuple(q), tuple(sug), tuple(sug_p), tuple(issue), tuple(notes)), classes
