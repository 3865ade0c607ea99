"""The report's evidence block (paired McNemar, binomial vs constant, calibration, selective prediction) and the
coverage_at_target criterion, on hand-built predictions with known answers."""

from __future__ import annotations

import json

import pytest

from harness.metrics import accuracy_summary
from harness.report.evidence import evidence, operating_text
from harness.thresholds import parse_thresholds
from harness.verdicts import judge

CLASSES = ["background", "bayes", "geeks"]


def _pred(i: int, right: bool, conf: float) -> dict:
    wrong = "geeks"
    probs = {
        "background": (1 - conf) / 2,
        "bayes": conf if right else (1 - conf) / 2,
        "geeks": (1 - conf) / 2 if right else conf,
    }
    return {
        "image": f"img_{i}.jpg",
        "primary": "bayes",
        "acceptable": ["bayes"],
        "predicted": "bayes" if right else wrong,
        "soft_correct": right,
        "strict_correct": right,
        "probabilities": probs,
    }


def _split(rights, confs) -> dict:
    k = sum(rights)
    n = len(rights)
    return {
        "n": n,
        "soft": {"k": k, "value": k / n, "wilson": [0, 1]},
        "strict": {"k": k, "value": k / n, "wilson": [0, 1]},
        "baselines": {
            "constant_soft": {"label": "bayes", "value": 0.5},
            "constant_strict": {"label": "bayes", "value": 0.5},
        },
        "predictions": [_pred(i, r, c) for i, (r, c) in enumerate(zip(rights, confs))],
    }


def test_paired_binomial_calibration_and_selective_known_answers():
    # a right on 9 of 10; b wrong on 6 where a is right, right on the one a gets wrong: discordant 6 vs 1
    a = [True] * 9 + [False]
    b = [True, True, True, False, False, False, False, False, False, True]
    conf_a = [0.95] * 8 + [0.6, 0.55]
    variants = {
        "A-s0": {"model": "m-a", "seed": 0, "test_sets": {"t": _split(a, conf_a)}},
        "B-s0": {"model": "m-b", "seed": 0, "test_sets": {"t": _split(b, [0.7] * 10)}},
    }
    ev = evidence({"variants": variants, "protocol": {"profile": {"test_sets": ["t"]}}}, ["m-a"], target=0.95)
    soft = next(p for p in ev["paired"] if p["kind"] == "soft")
    assert (soft["a_only"], soft["b_only"], soft["p"]) == (6, 1, pytest.approx(0.125))
    assert soft["line"] == "m-a vs m-b on t (soft): 6 vs 1 discordant, exact p = 0.12"
    assert not [p for p in ev["paired"] if p["a"] == "m-b"]  # only gated models are compared with the others
    bino = {(b["model"], b["kind"]): b for b in ev["binomial"]}
    # 9/10 vs a constant answer of 0.5: P(X >= 9) = 11 / 1024
    assert bino[("m-a", "soft")]["p"] == pytest.approx(11 / 1024)
    cal = ev["calibration"]["m-a"]["t"]
    assert cal["bins"] == 15 and 0 <= cal["ece"] <= 1
    sel = ev["selective"]["m-a"]["t"]
    op = sel["operating_point"]  # down to confidence 0.6 all 9 answered are right; the 10th (0.55) is wrong
    assert (op["answered"], op["right"], op["coverage"], op["threshold"]) == (9, 9, 0.9, pytest.approx(0.6))
    assert operating_text(op, 10, 0.95).startswith(f"answers {op['answered']} of 10, all right")
    assert operating_text(None, 10, 0.95) == "no confidence threshold reaches 95% accuracy"
    json.dumps(ev)  # JSON-ready


def test_several_seeds_pool_image_seed_pairs(tmp_path):
    a = [True] * 4
    b = [False, True, True, True]
    variants = {f"A-s{s}": {"model": "m-a", "seed": s, "test_sets": {"t": _split(a, [0.9] * 4)}} for s in (0, 1)}
    variants |= {f"B-s{s}": {"model": "m-b", "seed": s, "test_sets": {"t": _split(b, [0.9] * 4)}} for s in (0, 1, 2)}
    ev = evidence({"variants": variants, "protocol": {"profile": {"test_sets": ["t"]}}}, ["m-a"])
    soft = next(p for p in ev["paired"] if p["kind"] == "soft")
    assert soft["seeds"] == [0, 1] and (soft["a_only"], soft["b_only"]) == (2, 0) and soft["n"] == 8
    assert "(2 seeds pooled)" in soft["line"]
    assert ev["selective"]["m-b"]["t"]["n"] == 12  # pooled over the three seeds


def test_coverage_at_target_is_an_optional_gated_criterion(tmp_path):
    d = tmp_path / "vgg16-imagenet-all-s0"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"variant": "imagenet-all", "seed": 0, "backbone": "vgg16"}))
    rights = [True] * 8 + [False, True]
    entry = _split(rights, [0.9] * 8 + [0.8, 0.5])
    preds = entry["predictions"]
    # the summary the verdicts check against the per-image predictions, as harness evaluate writes it
    entry |= accuracy_summary(
        [p["predicted"] for p in preds], [p["acceptable"] for p in preds], ["bayes"] * 10, CLASSES
    )
    (d / "metrics.json").write_text(json.dumps({"test_sets": {"t": entry}}))
    t = parse_thresholds({"gated": ["imagenet-all"], "selective": {"target": 0.95, "coverage_at_target_min": 0.8}}, "t")
    v = next(v for v in judge(tmp_path, t, ["t"]) if v.criterion == "coverage_at_target")
    assert v.status == "PASS" and v.value == pytest.approx(0.8)  # answers the 8 at 0.9, all right
    strict = parse_thresholds({"gated": ["imagenet-all"], "selective": {"coverage_at_target_min": 0.9}}, "t")
    v = next(v for v in judge(tmp_path, strict, ["t"]) if v.criterion == "coverage_at_target")
    assert v.status == "FAIL"
    none = parse_thresholds({"gated": ["imagenet-all"]}, "t")
    assert not [v for v in judge(tmp_path, none, ["t"]) if v.criterion == "coverage_at_target"]
