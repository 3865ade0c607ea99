"""`harness compare` and `harness report` on wrong-shaped files: a report.json or metrics.json with a string or null
where a number or a table belongs ends in one line naming the file and the key (compare: exit 2), never in "unexpected
... (a harness bug)" or a traceback file; and `harness compare A A` says that both sides are one run."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable

import pytest

from harness.cli import main
from tests.test_compare import GATED, SPLIT, make_report, save
from tests.tiny_run import EVIDENCE_MODEL, evidence_run

ENTRY = f"{GATED}-s0"
TS = f"variants.{ENTRY}.test_sets.{SPLIT}"


def _ts(r: dict) -> dict:
    return r["variants"][ENTRY]["test_sets"][SPLIT]


def _set(path: list, value) -> Callable[[dict], None]:
    def edit(r: dict) -> None:
        node = r
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return edit


def _del(path: list) -> Callable[[dict], None]:
    def edit(r: dict) -> None:
        node = r
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return edit


V = ["variants", ENTRY]
T = [*V, "test_sets", SPLIT]
# (case, edit of NEW's report.json, the key the one-line error must name)
REPORT_CASES = [
    ("null summary", _set([*T, "soft"], None), f"{TS}.soft = None is not a table"),
    ("null test set", _set(T, None), f"{TS} = None is not a table"),
    ("string value", _set([*T, "soft", "value"], "0.9"), f"{TS}.soft.value = '0.9' is not a finite number"),
    ("edited value", _set([*T, "soft", "value"], 1.0), f"{TS}.soft.value = 1.0 but its 20 per-image predictions"),
    ("list where a table belongs", _set([*V, "test_sets"], []), f"variants.{ENTRY}.test_sets = [] is not a table"),
    ("missing predictions", _del([*T, "predictions"]), f"{TS}.predictions = None is not a non-empty list"),
    ("wrong-typed per-image row", _set([*T, "predictions", 3], "img_003.jpg"), f"{TS}.predictions[3] = 'img_003.jpg'"),
    ("string label list", _set([*T, "predictions", 0, "acceptable"], "bayes"), f"{TS}.predictions[0].acceptable"),
    ("latency string", _set([*V, "latency"], "fast"), f"variants.{ENTRY}.latency = 'fast' is not a table"),
    ("latency record number", _set([*V, "latency", "by_provider", "CPUExecutionProvider", "1"], 5), "latency.by_"),
    ("cam summary list", _set([*V, "cam", "summary"], []), f"variants.{ENTRY}.cam.summary = []"),
    ("seed string", _set([*V, "seed"], "zero"), f"variants.{ENTRY}.seed = 'zero' is not a seed"),
    ("variant entry null", _set(V, None), f"variants.{ENTRY} = None is not a model folder's entry"),
    ("verdicts not a list", _set(["verdicts"], {}), "verdicts = {} is not a list"),
    ("verdict not a table", _set(["verdicts", 0], "PASS"), "verdicts[0] = 'PASS' is not a verdict"),
    ("verdict value string", _set(["verdicts", 0, "value"], "high"), "verdicts[0].value = 'high' is not a number"),
    ("missing key", _del(["protocol"]), "not a harness report.json: the key 'protocol' is missing"),
    ("classes string", _set(["protocol", "data", "classes"], "abc"), "protocol.data.classes = 'abc' is not a list"),
    ("seeds string", _set(["protocol", "seeds"], "0,1"), "protocol.seeds = '0,1' is not a list of seeds"),
]


@pytest.fixture()
def no_crash_logs(tmp_path, monkeypatch):
    """Where a crash's traceback would go outside a run directory (the temp folder): watched, must stay empty."""
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    yield logs
    assert not list(logs.glob("harness-error-*.log"))


