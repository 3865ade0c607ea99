"""A verdict stands on metrics.json's per-image predictions, never on its stored summary: an edited, non-finite or
unsupported summary is an ERROR naming the file and the key, never a PASS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import artifacts, cli
from harness.report.build import build_report, write_reports
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


# --- the evidence vouches for the model on disk, and report.json's manifest for every file -------------------------

REPO = Path(__file__).resolve().parents[1]
MODEL = "vgg16-imagenet-all-s0"


def _hashed_run(run: Path) -> Path:
    """A passing run whose evidence records its model's hash as harness export / evaluate do, and its report."""
    _run(run, 15, 12)
    proto = {"profile": {"test_sets": ["test_difficult"], "backbone": "vgg16"}, "thresholds": GATE}
    (run / "run.json").write_text(json.dumps(proto | {"variants": ["imagenet-all"]}))
    d = run / MODEL
    (d / "model.onnx").write_bytes(b"the model that was evaluated" * 100)
    sha = artifacts.sha256_file(d / "model.onnx")
    (d / "export.json").write_text(json.dumps({"sha256": sha, "parity": {"cpu": {"max_abs": 1e-6}}}))
    m = json.loads((d / "metrics.json").read_text())
    (d / "metrics.json").write_text(json.dumps(m | {"inputs": {"onnx_sha256": sha}, "model": {"sha256": sha}}))
    write_reports(run, build_report(run))
    return d


def _verify(run: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", str(run)])
    return code, capsys.readouterr().out


def test_an_untouched_run_is_judged_as_before_and_verifies(tmp_path, capsys):
    _hashed_run(tmp_path)
    v = _accuracy(tmp_path)
    assert all(v[c].status == PASS for c in ACCURACY) and v["overall"] == PASS
    code, out = _verify(tmp_path, capsys)
    assert code == 0 and "verified 5 files" in out, out  # run.json, config.json, model.onnx, export.json, metrics.json
    assert set(json.loads((tmp_path / "report.json").read_text())["manifest"]) == {
        "run.json",
        *(f"{MODEL}/{f}" for f in ("config.json", "model.onnx", "export.json", "metrics.json")),
    }


def test_a_replaced_model_is_an_error_and_fails_verify(tmp_path, capsys):
    d = _hashed_run(tmp_path)
    (d / "model.onnx").write_bytes(b"another model" * 100)
    v = _accuracy(tmp_path)
    assert all(v[c].status == ERROR for c in ACCURACY) and v["overall"] == ERROR
    detail = v["accuracy"].detail
    assert "model.onnx (sha256 " in detail and "is not the model metrics.json was computed from" in detail, detail
    assert "rerun harness evaluate" in detail
    code, out = _verify(tmp_path, capsys)
    assert code == 1 and f"{MODEL}/model.onnx: changed since the report was written" in out, out
    (d / "model.onnx").unlink()
    assert (
        "model.onnx is missing: metrics.json was computed from a model.onnx" in _accuracy(tmp_path)["accuracy"].detail
    )


def test_run_json_edited_after_the_report_fails_verify(tmp_path, capsys):
    _hashed_run(tmp_path)
    proto = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps(proto | {"note": "edited"}))
    code, out = _verify(tmp_path, capsys)
    assert code == 1 and "run.json: changed since the report was written" in out, out
    assert "model.onnx" not in out
    (tmp_path / "report.json").unlink()
    code, out = _verify(tmp_path, capsys)
    assert code == 1 and "no manifest to verify against" in out, out


def _gate(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_gate.py", "--run-dir", str(run), "-p", "no:cacheprovider", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_the_gate_refuses_a_run_whose_files_changed_since_its_report(tmp_path):
    _hashed_run(tmp_path)
    ok = _gate(tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    proto = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps(proto | {"note": "edited"}))  # the verdicts do not read it
    proc = _gate(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "run.json: changed since the report was written" in out, out[-3000:]
