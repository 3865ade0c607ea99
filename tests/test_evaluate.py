"""Tests for harness.evaluate and the export/evaluate CLI: metrics.json content, agreement with PyTorch, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import artifacts, export, runtime
from harness.cli import main
from harness.data import DataError, load_test, resize_batch
from harness.evaluate import EvaluateError, evaluate_run, evaluate_variant
from harness.stats import softmax
from tests.tiny_run import CLASSES, SIZE, make_dataset, make_variant, snapshot

REPEATS = dict(repeats=2, warmup=1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, data_root) -> Path:
    """A run directory with one exported variant (not yet evaluated); tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("run")
    export.export_variant(make_variant(run, data_root))
    return run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, exported_run):
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(exported_run, run)
    vdir = run / "vgg16-scratch-none-s0"
    return vdir, evaluate_variant(vdir, **REPEATS)


def fresh_copy(exported_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    return run, run / "vgg16-scratch-none-s0"


# --- metrics.json ----------------------------------------------------------------------------------------------------


def test_metrics_json_is_written_and_matches_the_return_value(evaluated):
    vdir, m = evaluated
    assert artifacts.read_json(vdir / "metrics.json") == json.loads(json.dumps(m))
    assert sorted(p.name for p in vdir.iterdir()) == [
        "config.json",
        "export.json",
        "metrics.json",
        "model.onnx",
        "model.pt",
    ]
    assert {"schema", "variant", "classes", "image_size", "model", "runtime", "test_sets", "latency"} <= set(m)
    assert m["classes"] == list(CLASSES) and m["image_size"] == SIZE
    assert m["model"]["sha256"] == artifacts.sha256_file(vdir / "model.onnx") and m["model"]["parity_passed"]
    if not runtime.gpu_usable():
        assert m["runtime"]["providers"] == [runtime.CPU] and m["runtime"]["requested"] == "auto"


def test_per_test_set_metrics_have_intervals_baselines_and_predictions(evaluated):
    _, m = evaluated
    assert set(m["test_sets"]) == {"test_easy", "test_difficult"}
    for split, s in m["test_sets"].items():
        n = s["n"]
        assert n == {"test_easy": 4, "test_difficult": 5}[split] == len(s["predictions"])
        for kind in ("soft", "strict"):
            acc = s[kind]
            assert acc["value"] == acc["k"] / n
            lo, hi = acc["wilson"]
            assert 0 <= lo <= acc["value"] <= hi <= 1
            assert acc["baselines"]["uniform"] == s["baselines"][f"uniform_{kind}"]
            assert acc["baselines"]["constant"] == s["baselines"][f"constant_{kind}"]
        assert s["baselines"]["uniform_strict"] == pytest.approx(1 / 3)
        assert sum(map(sum, s["confusion_matrix"])) == n and set(s["per_class_recall"]) == set(CLASSES)
        for p in s["predictions"]:
            probs = p["probabilities"]
            assert list(probs) == list(CLASSES) and sum(probs.values()) == pytest.approx(1.0)
            assert p["predicted"] == max(probs, key=probs.get)
            assert p["soft_correct"] == (p["predicted"] in p["acceptable"])
            assert p["strict_correct"] == (p["predicted"] == p["primary"])
        assert s["strict"]["k"] == sum(p["strict_correct"] for p in s["predictions"])
        assert s["soft"]["k"] == sum(p["soft_correct"] for p in s["predictions"])
    # the background-acceptable image counts 'background' as correct for soft accuracy
    bg = [p for p in m["test_sets"]["test_difficult"]["predictions"] if p["primary"] == "background"][0]
    assert "background" in bg["acceptable"]


def test_predictions_agree_with_pytorch(evaluated, data_root):
    from harness.train import load_checkpoint

    vdir, m = evaluated
    model, _ = load_checkpoint(vdir / "model.pt")
    ds = load_test(data_root, "test_difficult", CLASSES)
    x = resize_batch([s.image for s in ds.samples], SIZE).float() / 255
    with torch.no_grad():
        probs = softmax(model(x).numpy())
    got = m["test_sets"]["test_difficult"]["predictions"]
    assert [p["image"] for p in got] == [s.name for s in ds.samples]
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in got], probs, atol=1e-5)


def test_latency_per_provider_at_batch_1_and_8(evaluated):
    _, m = evaluated
    lat = m["latency"]
    assert lat["batch_sizes"] == [1, 8] and lat["repeats"] == 2 and lat["warmup"] == 1
    assert runtime.CPU in lat["by_provider"]
    for rec in lat["by_provider"].values():
        assert set(rec) == {"1", "8"}
        assert all(r["median_ms"] > 0 and r["throughput_ips"] > 0 for r in rec.values())


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-12)


