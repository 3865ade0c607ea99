"""The two learnt rungs of the baseline ladder, fitted with scikit-learn on frozen image features of the training
split: a linear probe (multinomial logistic regression on standardised features, its inverse regularisation C chosen
by stratified K-fold cross-validation) and k-nearest-neighbours (cosine distance, votes weighted by inverse distance,
k chosen the same way). The folds are capped by the smallest class (at most MAX_FOLDS); a training split whose
smallest class has a single image is not cross-validated: DEFAULT_C and DEFAULT_K are used, and said so."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # the probe's grid of C (ties: the smallest, the most regularised)
KS = (1, 3, 5, 7, 9, 15)  # kNN's grid of k (ties: the smallest); only those a training fold can hold
MAX_FOLDS = 5
SEED = 0  # of the folds' shuffle
DEFAULT_C = 1.0  # scikit-learn's default, when the training split cannot be cross-validated
DEFAULT_K = 1
MAX_ITER = 5000

PROBE_METHOD = (
    "multinomial logistic regression (scikit-learn LogisticRegression, lbfgs, L2) on standardised frozen features; "
    "C chosen by stratified K-fold cross-validation accuracy on the training split"
)
KNN_METHOD = (
    "k-nearest-neighbours (scikit-learn KNeighborsClassifier, cosine distance, votes weighted by 1/distance) on frozen "
    "features; k chosen by stratified K-fold cross-validation accuracy on the training split"
)


class CannotFit(ValueError):
    """The training split cannot teach a classifier (fewer than 2 classes, or no image)."""


@dataclass(frozen=True)
class Fitted:
    """One fitted baseline: its hyper-parameter (`param` = `value`), how it was chosen (`folds`: 0 when not
    cross-validated; the mean cross-validated accuracy of every candidate), the estimator and what was said."""

    name: str
    param: str
    value: float | int
    folds: int
    cv_accuracy: dict[str, float]
    estimator: Any
    notes: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What baselines.json records of the fit (the estimator itself is not kept)."""
        return {
            "method": PROBE_METHOD if self.name == "probe" else KNN_METHOD,
            self.param: self.value,
            "folds": self.folds,
            "cv_accuracy": self.cv_accuracy,
            "notes": list(self.notes),
        }


def folds_for(labels: Sequence[str]) -> int:
    """Cross-validation folds for these training labels: the smallest class's size, at most MAX_FOLDS; 0 when it is
    below 2 (no stratified split can put one of its images on each side)."""
    counts = [labels.count(c) for c in set(labels)]
    k = min(MAX_FOLDS, min(counts)) if counts else 0
    return k if k >= 2 else 0


def _check(features: np.ndarray, labels: Sequence[str]) -> None:
    if len(labels) == 0 or len(labels) != len(features):
        raise CannotFit(f"{len(labels)} labels for {len(features)} feature vectors")
    if len(set(labels)) < 2:
        raise CannotFit(f"the training split has a single class ({sorted(set(labels))}): nothing to tell apart")


def _first_best(results: dict[str, Any]) -> int:
    """The first candidate of the grid with the best mean cross-validated accuracy, compared to 9 decimals (a mean of
    the same fold accuracies summed in another order must not break a tie)."""
    return int(np.argmax(np.round(results["mean_test_score"], 9)))


def _choose(
    name: str, param: str, estimator: Any, grid_key: str, grid: Sequence[float], default: float, x, y
) -> Fitted:
    folds = folds_for(list(y))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe a little short of its optimum still predicts
        if folds:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
            search = GridSearchCV(estimator, {grid_key: list(grid)}, cv=cv, n_jobs=1, refit=_first_best)
            search.fit(x, y)
            scores = search.cv_results_["mean_test_score"]
            value = float(grid[search.best_index_])
            fitted, cv_acc = search.best_estimator_, {f"{v:g}": float(s) for v, s in zip(grid, scores)}
        else:
            fitted = estimator.set_params(**{grid_key: default}).fit(x, y)
            value, cv_acc = float(default), {}
    notes = sorted({f"{type(w.message).__name__}: {w.message}" for w in said})
    if not folds:
        notes.insert(0, f"a class has a single training image: not cross-validated, {param} = {default:g}")
    return Fitted(name, param, value, folds, cv_acc, fitted, tuple(notes))


def fit_probe(features: np.ndarray, labels: Sequence[str]) -> Fitted:
    """The linear probe: StandardScaler + LogisticRegression, C from CS by cross-validation."""
    _check(features, labels)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=DEFAULT_C, max_iter=MAX_ITER))
    return _choose("probe", "C", pipe, "logisticregression__C", CS, DEFAULT_C, features, np.asarray(labels))


def fit_knn(features: np.ndarray, labels: Sequence[str]) -> Fitted:
    """k-nearest-neighbours, cosine, distance-weighted; k from KS (those below a training fold's size)."""
    _check(features, labels)
    folds = folds_for(list(labels))
    room = len(labels) - -(-len(labels) // folds) if folds else len(labels)  # images in a training fold
    ks = [k for k in KS if k <= room] or [1]
    knn = KNeighborsClassifier(n_neighbors=min(DEFAULT_K, room), metric="cosine", weights="distance", algorithm="brute")
    f = _choose("knn", "k", knn, "n_neighbors", ks, min(DEFAULT_K, room), features, np.asarray(labels))
    return Fitted(f.name, f.param, int(f.value), f.folds, f.cv_accuracy, f.estimator, f.notes)


def probabilities(fitted: Fitted, features: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """N x len(classes) class probabilities of `features`, columns in `classes` order (a class the training split
    lacks gets 0)."""
    raw = fitted.estimator.predict_proba(features)
    out = np.zeros((len(features), len(classes)), dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(fitted.estimator.classes_):
        if str(c) in index:
            out[:, index[str(c)]] = raw[:, j]
    return out
