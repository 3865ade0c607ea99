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


def _short(v: Any) -> str:
    """A value as a message quotes it: its repr, cut to 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


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
        wrong = _row_problem(p)
        if wrong:
            return f"metrics.json: {_key(split, ('predictions', i, wrong))}; {RERUN}"
        predicted.append(p["predicted"])
        acceptable.append(acc)
        primary.append(p["primary"])
    return predicted, acceptable, primary


def _row_problem(p: dict[str, Any]) -> str:
    """What is wrong with the rest of one per-image prediction ("" when nothing): its image name, its correctness
    flags (they must say what predicted / acceptable / primary say) and its probabilities (finite, in [0, 1])."""
    if "image" in p and not isinstance(p["image"], str):
        return f"image = {p['image']!r} is not a file name"
    for key, right in (
        ("soft_correct", p["predicted"] in p["acceptable"]),
        ("strict_correct", p["predicted"] == p["primary"]),
    ):
        if key in p and p[key] is not right:
            return f"{key} = {p[key]!r} but predicted {p['predicted']!r} says {right}"
    probs = p.get("probabilities")
    if probs is None:
        return ""
    if not isinstance(probs, dict) or not probs:
        return f"probabilities = {probs!r} is not a table of class -> probability"
    for c, v in probs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            return f"probabilities.{c} = {v!r} is not a number in [0, 1]"
    return ""


def trusted_splits(run: SeedRun) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({test set: its entry as the report shows it}, {test set: why it was left out}) of a seed run's metrics.json:
    every figure recomputed from the per-image predictions (accuracy, intervals, confusion matrix, baselines, each
    image's correctness), as harness evaluate computes them; the per-image probabilities carried over (checked)."""
    sets = (run.metrics or {}).get("test_sets")
    out: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    for split in sets if isinstance(sets, dict) else {}:
        summary, why = checked_split(run, str(split))
        if summary is None:
            left_out[str(split)] = why
            continue
        base = summary["baselines"]
        for kind in ("soft", "strict"):
            summary[kind]["baselines"] = {"uniform": base[f"uniform_{kind}"], "constant": base[f"constant_{kind}"]}
        summary["predictions"] = [
            {k: p[k] for k in ("image", "primary", "acceptable", "predicted", "probabilities") if k in p}
            | {"soft_correct": p["predicted"] in p["acceptable"], "strict_correct": p["predicted"] == p["primary"]}
            for p in summary["predictions"]
        ]
        out[str(split)] = summary
    return out, left_out


def checked_split(run: SeedRun, split: str) -> tuple[dict[str, Any] | None, str]:
    """(the test set's accuracy summary recomputed from its per-image predictions, with those predictions, "") or
    (None, why it cannot be trusted); (None, "") when metrics.json has no entry for the test set."""
    metrics = run.metrics or {}
    sets = metrics.get("test_sets")
    if "test_sets" in metrics and not isinstance(sets, dict):
        return None, f"metrics.json: test_sets = {_short(sets)} is not a table of test sets; {RERUN}"
    if not isinstance(sets, dict) or split not in sets:
        return None, ""
    stored = sets[split]
    if not isinstance(stored, dict):
        return None, f"metrics.json: {_key(split, ())} = {_short(stored)} is not a table; {RERUN}"
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
            return None, f"metrics.json: {key} = {_short(value)} is not a finite number; {RERUN}"
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
