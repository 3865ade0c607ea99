"""harness run/check --mlflow (harness.mlflow_log) against a real local MLflow store, read back with MlflowClient: one
MLflow run per harness run, a nested run per model, the figures as metrics, the verdicts as tags, the report and the
model as artifacts; logging again updates the same runs; `harness compare mlflow:<run id> NEW`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli, mlflow_log
from harness.report.evidence import confidence
from harness.stats import ece
from tests.conftest import COLORS, write_image
from tests.test_plugin import tiny_run

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402

MODEL = "vgg16-imagenet-all"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds); an experiment per test."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def store(shared_store, monkeypatch, request) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    return shared_store


def _runs(uri: str, experiment: str) -> list:
    return MlflowClient(uri).search_runs([experiment])


def test_a_run_and_its_models_in_mlflow_read_back(tmp_path, store):
    run = tiny_run(tmp_path / "run", ablations={"scratch-all": True})
    logged = mlflow_log.log_run(run)
    c = MlflowClient(store)
    parent = c.get_run(logged.run_id)
    assert parent.info.run_name == "run" and parent.info.status == "FINISHED"
    assert parent.data.tags["harness.verdict"] == "PASS"
    assert parent.data.tags[f"gate/accuracy/{MODEL}-test_difficult"] == "PASS"
    assert parent.data.params["profile.name"] == "tiny" and parent.data.params["variants"] == "imagenet-all,scratch-all"
    assert {f.path for f in c.list_artifacts(logged.run_id)} == {"report.html", "report.json", "summary.md"}
    # one nested run per model, each a child of the harness run
    runs = _runs(store, logged.experiment_id)
    children = {r.info.run_name: r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == logged.run_id}
    assert set(children) == {MODEL, "vgg16-scratch-all"} and len(runs) == 3
    gated = children[MODEL]
    m = gated.data.metrics
    assert m["test_difficult/soft/s0"] == pytest.approx(15 / 16) and m["test_difficult/strict/s0"] == pytest.approx(
        12 / 16
    )
    assert m["test_difficult/soft/mean"] == pytest.approx(15 / 16)
    assert m["test_difficult/baseline/constant_soft"] == pytest.approx(6 / 16)
    assert m["test_difficult/soft_wilson_low/s0"] < 15 / 16 < m["test_difficult/soft_wilson_high/s0"]
    preds = json.loads((run / "vgg16-imagenet-all-s0" / "metrics.json").read_text())["test_sets"]["test_difficult"]
    expected = ece([confidence(p) for p in preds["predictions"]], [p["soft_correct"] for p in preds["predictions"]])
    assert m["test_difficult/ece/s0"] == pytest.approx(expected["ece"]) == pytest.approx(m["test_difficult/ece/pooled"])
    assert gated.data.tags["harness.gated"] == "True" and gated.data.tags["gate/accuracy/test_difficult"] == "PASS"
    assert children["vgg16-scratch-all"].data.tags["harness.gated"] == "False"
    arts = {f.path for f in c.list_artifacts(gated.info.run_id)}
    assert arts == {"model-card.md", "s0"} and [f.path for f in c.list_artifacts(gated.info.run_id, "s0")] == [
        "s0/model.onnx"
    ]
    local = c.download_artifacts(gated.info.run_id, "s0/model.onnx", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (run / "vgg16-imagenet-all-s0" / "model.onnx").read_bytes()
    record = json.loads((run / mlflow_log.RECORD).read_text())
    assert record["run_id"] == logged.run_id and record["models"][MODEL] == gated.info.run_id


def test_logging_again_updates_the_same_runs(tmp_path, store):
    run = tiny_run(tmp_path / "run")
    first = mlflow_log.log_run(run)
    again = mlflow_log.log_run(run)
    assert again.reused and again.run_id == first.run_id and again.models == first.models
    assert len(_runs(store, first.experiment_id)) == 2  # still one harness run and its one model
    # a deleted MLflow run is not resurrected: a new one is made and recorded
    MlflowClient(store).delete_run(first.run_id)
    third = mlflow_log.log_run(run)
    assert not third.reused and third.run_id != first.run_id
    assert json.loads((run / mlflow_log.RECORD).read_text())["run_id"] == third.run_id


def test_the_default_store_is_inside_the_reports_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = mlflow_log.tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'reports' / 'mlflow' / 'mlflow.db'}"
    run = tiny_run(tmp_path / "reports" / "runs" / "r1")
    mlflow_log.log_run(run)
    stored = {p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("*") if p.is_file()}
    assert {parts for parts in stored if parts[0] != "reports"} == set()  # nothing outside the reports folder
    assert any(p.name == "report.html" for p in (tmp_path / "reports" / "mlflow" / "artifacts").rglob("*"))


def test_compare_takes_an_mlflow_run_for_either_side(tmp_path, store, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    base = tiny_run(tmp_path / "base")
    new = tiny_run(tmp_path / "new", soft_k=8, strict_k=8)
    logged = mlflow_log.log_run(base)
    assert cli.main(["compare", f"mlflow:{logged.run_id}", str(new)]) == 1  # a regression: 15/16 -> 8/16
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "compare: REGRESSION" in out
    folder = new / f"compare-mlflow-{logged.run_id}"
    assert (folder / "compare.json").is_file() and (folder / "summary.md").is_file()
    assert json.loads((folder / "compare.json").read_text())["baseline"]["name"] == f"mlflow-{logged.run_id}"
    # NEW from MLflow needs a folder for the comparison; an unknown run id is one line, exit 2
    assert cli.main(["compare", str(base), f"mlflow:{logged.run_id}"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert cli.main(["compare", str(base), f"mlflow:{logged.run_id}", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert cli.main(["compare", "mlflow:0123456789abcdef", str(new)]) == 2
    err = capsys.readouterr().err
    assert "mlflow:0123456789abcdef: no report.json of that MLflow run" in err and "Traceback" not in err


def test_a_model_run_id_is_not_a_harness_run(tmp_path, store):
    logged = mlflow_log.log_run(tiny_run(tmp_path / "run"))
    with pytest.raises(mlflow_log.MlflowError, match="not a model's nested run"):
        mlflow_log.fetch_report(f"mlflow:{logged.models[MODEL]}", tmp_path / "dl")


@pytest.mark.slow
def test_harness_run_with_mlflow_twice_is_one_mlflow_run(tmp_path, store, monkeypatch, capsys):
    """The acceptance: `harness run --profile smoke --mlflow` (shrunk to seconds), read back; rerun: still one run."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    data = tmp_path / "data"
    for cls, color in COLORS.items():
        for i in range(4):
            write_image(data / "train" / cls / f"{cls}_{i}.jpg", color, size=(40, 32), seed=i)
        write_image(data / "test_plain" / cls / f"t_{cls}.jpg", color, size=(40, 32), seed=99)
    sets = [
        "image_size=32",
        "batch_size=4",
        "val_fraction=0.4",
        "device=cpu",
        "tta_hflip=false",
        "test_sets=['test_plain']",
        'phases.scratch=[{name="all", epochs=1}]',
        "thresholds.gated=['scratch-none']",
        "thresholds.accuracy={}",
        "thresholds.cam={}",
    ]
    argv = [
        "run",
        "--profile",
        "smoke",
        "--variants",
        "scratch-none",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
    ]
    argv += [x for s in sets for x in ("--set", s)] + ["--mlflow"]
    cli.main(argv)
    first = capsys.readouterr().out
    assert "mlflow: logged run" in first, first
    cli.main(argv)
    again = capsys.readouterr().out
    assert "mlflow: updated run" in again, again
    record = json.loads((tmp_path / "r" / mlflow_log.RECORD).read_text())
    c = MlflowClient(store)
    runs = c.search_runs([record["experiment_id"]])
    assert len(runs) == 2 and {r.info.run_id for r in runs} == {record["run_id"], *record["models"].values()}
    model_run = c.get_run(record["models"]["vgg16-scratch-none"])
    metrics = model_run.data.metrics
    assert {"test_plain/soft/s0", "test_plain/ece/s0", "latency_ms/batch1/s0", "onnx_parity_max_abs/s0"} <= set(metrics)
    assert "report.html" in {f.path for f in c.list_artifacts(record["run_id"])}
    assert c.get_run(record["run_id"]).data.params["profile.image_size"] == "32"