@pytest.mark.parametrize("case, edit, key", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_a_wrong_shaped_report_json_is_one_line_naming_file_and_key(tmp_path, capsys, no_crash_logs, case, edit, key):
    base = save(make_report(), tmp_path / "base")
    bad = copy.deepcopy(make_report())
    edit(bad)
    new = save(bad, tmp_path / "new")
    capsys.readouterr()
    assert main(["compare", str(base), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" not in err and "Traceback" not in err, err
    assert err.startswith(f"harness compare: error: {new / 'report.json'}: ") and key in err, err
    assert not list(new.glob("harness-error-*.log")) and not (new / f"compare-{base.name}").exists()


# (case, edit of metrics.json, the file and key its verdicts name)
METRICS_CASES = [
    ("null summary", _set(["test_sets", "test_difficult", "soft"], None), "test_sets.test_difficult.soft.k = None"),
    ("null test set", _set(["test_sets", "test_difficult"], None), "test_sets.test_difficult = None is not a table"),
    ("string value", _set(["test_sets", "test_difficult", "soft", "value"], "1.0"), "soft.value = '1.0' is not a"),
    ("list where a table belongs", _set(["test_sets"], []), "metrics.json: test_sets = [] is not a table"),
    ("missing predictions", _del(["test_sets", "test_difficult", "predictions"]), "predictions is missing or empty"),
    ("wrong-typed per-image row", _set(["test_sets", "test_difficult", "predictions", 2], "x.png"), "predictions[2]"),
    ("string probabilities", _set(["test_sets", "test_difficult", "predictions", 0, "probabilities"], "x"), "prob"),
    ("latency string", _set(["latency"], "fast"), "metrics.json: latency = 'fast' is not a table"),
]


@pytest.mark.parametrize("case, edit, key", METRICS_CASES, ids=[c[0] for c in METRICS_CASES])
def test_a_wrong_shaped_metrics_json_is_an_error_naming_file_and_key(tmp_path, capsys, no_crash_logs, case, edit, key):
    good = tmp_path / "good"
    evidence_run(good)
    run = tmp_path / "run"
    d = evidence_run(run, report=False)
    m = json.loads((d / "metrics.json").read_text())
    edit(m)
    (d / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert main(["report", str(run)]) == 1
    got = capsys.readouterr()
    assert "unexpected" not in got.err and "verdict: ERROR" in got.out, got.out + got.err
    report = json.loads((run / "report.json").read_text())
    details = [v["detail"] for v in report["verdicts"] if v["status"] == "ERROR"]
    assert any("metrics.json" in x and key in x for x in details), details
    # the report written from it compares without a harness bug: the gated model's verdicts went PASS -> ERROR
    assert main(["compare", str(good), str(run)]) == 1
    got = capsys.readouterr()
    assert "unexpected" not in got.err and "compare: REGRESSION" in got.out, got.out + got.err


def test_compare_of_a_run_with_itself_says_both_sides_are_one_run(tmp_path, capsys):
    run = tmp_path / "run"
    evidence_run(run)
    capsys.readouterr()
    assert main(["compare", str(run), str(run)]) == 0
    out = capsys.readouterr().out
    assert f"compare: OK (both sides are one run: {run / 'report.json'} is compared with itself" in out, out
    copy_of = tmp_path / "copy"
    shutil.copytree(run, copy_of)  # another folder, the same evidence: identical manifests
    assert main(["compare", str(run), str(copy_of)]) == 0
    out = capsys.readouterr().out
    assert "both sides are one run" in out and "identical manifests" in out, out
    other = tmp_path / "other"
    evidence_run(other, soft_k=14)  # another run: not one run, whatever its verdict
    main(["compare", str(run), str(other)])
    assert "one run" not in capsys.readouterr().out


def test_compare_refuses_a_run_whose_evidence_changed_since_its_report(tmp_path, capsys):
    base = tmp_path / "base"
    evidence_run(base)
    run = tmp_path / "run"
    d = evidence_run(run)
    m = json.loads((d / "metrics.json").read_text())
    (d / "metrics.json").write_text(json.dumps(m | {"note": "edited"}))
    capsys.readouterr()
    assert main(["compare", str(base), str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'report.json'}: {EVIDENCE_MODEL}/metrics.json changed since this report was written" in err, err
