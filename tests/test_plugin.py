"""The gate as a pytest plugin (harness.pytest_plugin): inert without its options; with --harness-run-dir it judges a
run in any project, one test per criterion and verdict; it refuses a locked run naming the holder, and fails closed
on an incomplete run (missing evidence fails, gated or not; a run that judges no model fails)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import artifacts, runlock
from harness.gate import NoVerdict, make_plan, parameters
from harness.pytest_plugin import STATE, GateOptions, GateState
from harness.report.build import build_report, write_reports
from tests.split_evidence import split_entry
from tests.tiny_run import AUDIT

pytest_plugins = ["pytester"]

THRESHOLDS = {
    "gated": ["imagenet-all"],
    "accuracy": {"test_difficult": {"soft_min": 0.9, "strict_min": 0.4}},
}
MODEL = "vgg16-imagenet-all-s0"


def model_folder(run: Path, variant: str, soft_k: int, strict_k: int, evidence: bool = True) -> Path:
    """One seed of `variant`: 16 images of test_difficult, soft_k / strict_k right, a model.onnx that its export.json
    and metrics.json vouch for (as harness export / evaluate record it); evidence False: config.json only."""
    d = run / f"vgg16-{variant}-s0"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"variant": variant, "seed": 0, "backbone": "vgg16"}))
    if not evidence:
        return d
    (d / "model.onnx").write_bytes(f"the {variant} model that was evaluated".encode() * 100)
    sha = artifacts.sha256_file(d / "model.onnx")
    (d / "export.json").write_text(json.dumps({"sha256": sha, "parity": {"passed": True, "cpu": {"max_abs": 1e-6}}}))
    entry = split_entry(16, soft_k, strict_k, constant_soft_k=6, constant_strict_k=4)
    metrics = {"test_sets": {"test_difficult": entry}, "inputs": {"onnx_sha256": sha}, "model": {"sha256": sha}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def tiny_run(run: Path, soft_k: int = 15, strict_k: int = 12, ablations: dict[str, bool] | None = None) -> Path:
    """A judged run without training: imagenet-all gated (soft_k / strict_k of 16 right), plus ungated variants
    (name -> has its evidence), with run.json, report.json (its manifest), report.html."""
    model_folder(run, "imagenet-all", soft_k, strict_k)
    for variant, evidence in (ablations or {}).items():
        model_folder(run, variant, 8, 8, evidence)
    proto = {
        "profile": {"name": "tiny", "test_sets": ["test_difficult"], "backbone": "vgg16", "seeds": [0]},
        "thresholds": THRESHOLDS,
        "variants": ["imagenet-all", *(ablations or {})],
        "seeds": [0],
    }
    (run / "run.json").write_text(json.dumps(proto))
    (run / "audit.json").write_text(json.dumps(AUDIT))
    write_reports(run, build_report(run))
    return run


def outcomes(junit: Path) -> dict[str, str]:
    """test name -> passed / failed / skipped / xfailed / error, from a JUnit XML file."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        skipped = case.find("skipped")
        if skipped is not None and skipped.get("type") == "pytest.xfail":
            out[case.get("name")] = "xfailed"
        else:
            out[case.get("name")] = kinds.pop() if kinds else "passed"
    return out


def test_the_plugin_is_inert_and_cheap_without_its_options(pytester):
    pytester.makepyfile(test_mine="def test_one():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1)
    assert [line.split()[0] for line in result.stdout.lines if "::" in line] == ["test_mine.py::test_one"]
    assert "harness gate" not in result.stdout.str()
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--harness-run-dir=RUN" in help_text and "--harness-profile" in help_text
    # importing the plugin (every pytest session where harness is installed does) loads neither torch nor the gate
    probe = "import sys, harness.pytest_plugin; print(sorted(m for m in ('torch', 'harness.gate') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_it_judges_a_run_in_any_project_one_test_per_verdict(pytester, tmp_path):
    run = tiny_run(tmp_path / "run", ablations={"scratch-all": True})
    pytester.makepyfile(test_mine="def test_one():\n    assert True\n")
    junit = tmp_path / "gate.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--harness-run-dir", str(run), f"--junitxml={junit}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    got = outcomes(junit)
    assert got["test_one"] == "passed"  # the project's own tests run beside the gate's
    assert got["test_accuracy[vgg16-imagenet-all-test_difficult]"] == "passed"
    assert got["test_strict_accuracy[vgg16-imagenet-all-test_difficult]"] == "passed"
    # the ablation is reported with its values, never failing the gate
    assert got["test_accuracy[vgg16-scratch-all-test_difficult]"] == "xfailed"
    assert got["test_wilson_lower[not-configured]"] == "skipped"
    result.stdout.fnmatch_lines(["*harness/gate_tests.py::test_accuracy?vgg16-imagenet-all-test_difficult? PASSED*"])
    result.stdout.fnmatch_lines(["*harness gate: PASS*"])
    # pytest's default JUnit family (xunit2) has no per-test properties: none is written, and nothing warns; under
    # xunit1 (this repository's) each test records its status, value, threshold and whether it is gated
    assert not list(ET.parse(junit).getroot().iter("property"))
    xunit1 = tmp_path / "xunit1.xml"
    pytester.runpytest(
        "-p", "no:cacheprovider", "--harness-run-dir", str(run), f"--junitxml={xunit1}", "-o", "junit_family=xunit1"
    )
    props = {
        p.get("name"): p.get("value")
        for case in ET.parse(xunit1).getroot().iter("testcase")
        if case.get("name") == "test_accuracy[vgg16-imagenet-all-test_difficult]"
        for p in case.iter("property")
    }
    assert props["status"] == "PASS" and float(props["measured"]) == 15 / 16 and props["gated"] == "True"
    assert not (run / runlock.LOCK_NAME).exists()  # held for the session, released at its end
    # -k selects among the gate's tests as among any others
    picked = pytester.runpytest("-p", "no:cacheprovider", "-v", "--harness-run-dir", str(run), "-k", "strict_accuracy")
    ran = [line.split()[0] for line in picked.stdout.lines if "::" in line and "PASSED" in line]
    assert ran and all("::test_strict_accuracy[" in name for name in ran), picked.stdout.str()[-2000:]


def test_a_failing_gated_model_fails_the_session(pytester, tmp_path):
    run = tiny_run(tmp_path / "run", soft_k=8, strict_k=8)
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(run))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*harness gate: FAIL*", "FAILED *::test_accuracy?vgg16-imagenet-all-test_difficult?*"])


