"""The criteria table is the one list of criteria: the judge emits exactly its criteria, every saliency method of the
registry has its localization criteria, the report words each one, and the pytest gate has a test for each."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.wording import criteria_meanings
from harness.saliency.registry import METHODS
from harness.thresholds import parse_thresholds
from harness.verdicts import judge
from harness.verdicts.criteria import CRITERIA, ENERGY, LOCALIZATION, POINTING, SANITY, localization_criterion

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "suites" / "test_gate.py"
RULE = {"split": "test_difficult", "energy_share_min": 0.2, "pointing_rate_min": 0.3, "sanity_max": 0.5}
# a rule for every criterion the table has: accuracy (every kind), selective prediction, each saliency method, latency
EVERYTHING = {
    "gated": ["imagenet-all"],
    "latency_max_ms": 100.0,
    "accuracy": {
        "test_difficult": {
            "soft_min": 0.5,
            "strict_min": 0.3,
            "wilson_lower_min": 0.2,
            "strict_above_constant": True,
            "wilson_above_constant": True,
        }
    },
    "selective": {"target": 0.9, "coverage_at_target_min": 0.5},
    "robustness": {"gated": ["*"], "object_gated": True, "faithfulness_gated": True},
    "probe": {"gated": True},
    **{m.thresholds_key: RULE for m in METHODS.values()},
}


def test_the_judge_emits_exactly_the_criteria_of_the_table(tmp_path: Path) -> None:
    thresholds = parse_thresholds(EVERYTHING, "test")
    verdicts = judge(tmp_path, thresholds, ["test_difficult"], ["imagenet-all"], "vgg16")
    assert {v.criterion for v in verdicts} == set(CRITERIA)
    for v in verdicts:
        assert v.comparison == CRITERIA[v.criterion].comparison


def test_every_saliency_method_has_its_localization_criteria() -> None:
    for name, m in METHODS.items():
        for aspect in (ENERGY, POINTING, SANITY):
            c = localization_criterion(name, aspect)
            assert c.name == f"{m.evidence}_{aspect}" and c.family == LOCALIZATION and m.title in c.meaning
    assert sum(c.family == LOCALIZATION for c in CRITERIA.values()) == 3 * len(METHODS)


def test_the_report_words_every_criterion() -> None:
    for book in (True, False):
        meanings = criteria_meanings(book)
        assert list(meanings) == list(CRITERIA) and all(meanings.values())
    assert not any("book" in text or "cover" in text for text in criteria_meanings(False).values())


def test_the_gate_module_has_one_test_per_criterion() -> None:
    spec = importlib.util.spec_from_file_location("gate_under_test", GATE)
    assert spec and spec.loader
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    tests = {n.removeprefix("test_") for n, f in vars(gate).items() if n.startswith("test_") and callable(f)}
    assert tests == set(CRITERIA)
    for name in CRITERIA:
        assert "verdict" in inspect.signature(getattr(gate, f"test_{name}")).parameters


@pytest.mark.slow
def test_the_gate_collects_a_test_for_every_criterion_of_the_table(tmp_path: Path) -> None:
    """pytest's own collection of the gate on a run that judges every criterion (no model trained: all ERROR)."""
    run = tmp_path / "run"
    run.mkdir()
    proto = {
        "profile": {"test_sets": ["test_difficult"], "backbone": "vgg16"},
        "thresholds": EVERYTHING,
        "variants": ["imagenet-all"],
    }
    (run / "run.json").write_text(json.dumps(proto), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(GATE), "--collect-only", "-q", "-p", "no:cacheprovider", "--run-dir", run],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line]
    for name in CRITERIA:
        mine = [i for i in ids if i.startswith(f"test_{name}[")]
        assert mine and not any("not-configured" in i or "no-run" in i for i in mine), (name, ids)
    assert "test_accuracy[vgg16-imagenet-all-test_difficult]" in ids
