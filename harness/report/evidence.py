"""The strength of each claim, from the per-image predictions in every model's metrics.json: paired McNemar tests,
binomial tests against the constant answer, calibration and selective prediction (report.json's 'evidence').

Every count is taken from the per-image predictions (an image is right when its predicted label is one of its
acceptable labels, strictly right when it is its primary label), never from a stored summary or a stored correctness
flag; the chance level is the entry's `baselines`, which harness.report.build recomputes from the same predictions
(harness.verdicts.recheck.trusted_splits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness import stats

KINDS = ("soft", "strict")


def _by_model(variants: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for entry in variants.values():
        if isinstance(entry, Mapping) and entry.get("model"):
            out.setdefault(str(entry["model"]), []).append(entry)
    for runs in out.values():
        runs.sort(key=lambda e: e.get("seed") or 0)
    return out


def _predictions(entry: Mapping[str, Any], split: str) -> list[Mapping[str, Any]]:
    return list(((entry.get("test_sets") or {}).get(split) or {}).get("predictions") or [])


def correct(p: Mapping[str, Any], kind: str) -> bool:
    """Whether one per-image prediction is right: soft (one of its acceptable labels) or strict (its primary label)."""
    if kind == "strict":
        return p.get("predicted") == p.get("primary")
    return p.get("predicted") in (p.get("acceptable") or ())


def confidence(p: Mapping[str, Any]) -> float:
    probs = p.get("probabilities") or {}
    return float(max(probs.values())) if probs else 0.0


def paired_runs(
    a_runs: Sequence[Mapping[str, Any]], b_runs: Sequence[Mapping[str, Any]], split: str, kind: str
) -> dict[str, Any] | None:
    """McNemar over (image, seed) pairs of the seeds both models have; None when they share no seed or image."""
    b_by_seed = {e.get("seed"): e for e in b_runs}
    a_ok, b_ok, seeds = [], [], []
    for a in a_runs:
        b = b_by_seed.get(a.get("seed"))
        if b is None:
            continue
        pb = {p["image"]: p for p in _predictions(b, split)}
        pairs = [(p, pb[p["image"]]) for p in _predictions(a, split) if p["image"] in pb]
        if pairs:
            seeds.append(a.get("seed"))
            a_ok += [correct(x, kind) for x, _ in pairs]
            b_ok += [correct(y, kind) for _, y in pairs]
    if not a_ok:
        return None
    return stats.paired(a_ok, b_ok) | {"seeds": seeds}


def mcnemar_line(a: str, b: str, split: str, kind: str, r: Mapping[str, Any]) -> str:
    """'imagenet-all vs scratch-all on test_difficult (soft): 9 vs 0 discordant, exact p = 0.0039'."""
    return f"{a} vs {b} on {split} ({kind}): {r['a_only']} vs {r['b_only']} discordant, exact p = {r['p']:.2g}" + (
        f" ({len(r['seeds'])} seeds pooled)" if len(r.get("seeds") or []) > 1 else ""
    )


def evidence(report: Mapping[str, Any], gated: Sequence[str], target: float = 0.95) -> dict[str, Any]:
    """The report's 'evidence' block. `gated`: the gated models' keys (the report's verdict models).

    Computed at report time, so any run can be re-read: paired exact McNemar tests of each gated model against every
    other model, one-sided exact binomial tests of accuracy against the best constant answer, calibration (ECE,
    reliability diagram) and selective prediction (risk-coverage curve, AURC, the operating point at a target accuracy).
    Confidence is the top-1 probability; correctness is soft (the answer is one of the image's acceptable labels)
    unless said otherwise. Over several seeds, McNemar pairs (image, seed) of the seeds both models have; calibration
    and selective prediction pool the seeds' predictions; the binomial test reports the worst (largest) p over the
    seeds."""
    models = _by_model(report.get("variants") or {})
    splits = list(((report.get("protocol") or {}).get("profile") or {}).get("test_sets") or [])
    paired: list[dict[str, Any]] = []
    binomial: list[dict[str, Any]] = []
    calibration: dict[str, dict[str, Any]] = {}
    selective: dict[str, dict[str, Any]] = {}
    for a in [m for m in models if m in gated]:
        for b in [m for m in models if m != a]:
            for split in splits:
                for kind in KINDS:
                    r = paired_runs(models[a], models[b], split, kind)
                    if r is not None:
                        paired.append(
                            {
                                "a": a,
                                "b": b,
                                "split": split,
                                "kind": kind,
                                **r,
                                "line": mcnemar_line(a, b, split, kind, r),
                            }
                        )
    for model, runs in models.items():
        for split in splits:
            per_seed = [((e.get("test_sets") or {}).get(split) or {}) for e in runs]
            per_seed = [s for s in per_seed if s.get("predictions")]
            for kind in KINDS:
                ps = []
                for s in per_seed:
                    const = ((s.get("baselines") or {}).get(f"constant_{kind}") or {}).get("value")
                    preds_k = [correct(p, kind) for p in s["predictions"]]
                    k, n = sum(preds_k), len(preds_k)
                    if const is not None:
                        ps.append((stats.binomial_vs_constant(k, n, float(const)), k, n, float(const)))
                if ps:
                    worst = max(ps)
                    binomial.append(
                        {
                            "model": model,
                            "split": split,
                            "kind": kind,
                            "p": worst[0],
                            "k": worst[1],
                            "n": worst[2],
                            "constant": worst[3],
                            "seeds": len(ps),
                        }
                    )
            preds = [p for e in runs for p in _predictions(e, split)]
            if preds:
                conf = [confidence(p) for p in preds]
                ok = [correct(p, "soft") for p in preds]
                calibration.setdefault(model, {})[split] = stats.ece(conf, ok, bins=15)
                rc = stats.risk_coverage(conf, ok)
                op = stats.operating_point(conf, ok, target)
                selective.setdefault(model, {})[split] = {
                    "aurc": rc["aurc"],
                    "full_risk": rc["full_risk"],
                    "points": rc["points"],
                    "target": target,
                    "operating_point": op,
                    "n": len(preds),
                    "seeds": len(runs),
                }
    return {
        "protocol": {
            "confidence": "top-1 probability",
            "correct": "soft (one of the acceptable labels)",
            "mcnemar": "exact binomial McNemar on paired correctness, two-sided; (image, seed) pairs of "
            "the seeds both models have",
            "binomial": "one-sided exact binomial test that accuracy exceeds the best constant answer's; "
            "the worst (largest) p over the seeds",
            "ece_bins": 15,
            "selective_target": target,
        },
        "paired": paired,
        "binomial": binomial,
        "calibration": calibration,
        "selective": selective,
    }


def operating_text(op: Mapping[str, Any] | None, n: int, target: float) -> str:
    """'answers 16 of 20, all right (confidence >= 0.62)' or why there is no operating point."""
    if not op:
        return f"no confidence threshold reaches {target:.0%} accuracy"
    right = "all right" if op["right"] == op["answered"] else f"{op['right']} right"
    return f"answers {op['answered']} of {n}, {right} (confidence >= {op['threshold']:.2f})"