# --- bad input: clear error naming the file, nothing else touched ----------------------------------------------------


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_model_onnx_names_the_file_and_touches_nothing(exported_run, tmp_path, damage):
    run, vdir = fresh_copy(exported_run, tmp_path)
    path = vdir / "model.onnx"
    data = path.read_bytes()
    path.write_bytes(b"\x08\x07garbage" * 100 if damage == "corrupt" else data[: len(data) // 3])
    before = snapshot(run)
    with pytest.raises(runtime.ModelLoadError) as info:
        evaluate_variant(vdir, **REPEATS)
    assert str(path) in str(info.value)
    assert snapshot(run) == before and not (vdir / "metrics.json").exists()


def test_input_shape_mismatch_names_the_file(exported_run, tmp_path):
    run, vdir = fresh_copy(exported_run, tmp_path)
    config = artifacts.read_json(vdir / "config.json")
    config["profile"]["image_size"] = 48  # the data would be fed at 48 px to a 32 px model
    artifacts.write_json(vdir / "config.json", config)
    before = snapshot(run)
    with pytest.raises(runtime.InputShapeError) as info:
        evaluate_variant(vdir, **REPEATS)
    assert str(vdir / "model.onnx") in str(info.value) and "image_size=48" in str(info.value)
    assert snapshot(run) == before


def test_missing_test_set_names_it(exported_run, tmp_path):
    run, vdir = fresh_copy(exported_run, tmp_path)
    partial = make_dataset(tmp_path / "partial", splits=("test_easy",))
    config = artifacts.read_json(vdir / "config.json")
    config["data_root"] = str(partial)
    artifacts.write_json(vdir / "config.json", config)
    before = snapshot(run)
    with pytest.raises(DataError) as info:
        evaluate_variant(vdir, **REPEATS)
    assert "test_difficult" in str(info.value) and str(partial / "test_difficult") in str(info.value)
    assert snapshot(run) == before


def test_not_exported_or_failed_parity_is_refused(exported_run, tmp_path):
    run, vdir = fresh_copy(exported_run, tmp_path)
    rec = artifacts.read_json(vdir / "export.json")
    rec["parity"]["passed"] = False
    artifacts.write_json(vdir / "export.json", rec)
    with pytest.raises(EvaluateError, match="failed parity"):
        evaluate_variant(vdir, **REPEATS)
    (vdir / "model.onnx").unlink()
    with pytest.raises(EvaluateError, match="model.onnx is missing"):
        evaluate_variant(vdir, **REPEATS)


def test_replaced_model_is_refused(exported_run, tmp_path):
    from harness.train import load_checkpoint

    run, vdir = fresh_copy(exported_run, tmp_path)
    model, _ = load_checkpoint(vdir / "model.pt")
    with torch.no_grad():
        model.head[-1].bias.add_(1.0)
    # a valid model of the right shape, but not the one that passed parity
    proto = export.to_onnx(model, SIZE, "torchscript", 17)
    import onnx

    onnx.save_model(proto, str(vdir / "model.onnx"))
    with pytest.raises(EvaluateError, match="differs from the file that passed parity"):
        evaluate_variant(vdir, **REPEATS)


@pytest.mark.skipif(runtime.gpu_usable(), reason="checks CPU-only behaviour")
def test_cuda_request_on_cpu_machine_is_refused(exported_run, tmp_path):
    _, vdir = fresh_copy(exported_run, tmp_path)
    with pytest.raises(runtime.RuntimeSetupError, match="no usable GPU"):
        evaluate_variant(vdir, providers="cuda", **REPEATS)


# --- CLI -------------------------------------------------------------------------------------------------------------


def test_cli_export_skips_and_evaluate_writes_metrics(exported_run, tmp_path, capsys):
    run, vdir = fresh_copy(exported_run, tmp_path)
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr()
    assert "already exported" in out.out and "opset 18" in out.out
    assert main(["evaluate", str(run), "--provider", "cpu", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "vgg16-scratch-none-s0 [CPUExecutionProvider]" in out and "test_difficult: soft" in out
    assert artifacts.read_json(vdir / "metrics.json")["runtime"]["requested"] == "cpu"


def test_cli_errors_are_one_line_naming_the_file(exported_run, tmp_path, capsys):
    run, vdir = fresh_copy(exported_run, tmp_path)
    (vdir / "model.onnx").write_bytes(b"broken")
    assert main(["evaluate", str(run), "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness evaluate: error:") and str(vdir / "model.onnx") in err
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_run_covers_every_variant(exported_run, tmp_path):
    run, _ = fresh_copy(exported_run, tmp_path)
    results = evaluate_run(run, "cpu", repeats=1, warmup=0)
    assert [r["variant"] for r in results] == ["vgg16-scratch-none-s0"]
