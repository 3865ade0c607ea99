"""A verdict stands on metrics.json's per-image predictions, never on its stored summary: an edited, non-finite or
unsupported summary is an ERROR naming the file and the key, never a PASS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.thresholds import parse_thresholds
from harness.verdicts import ERROR, FAIL, PASS, judge, overall
from tests.split_evidence import split_entry

GATE = {"gated": ["imagenet-all"], "accuracy": {"test_difficult": {"soft_min": 0.9, "strict_min": 0.4}}}
ACCURACY = ("accuracy", "strict_accuracy", "soft_above_constant", "strict_above_constant")


def _run(run: Path, soft_k: int, strict_k: int) -> Path:
    """One seed of imagenet-all, 16 images of test_difficult, soft_k / strict_k of them right."""
    d = run / "vgg16-imagenet-all-s0"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"variant": "imagenet-all", "seed": 0, "backbone": "vgg16"}))
    entry = split_entry(16, soft_k, strict_k, constant_soft_k=6, constant_strict_k=4)
    (d / "metrics.json").write_text(json.dumps({"test_sets": {"test_difficult": entry}}))
    return d / "metrics.json"


def _accuracy(run: Path) -> dict:
    """The accuracy verdicts by criterion, and their overall verdict (cam.json etc. are absent here)."""
    verdicts = [v for v in judge(run, parse_thresholds(GATE, "t"), ["test_difficult"]) if v.criterion in ACCURACY]
    return {v.criterion: v for v in verdicts} | {"overall": overall(verdicts)}


def test_untouched_runs_are_judged_by_their_data(tmp_path):
    _run(tmp_path / "chance", 8, 8)
    v = _accuracy(tmp_path / "chance")
    assert v["accuracy"].status == FAIL and v["accuracy"].value == 0.5 and v["overall"] == FAIL
    assert v["strict_accuracy"].status == PASS and v["strict_accuracy"].value == 0.5
    _run(tmp_path / "good", 15, 12)
    v = _accuracy(tmp_path / "good")
    assert v["accuracy"].status == PASS and v["accuracy"].value == 15 / 16 and v["overall"] == PASS
    assert v["accuracy"].threshold == pytest.approx(0.9) and v["accuracy"].chance == 6 / 16


def test_a_summary_edited_to_pass_is_an_error_not_a_pass(tmp_path):
    path = _run(tmp_path, 8, 8)
    m = json.loads(path.read_text())
    m["test_sets"]["test_difficult"]["soft"]["value"] = 1.0
    m["test_sets"]["test_difficult"]["strict"]["value"] = 1.0
    path.write_text(json.dumps(m))
    v = _accuracy(tmp_path)
    assert all(v[c].status == ERROR for c in ACCURACY) and v["overall"] == ERROR
    detail = v["accuracy"].detail
    assert "metrics.json" in detail and "test_sets.test_difficult.soft.value = 1.0" in detail
    assert "16 per-image predictions give 0.5 (8/16)" in detail and "rerun harness evaluate" in detail


def test_a_non_finite_accuracy_is_an_error_naming_the_key(tmp_path):
    path = _run(tmp_path, 8, 8)
    m = json.loads(path.read_text())
    m["test_sets"]["test_difficult"]["soft"]["value"] = float("inf")
    text = json.dumps(m)
    assert "Infinity" in text
    path.write_text(text)
    v = _accuracy(tmp_path)
    assert v["accuracy"].status == ERROR and v["overall"] == ERROR
    assert "metrics.json: test_sets.test_difficult.soft.value = inf is not a finite number" in v["accuracy"].detail


def test_out_of_range_baseline_is_an_error(tmp_path):
    path = _run(tmp_path, 15, 12)
    m = json.loads(path.read_text())
    m["test_sets"]["test_difficult"]["baselines"]["constant_soft"]["value"] = -0.5
    path.write_text(json.dumps(m))
    v = _accuracy(tmp_path)
    assert v["accuracy"].status == ERROR
    assert "test_sets.test_difficult.baselines.constant_soft.value = -0.5 is not a number in [0, 1]" in (
        v["accuracy"].detail
    )


@pytest.mark.parametrize("predictions", [None, [], [{"predicted": "a"}]])
def test_missing_or_malformed_predictions_are_an_error(tmp_path, predictions):
    path = _run(tmp_path, 15, 12)  # a passing summary: without its predictions it proves nothing
    m = json.loads(path.read_text())
    if predictions is None:
        del m["test_sets"]["test_difficult"]["predictions"]
    else:
        m["test_sets"]["test_difficult"]["predictions"] = predictions
    path.write_text(json.dumps(m))
    v = _accuracy(tmp_path)
    assert all(v[c].status == ERROR for c in ACCURACY) and v["overall"] == ERROR
    assert "metrics.json: test_sets.test_difficult.predictions" in v["accuracy"].detail
