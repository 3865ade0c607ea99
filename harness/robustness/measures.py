"""The figures of the robustness evidence, recomputed from its per-image records (never from a stored summary):
accuracy under a corruption against the same photos clean (drop, Newcombe's paired interval, exact McNemar test),
the object-masking rates against their random control, and the faithfulness AUCs against a random map's.

Pure functions over the records of robustness.json / faithfulness.json; malformed records raise ValueError naming
what is wrong (the readers turn it into an ERROR verdict naming the file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from harness.robustness.faithfulness import RANDOM, image_scores
from harness.stats import mcnemar_exact, wilson

Record = Mapping[str, Any]


def paired_interval(both: int, a_only: int, b_only: int, neither: int, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of p_a - p_b for paired yes/no outcomes (Newcombe 1998, "Improved confidence intervals for
    the difference between binomial proportions based on paired data", method 10: Wilson score intervals of each
    proportion, combined with the phi correlation of the pairs). Counts: both yes, only a, only b, neither."""
    n = both + a_only + b_only + neither
    if n <= 0:
        raise ValueError("paired_interval: no pairs")
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson(both + a_only, n, confidence)
    l2, u2 = wilson(both + b_only, n, confidence)
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(denom) if denom > 0 else 0.0
    d = p1 - p2
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, d - delta), min(1.0, d + eps)


def _acceptable(rec: Record) -> list[str]:
    acc = rec.get("acceptable")
    if not isinstance(acc, list):
        raise ValueError(f"image {rec.get('image')!r} has no list of acceptable labels")
    return acc


def _predicted(ans: Any, what: str, rec: Record) -> str:
    if not isinstance(ans, Mapping) or not isinstance(ans.get("predicted"), str):
        raise ValueError(f"image {rec.get('image')!r} has no {what} prediction")
    return str(ans["predicted"])


def corruption_summary(records: Sequence[Record], corruption: str, severity: int) -> dict[str, Any]:
    """Soft and strict accuracy of the photos clean and corrupted by `corruption` at `severity`, the soft drop with
    its 95% paired interval and the exact McNemar test, and the photos whose answer flipped (each way)."""
    rows = []
    for rec in records:
        corrupted = ((rec.get("corrupted") or {}).get(corruption) or {}).get(str(severity))
        acc = _acceptable(rec)
        clean = _predicted(rec.get("clean"), "clean", rec)
        bad = _predicted(corrupted, f"{corruption} severity {severity}", rec)
        rows.append(
            (str(rec.get("image")), clean in acc, bad in acc, clean == rec.get("label"), bad == rec.get("label"))
        )
    n = len(rows)
    if not n:
        raise ValueError("no image to measure")
    r2w = [r[0] for r in rows if r[1] and not r[2]]
    w2r = [r[0] for r in rows if not r[1] and r[2]]
    both = sum(1 for r in rows if r[1] and r[2])
    clean_soft, bad_soft = sum(r[1] for r in rows), sum(r[2] for r in rows)
    interval = paired_interval(both, len(r2w), len(w2r), n - both - len(r2w) - len(w2r))
    return {
        "n": n,
        "clean_soft": clean_soft / n,
        "soft": bad_soft / n,
        "clean_strict": sum(r[3] for r in rows) / n,
        "strict": sum(r[4] for r in rows) / n,
        "drop": (clean_soft - bad_soft) / n,
        "drop_interval": list(interval),
        "mcnemar_p": mcnemar_exact(len(r2w), len(w2r)),
        "right_to_wrong": r2w,
        "wrong_to_right": w2r,
    }


