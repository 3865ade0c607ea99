"""A verdict stands on metrics.json's per-image predictions, never on its stored summary: an edited, non-finite or
unsupported summary is an ERROR naming the file and the key, never a PASS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import artifacts, cli, verify
from harness.report.build import build_report, write_reports
from harness.report.evidence import evidence
from harness.rundir import CURRENT, STALE, is_current, step_state
from harness.seal import make_seal
from harness.thresholds import parse_thresholds
from harness.verdicts import ERROR, FAIL, PASS, judge, overall
from tests.split_evidence import split_entry
from tests.test_check import SMALL, _classes_set, colour_model
from tests.test_check import boxes_root as boxes_root  # the fixture, shared
from tests.tiny_run import AUDIT, EVIDENCE_MODEL, evidence_run

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
    (run / "audit.json").write_text(json.dumps(AUDIT))  # the data audit of a run without a training set: SKIP
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
    assert code == 0 and "verified 6 files" in out, out  # run.json, audit.json and the model's four
    assert set(json.loads((tmp_path / "report.json").read_text())["manifest"]) == {
        "run.json",
        "audit.json",
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


# --- harness report refuses evidence edited since the report; a harness step's rewrite is vouched for ------------


def _report_cli(run: Path, capsys, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["report", str(run), *extra])
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.mark.parametrize("edit", ["changed", "added", "missing"])
def test_harness_report_refuses_evidence_edited_since_the_report(tmp_path, capsys, edit):
    d = evidence_run(tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    if edit == "changed":  # a key no verdict reads: the verdicts alone would not notice
        m = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps(m | {"note": "edited by hand"}))
        name = "metrics.json"
    elif edit == "added":
        (d / "cam.json").write_text(json.dumps({"summary": {}, "images": {}}))
        name = "cam.json"
    else:
        (d / "export.json").unlink()
        name = "export.json"
    code, _, err = _report_cli(tmp_path, capsys)
    assert code == 1, err
    assert f"REFUSED {EVIDENCE_MODEL}/{name}: {edit if edit != 'changed' else 'changed since the report'}" in err, err
    assert "harness report: refused: 1 evidence file was edited" in err, err
    assert (tmp_path / "report.json").read_bytes() == before  # left as it was


def test_a_file_a_harness_step_rewrote_is_vouched_for(tmp_path, capsys, monkeypatch):
    d = evidence_run(tmp_path)

    def evaluate_again(run_dir, *args, **kwargs):  # what harness evaluate does to the file: rewrites it whole
        m = json.loads((d / "metrics.json").read_text())
        artifacts.write_json(d / "metrics.json", m | {"created": "now"})
        return []

    monkeypatch.setattr("harness.cli_commands.evaluate_run", evaluate_again)
    assert cli.main(["evaluate", str(tmp_path)]) == 0
    assert verify.read_ledger(tmp_path) == {f"{EVIDENCE_MODEL}/metrics.json": artifacts.sha256_file(d / "metrics.json")}
    code, out, err = _report_cli(tmp_path, capsys)
    assert code == 0 and "verdict: PASS" in out, out + err
    assert _verify(tmp_path, capsys)[0] == 0
    m = json.loads((d / "metrics.json").read_text())  # then a hand edit: refused again
    (d / "metrics.json").write_text(json.dumps(m | {"note": "by hand"}))
    code, _, err = _report_cli(tmp_path, capsys)
    assert code == 1 and f"REFUSED {EVIDENCE_MODEL}/metrics.json: changed since the report" in err, err


def test_without_a_report_the_ledger_still_catches_a_hand_edit(tmp_path, capsys):
    d = evidence_run(tmp_path, report=False)
    with verify.recording(tmp_path):  # as harness run records what its steps wrote
        artifacts.write_json(d / "metrics.json", json.loads((d / "metrics.json").read_text()))
    m = json.loads((d / "metrics.json").read_text())
    m["test_sets"]["test_difficult"]["predictions"][0]["probabilities"] = {"a": 1.0}
    (d / "metrics.json").write_text(json.dumps(m))
    code, _, err = _report_cli(tmp_path, capsys)
    assert code == 1 and f"REFUSED {EVIDENCE_MODEL}/metrics.json: changed since harness wrote it" in err, err
    assert not (tmp_path / "report.json").exists()


# --- resume: a step whose file was edited since harness wrote it is stale and redone -----------------------------


def test_step_state_treats_an_edited_evidence_file_as_stale(tmp_path):
    d = evidence_run(tmp_path)
    sha = artifacts.sha256_file(d / "model.onnx")
    assert step_state(d / "metrics.json", {"onnx_sha256": sha}) == (CURRENT, "")
    assert is_current(d / "export.json", {"model_sha256": "pt"}, outputs=(d / "model.onnx",))
    m = json.loads((d / "metrics.json").read_text())
    m["test_sets"]["test_difficult"]["soft"]["value"] = 1.0
    (d / "metrics.json").write_text(json.dumps(m))  # the recorded inputs are unchanged: only the hash tells
    state, why = step_state(d / "metrics.json", {"onnx_sha256": sha})
    assert state == STALE and f"{EVIDENCE_MODEL}/metrics.json was edited since harness wrote it" in why, why
    (d / "model.onnx").write_bytes(b"another model" * 100)
    assert not is_current(d / "export.json", {"model_sha256": "pt"}, outputs=(d / "model.onnx",))
    with verify.recording(tmp_path):  # the steps redo them: current again
        artifacts.write_json(d / "metrics.json", json.loads((d / "metrics.json").read_text()))
        (d / "model.onnx").write_bytes(b"the model exported again" * 100)
    assert step_state(d / "metrics.json", {"onnx_sha256": sha})[0] == CURRENT
    assert is_current(d / "export.json", {"model_sha256": "pt"}, outputs=(d / "model.onnx",))


@pytest.mark.slow  # two harness check runs (~10 s)
def test_a_rerun_of_harness_check_redoes_an_edited_metrics_json(boxes_root, tmp_path, capsys):
    model = colour_model(tmp_path / "constant.onnx", constant=True)  # always background: fails the gate
    out = tmp_path / "run"
    argv = ["check", str(model), "--data", str(boxes_root), "--out", str(out), *_classes_set(), *SMALL]
    assert cli.main(argv) == 1
    path = next(out.glob("*/metrics.json"))
    truth = json.loads(path.read_text())["test_sets"]["test_boxes"]["soft"]["value"]
    assert truth < 0.5
    m = json.loads(path.read_text())
    for kind in ("soft", "strict"):
        m["test_sets"]["test_boxes"][kind]["value"] = 1.0
    path.write_text(json.dumps(m))
    capsys.readouterr()
    assert cli.main(argv) == 1
    got = capsys.readouterr()
    assert "metrics.json is current, skipping" not in got.err, got.err
    assert json.loads(path.read_text())["test_sets"]["test_boxes"]["soft"]["value"] == truth  # recomputed
    acc = next(v for v in json.loads((out / "report.json").read_text())["verdicts"] if v["criterion"] == "accuracy")
    assert (acc["status"], acc["value"]) == (FAIL, truth)  # judged on what the model does, not on the edited file
    assert _verify(out, capsys)[0] == 0


# --- the protocol: run.json's gated set and thresholds are sealed when the run is made -----------------------------


def _protocol(report: dict) -> dict:
    [v] = [v for v in report["verdicts"] if v["criterion"] == "protocol"]
    return v


def test_a_sealed_run_judges_its_protocol(tmp_path, capsys):
    evidence_run(tmp_path)
    code, out, err = _report_cli(tmp_path, capsys)
    assert code == 0 and "verdict: PASS" in out, out + err
    v = _protocol(json.loads((tmp_path / "report.json").read_text()))
    assert (v["status"], v["gated"], v["id"], v["value"]) == (PASS, False, "run", 0.0)  # gated when it fails
    assert "gated at creation: imagenet-all" in v["detail"]
    manifest = json.loads((tmp_path / "report.json").read_text())["manifest"]
    assert manifest[verify.PROTOCOL] == json.loads((tmp_path / "run.json").read_text())["seal"]["sha256"]


@pytest.mark.parametrize("how", ["run.json", "--thresholds"])
def test_a_gated_run_edited_to_gate_nothing_is_an_error(tmp_path, capsys, how):
    evidence_run(tmp_path, soft_k=8, strict_k=8)  # a chance-level model: FAIL
    extra: list[str] = []
    if how == "run.json":
        proto = json.loads((tmp_path / "run.json").read_text())
        proto["thresholds"]["gated"] = []
        (tmp_path / "run.json").write_text(json.dumps(proto))
        code, out = _verify(tmp_path, capsys)
        assert code == 1 and "MISMATCH run.json: changed since the report" in out, out
        assert "ERROR run.json: thresholds.gated (the gated models) no longer matches the hash recorded" in out, out
        code, _, err = _report_cli(tmp_path, capsys)
        assert code == 1 and "REFUSED run.json: changed since the report was written" in err, err
        (tmp_path / "report.json").unlink()  # no manifest left: the seal still tells
    else:
        (tmp_path / "ungated.toml").write_text("[thresholds]\ngated = []\n")
        extra = ["--thresholds", str(tmp_path / "ungated.toml")]
    code, out, err = _report_cli(tmp_path, capsys, *extra)
    assert code == 1 and "verdict: ERROR" in out, out + err
    v = _protocol(json.loads((tmp_path / "report.json").read_text()))
    assert v["status"] == ERROR and v["gated"] and v["evidence"] == ["run.json"]
    assert "run.json: the run was made gating imagenet-all; the thresholds in force gate nothing" in v["detail"]
    assert "ERROR GATE protocol[run]" in out


def test_a_run_emptied_of_its_models_is_an_error(tmp_path, capsys):
    d = evidence_run(tmp_path, soft_k=8, strict_k=8)
    shutil.rmtree(d)
    proto = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps(proto | {"variants": []}))
    code, out = _verify(tmp_path, capsys)
    assert code == 1 and "ERROR run.json: variants no longer matches" in out, out
    assert "no model folder (<folder>/config.json): the run judges no model at all" in out, out
    (tmp_path / "report.json").unlink()
    code, _, err = _report_cli(tmp_path, capsys)  # still gating imagenet-all, which the run no longer has
    assert code == 2 and "run.json: thresholds.gated[0] = 'imagenet-all' gates variant 'imagenet-all'" in err, err
    proto["thresholds"]["gated"] = []
    (tmp_path / "run.json").write_text(json.dumps(proto | {"variants": []}))
    code, out, err = _report_cli(tmp_path, capsys)
    assert code == 1 and "verdict: ERROR" in out, out + err
    assert "ERROR GATE protocol[run]" in out and "no longer match the hash recorded" in out, out
    # a run.json without a seal (an older harness, or written by hand) that judges no model: ERROR too
    (tmp_path / "run.json").write_text(json.dumps({k: v for k, v in proto.items() if k != "seal"} | {"variants": []}))
    report = build_report(tmp_path)
    assert report["verdict"] == ERROR and "judges no model at all" in _protocol(report)["detail"]


def test_a_rerun_into_a_gated_run_cannot_ungate_it(tmp_path):
    evidence_run(tmp_path, soft_k=8, strict_k=8)
    proto = {k: v for k, v in json.loads((tmp_path / "run.json").read_text()).items() if k != "seal"}
    ungated = proto | {"thresholds": {"gated": []}}
    seal = make_seal(ungated, previous=tmp_path / "run.json")  # as harness run rewrites run.json in the same --out
    assert seal["created_gated"] == ["imagenet-all"]
    (tmp_path / "run.json").write_text(json.dumps(ungated | {"seal": seal}))
    report = build_report(tmp_path)
    assert report["verdict"] == ERROR and "made gating imagenet-all" in _protocol(report)["detail"]


def test_a_run_made_without_a_gated_model_stays_ungated(tmp_path, capsys):
    evidence_run(tmp_path, soft_k=8, strict_k=8, thresholds={"gated": []})
    code, out, err = _report_cli(tmp_path, capsys)
    assert code == 0 and "verdict: UNGATED" in out, out + err
    v = _protocol(json.loads((tmp_path / "report.json").read_text()))
    assert (v["status"], v["gated"]) == (PASS, False) and "made without a gated model" in v["detail"]
    assert _verify(tmp_path, capsys)[0] == 0


# --- the report's evidence section counts from the per-image predictions ------------------------------------------


def _binomial(report: dict) -> dict:
    return {(b["split"], b["kind"]): b for b in report["evidence"]["binomial"]}


def test_the_evidence_section_counts_from_the_predictions(tmp_path):
    d = evidence_run(tmp_path, report=False)
    soft = _binomial(build_report(tmp_path))[("test_difficult", "soft")]
    assert (soft["k"], soft["n"], soft["constant"]) == (15, 16, 6 / 16)
    m = json.loads((d / "metrics.json").read_text())
    m["test_sets"]["test_difficult"]["baselines"]["constant_soft"]["value"] = 0.0  # an easier bar, in range
    (d / "metrics.json").write_text(json.dumps(m))
    report = build_report(tmp_path)
    assert ("test_difficult", "soft") not in _binomial(report)  # left out, never computed from the edited summary
    problems = report["variants"][EVIDENCE_MODEL]["problems"]
    assert "test_sets.test_difficult.baselines.constant_soft.value = 0.0" in problems["metrics.json test_difficult"]
    assert "test_difficult" not in report["variants"][EVIDENCE_MODEL]["test_sets"]


def test_edited_correctness_flags_are_an_error_and_never_counted(tmp_path):
    d = evidence_run(tmp_path, soft_k=8, strict_k=8, report=False)
    m = json.loads((d / "metrics.json").read_text())
    for p in m["test_sets"]["test_difficult"]["predictions"]:
        p["soft_correct"] = p["strict_correct"] = True  # the model's answers (predicted) unchanged
    (d / "metrics.json").write_text(json.dumps(m))
    report = build_report(tmp_path)
    acc = next(v for v in report["verdicts"] if v["criterion"] == "accuracy")
    assert acc["status"] == ERROR and "predictions[" in acc["detail"] and "soft_correct = True but" in acc["detail"]
    assert EVIDENCE_MODEL.removesuffix("-s0") not in report["evidence"]["calibration"]


def test_evidence_takes_correctness_from_the_predicted_label():
    preds = [
        {"image": f"i{i}", "primary": "a", "acceptable": ["a"], "predicted": "a" if i < 3 else "b"}
        | {"soft_correct": True, "strict_correct": True, "probabilities": {"a": 0.9, "b": 0.1}}
        for i in range(10)
    ]
    entry = {"model": "m", "seed": 0, "test_sets": {"t": {"predictions": preds, "baselines": {}}}}
    ev = evidence({"variants": {"m-s0": entry}, "protocol": {"profile": {"test_sets": ["t"]}}}, ["m"])
    assert ev["selective"]["m"]["t"]["full_risk"] == pytest.approx(0.7)  # 7 of 10 wrong, whatever the flags say
