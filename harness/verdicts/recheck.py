"""A test set's accuracy figures recomputed from metrics.json's per-image predictions, with the functions
`harness evaluate` wrote them with: a verdict stands on the per-image evidence, never on a stored summary. A summary
that disagrees with its predictions, a number that is not finite or out of range, or predictions that are missing or
malformed make the test set unreadable (the verdict is ERROR, naming the file and the key)."""

from __future__ import annotations

import math
from typing import Any

from harness.metrics import accuracy_summary
from harness.verdicts.collect import SeedRun

TOLERANCE = 1e-9
RERUN = "the file was edited or is corrupt: rerun harness evaluate"
# the stored summary keys a criterion (or the judge's chance level) reads, and whether each is a rate in [0, 1]
CHECKED: tuple[tuple[tuple[str | int, ...], bool], ...] = (
    (("n",), False),
    (("soft", "k"), False),
    (("soft", "value"), True),
    (("soft", "wilson", 0), True),
    (("strict", "k"), False),
    (("strict", "value"), True),
    (("baselines", "constant_soft", "value"), True),
    (("baselines", "constant_strict", "value"), True),
)


def _key(split: str, path: tuple[str | int, ...]) -> str:
    return f"test_sets.{split}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _get(entry: Any, path: tuple[str | int, ...]) -> Any:
    for p in path:
        if isinstance(p, int):
            entry = entry[p] if isinstance(entry, list) and len(entry) > p else None
        else:
            entry = entry.get(p) if isinstance(entry, dict) else None
    return entry


def _labels(preds: Any, split: str) -> tuple[list[str], list[list[str]], list[str]] | str:
    """(predicted, acceptable, primary) of every image, or why the predictions cannot be read."""
    if not isinstance(preds, list) or not preds:
        return (
            f"metrics.json: {_key(split, ('predictions',))} is missing or empty, so its accuracy cannot be checked "
            "against the images; rerun harness evaluate"
        )
    predicted, acceptable, primary = [], [], []
    for i, p in enumerate(preds):
        acc = p.get("acceptable") if isinstance(p, dict) else None
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("predicted"), str)
            or not isinstance(p.get("primary"), str)
            or not isinstance(acc, list)
            or not all(isinstance(a, str) for a in acc)
        ):
            return (
                f"metrics.json: {_key(split, ('predictions', i))} is malformed (needs predicted, primary and a list of "
                f"acceptable labels); {RERUN}"
            )
        predicted.append(p["predicted"])
        acceptable.append(acc)
        primary.append(p["primary"])
    return predicted, acceptable, primary


def checked_split(run: SeedRun, split: str) -> tuple[dict[str, Any] | None, str]:
    """(the test set's accuracy summary recomputed from its per-image predictions, with those predictions, "") or
    (None, why it cannot be trusted); (None, "") when metrics.json has no entry for the test set."""
    metrics = run.metrics or {}
    stored = (metrics.get("test_sets") or {}).get(split) if isinstance(metrics.get("test_sets"), dict) else None
    if stored is None:
        return None, ""
    if not isinstance(stored, dict):
        return None, f"metrics.json: {_key(split, ())} is not an object; {RERUN}"
    labels = _labels(stored.get("predictions"), split)
    if isinstance(labels, str):
        return None, labels
    classes = stored.get("classes") or metrics.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return None, f"metrics.json: {_key(split, ('classes',))} is missing or malformed; {RERUN}"
    predicted, acceptable, primary = labels
    try:
        summary = accuracy_summary(predicted, acceptable, primary, classes)
    except ValueError as exc:
        return None, f"metrics.json: {_key(split, ('predictions',))} cannot be scored ({exc}); {RERUN}"
    n = summary["n"]
    for path, rate in CHECKED:
        value, truth = _get(stored, path), _get(summary, path)
        key = _key(split, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"metrics.json: {key} = {value!r} is not a finite number; {RERUN}"
        if rate and not 0.0 <= value <= 1.0:
            return None, f"metrics.json: {key} = {value!r} is not a number in [0, 1]; {RERUN}"
        if abs(value - truth) > TOLERANCE:
            hits = summary["strict" if path[0] == "strict" else "soft"]["k"]
            return None, (
                f"metrics.json: {key} = {value!r} but its {n} per-image predictions give {truth:.6g}"
                + (f" ({hits}/{n})" if path[-1] == "value" and path[0] in ("soft", "strict") else "")
                + f"; {RERUN}"
            )
    return summary | {"predictions": stored["predictions"]}, ""