def test_a_passing_run_whose_ablations_lack_evidence_fails_and_the_banner_says_why(pytester, tmp_path):
    run = tmp_path / "run"
    tiny_run(run)
    (run / "audit.json").unlink()  # the data audit's ablations now stand on nothing: ERROR
    write_reports(run, build_report(run))
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(run))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*harness gate: PASS (and 3 ablation verdict(s) ERROR: evidence missing or unreadable, their tests fail)*"]
    )


@pytest.mark.parametrize("host", ["here", "elsewhere"])
def test_a_locked_run_is_refused_naming_its_holder(pytester, tmp_path, host):
    run = tiny_run(tmp_path / "run")
    lock = run / runlock.LOCK_NAME
    holder = {
        "pid": os.getppid(),  # a live process that is not this one
        "host": socket.gethostname() if host == "here" else "build-7",
        "command": "harness run --profile cpu --out run",
        "started": "2026-12-06T01:02:03+00:00",
    }
    lock.write_text(json.dumps(holder))
    before = (run / "report.json").read_bytes()
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(run))
    out = result.stdout.str()
    assert result.ret not in (0, 1) and "Traceback" not in out, out[-3000:]
    assert f"pid {holder['pid']} on host {holder['host']}" in out and "`harness run --profile cpu --out run`" in out
    assert "a run still being written cannot be judged" in out
    assert json.loads(lock.read_text()) == holder and (run / "report.json").read_bytes() == before


def test_a_stale_lock_is_taken_over_and_released(pytester, tmp_path):
    run = tiny_run(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / runlock.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "x"}))
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(run))
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert not (run / runlock.LOCK_NAME).exists()


def test_missing_evidence_fails_even_for_an_ablation(pytester, tmp_path):
    """A run killed before an ungated variant was evaluated: its verdicts are ERROR, and ERROR fails (it used to
    xfail as an ablation, leaving the gate green on a half-made run)."""
    run = tiny_run(tmp_path / "run", ablations={"scratch-all": False})
    junit = tmp_path / "gate.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(run), f"--junitxml={junit}")
    assert result.ret == 1
    got = outcomes(junit)
    assert got["test_accuracy[vgg16-scratch-all-test_difficult]"] == "failure"
    assert got["test_accuracy[vgg16-imagenet-all-test_difficult]"] == "passed"
    result.stdout.fnmatch_lines(
        ["*ERROR (an ablation, but its evidence missing or unreadable: the run is incomplete)*"]
    )


def test_a_run_that_judges_no_model_fails(pytester, tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    proto = {"profile": {"test_sets": ["test_difficult"], "backbone": "vgg16"}, "thresholds": {"gated": []}}
    (run / "run.json").write_text(json.dumps(proto | {"variants": []}))
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--harness-run-dir", str(run))
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert "judges no model" in result.stdout.str() and result.parseoutcomes().get("passed", 0) == 0


def test_no_verdict_at_all_fails_every_criterion(tmp_path):
    """Where the judge gives no verdict at all, each criterion's test gets one failing `no-model` case."""
    run = tmp_path / "empty"
    run.mkdir()
    proto = {"profile": {"test_sets": [], "backbone": "vgg16"}, "thresholds": {"gated": []}}
    (run / "run.json").write_text(json.dumps(proto | {"variants": []}))
    state = GateState(planned=[])
    state.plan = make_plan(GateOptions(run_dir=run), state)
    config = SimpleNamespace(stash={STATE: state})
    try:
        params, ids = parameters(config, "accuracy")  # type: ignore[arg-type]
    finally:
        runlock.release(state.lock)
    assert ids == ["no-model"] and isinstance(params[0], NoVerdict) and params[0].fail
    assert "judges no model" in params[0].reason


def test_a_bad_run_directory_is_one_line_without_a_traceback(pytester, tmp_path):
    result = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", str(tmp_path / "nowhere"))
    out = result.stdout.str()
    assert result.ret != 0 and f"the run directory {tmp_path / 'nowhere'} has no run.json" in out
    assert "Traceback" not in out and "gate.py:" not in out
    both = pytester.runpytest("-p", "no:cacheprovider", "--harness-run-dir", "x", "--harness-profile", "smoke")
    assert "give either --harness-run-dir (judge a run) or --harness-profile (produce one), not both" in (
        both.stdout.str()
    )