def masking_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Over the masked photos whose clean answer was right: the share that lose it (the answer is no longer an
    acceptable label) when the labelled regions are hidden, when the same shape is hidden elsewhere (mean over the
    draws, and the photos that lose it in at least half of the draws), when only the regions are kept (the share
    that keep it); the 95% paired interval and exact McNemar test of object vs control (majority of draws)."""
    masked = [r for r in records if r.get("status") == "masked"]
    rows: list[dict[str, Any]] = []
    for rec in masked:
        acc = _acceptable(rec)
        if _predicted(rec.get("clean"), "clean", rec) not in acc:
            continue
        draws = rec.get("random")
        if not isinstance(draws, list) or not draws:
            raise ValueError(f"image {rec.get('image')!r} has no random placements")
        lost_random = [_predicted(d, "random-placement", rec) not in acc for d in draws]
        label_p: list[Any] = [(rec.get("clean") or {}).get("p_label"), (rec.get("hidden") or {}).get("p_label")]
        rows.append(
            {
                "image": str(rec.get("image")),
                "object": _predicted(rec.get("hidden"), "hidden-region", rec) not in acc,
                "random": float(np.mean(lost_random)),
                "majority": float(np.mean(lost_random)) >= 0.5,
                "kept": _predicted(rec.get("kept"), "kept-region", rec) in acc,
                "p_drop": None if None in label_p else float(label_p[0]) - float(label_p[1]),
                "p_drop_random": _random_p_drop(rec, draws),
                "overlap": float(np.mean([float(d.get("overlap") or 0.0) for d in draws])),
            }
        )
    out: dict[str, Any] = {"masked": len(masked), "n": len(rows)}
    if not rows:
        return out
    n = len(rows)
    both = sum(r["object"] and r["majority"] for r in rows)
    obj_only = sum(r["object"] and not r["majority"] for r in rows)
    rnd_only = sum(r["majority"] and not r["object"] for r in rows)
    lo, hi = paired_interval(both, obj_only, rnd_only, n - both - obj_only - rnd_only)
    drops = [r["p_drop"] for r in rows if r["p_drop"] is not None]
    drops_r = [r["p_drop_random"] for r in rows if r["p_drop_random"] is not None]
    return out | {
        "object_lost": sum(r["object"] for r in rows) / n,
        "random_lost": float(np.mean([r["random"] for r in rows])),
        "random_majority_lost": sum(r["majority"] for r in rows) / n,
        "difference": (obj_only - rnd_only) / n,
        "difference_interval": [lo, hi],
        "mcnemar_p": mcnemar_exact(obj_only, rnd_only),
        "kept": sum(r["kept"] for r in rows) / n,
        "p_label_drop": float(np.mean(drops)) if drops else None,
        "p_label_drop_random": float(np.mean(drops_r)) if drops_r else None,
        "overlap": float(np.mean([r["overlap"] for r in rows])),
        "lost_only_hiding_object": [r["image"] for r in rows if r["object"] and not r["majority"]],
    }


def _random_p_drop(rec: Record, draws: Sequence[Any]) -> float | None:
    clean = (rec.get("clean") or {}).get("p_label")
    ps: list[Any] = [d.get("p_label") for d in draws if isinstance(d, Mapping)]
    if clean is None or not ps or any(p is None for p in ps):
        return None
    return float(clean) - float(np.mean([float(p) for p in ps]))


def faithfulness_summary(records: Sequence[Record], method: str) -> dict[str, Any]:
    """Mean deletion and insertion AUC of `method`'s maps and of the random map over the same photos, and the margin
    mean((insertion - deletion) of the maps - (insertion - deletion) of the random map) with a one-sided exact sign
    test (the maps beat the random map on more photos than chance)."""
    rows = []
    for rec in records:
        mine, rnd = image_scores(rec, method), image_scores(rec, RANDOM)
        if mine is not None and rnd is not None:
            rows.append((mine, rnd))
    out: dict[str, Any] = {"n": len(rows)}
    if not rows:
        return out
    diffs = [(m["insertion"] - m["deletion"]) - (r["insertion"] - r["deletion"]) for m, r in rows]
    wins, losses = sum(d > 1e-12 for d in diffs), sum(d < -1e-12 for d in diffs)
    p = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    return out | {
        "deletion": float(np.mean([m["deletion"] for m, _ in rows])),
        "insertion": float(np.mean([m["insertion"] for m, _ in rows])),
        "deletion_random": float(np.mean([r["deletion"] for _, r in rows])),
        "insertion_random": float(np.mean([r["insertion"] for _, r in rows])),
        "margin": float(np.mean(diffs)),
        "wins": wins,
        "losses": losses,
        "sign_test_p": p,
    }
