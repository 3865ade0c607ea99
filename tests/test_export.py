"""Tests for harness.export: ONNX export, graph contract, checker, metadata, parity, TTA, atomic writes, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from harness import artifacts, export, onnx_contract, parity, runtime
from harness.data import DataError
from tests.tiny_run import CLASSES, SIZE, make_dataset, make_variant, snapshot


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_root):
    """One variant exported with the default (dynamo) exporter: (vdir, export record)."""
    vdir = make_variant(tmp_path_factory.mktemp("run"), data_root)
    return vdir, export.export_variant(vdir)


def _x(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


# --- round trip ------------------------------------------------------------------------------------------------------


def test_export_writes_model_and_record_and_nothing_else(exported):
    vdir, rec = exported
    assert sorted(p.name for p in vdir.iterdir()) == ["config.json", "export.json", "model.onnx", "model.pt"]
    assert artifacts.read_json(vdir / "export.json") == rec
    assert rec["exporter"]["kind"] == "dynamo" and rec["exporter"]["name"] == "torch.onnx.export(dynamo=True)"
    assert rec["opset"] >= 17 and rec["external_data"] is None
    assert rec["sha256"] == artifacts.sha256_file(vdir / "model.onnx")
    assert rec["checker"] == {"full_check": True, "passed": True}
    onnx.checker.check_model(str(vdir / "model.onnx"), full_check=True)


def test_parity_passed_and_differences_are_recorded(exported):
    _, rec = exported
    cpu = rec["parity"]["cpu"]
    assert rec["parity"]["passed"] and cpu["passed"] and cpu["providers"] == [runtime.CPU]
    assert (cpu["atol"], cpu["rtol"]) == (1e-4, 1e-3)
    assert 0 <= cpu["max_abs"] <= 1e-4 and 0 <= cpu["max_tolerance_used"] <= 1
    assert {k: v["images"] for k, v in cpu["test_sets"].items()} == {"test_easy": 4, "test_difficult": 5}
    assert all(v["top1_mismatches"] == [] for v in cpu["test_sets"].values())
    if not runtime.gpu_usable():
        assert "skipped" in rec["parity"]["cuda"]


def test_onnx_batch_dimension_is_symbolic_and_metadata_is_stored(exported):
    vdir, rec = exported
    model = onnx.load(str(vdir / "model.onnx"))
    (inp,), (out,) = model.graph.input, model.graph.output
    idims, odims = inp.type.tensor_type.shape.dim, out.type.tensor_type.shape.dim
    assert idims[0].dim_param and not idims[0].HasField("dim_value")
    assert [d.dim_value for d in idims[1:]] == [3, SIZE, SIZE]
    assert odims[0].dim_param and odims[1].dim_value == len(CLASSES)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["harness.classes"]) == list(CLASSES)
    assert props["harness.image_size"] == str(SIZE)
    assert props["harness.exporter"] == rec["exporter"]["name"] and props["harness.opset"] == str(rec["opset"])
    assert rec["input"]["shape"][0] == rec["output"]["shape"][0] and isinstance(rec["input"]["shape"][0], str)


def test_dynamic_batch_accepts_1_and_5_and_matches_torch(exported):
    from harness.train import load_checkpoint

    vdir, _ = exported
    model, _ = load_checkpoint(vdir / "model.pt")
    session = runtime.create_session(vdir / "model.onnx", [runtime.CPU])
    for n in (1, 5):
        x = _x(n)
        got = session.run(None, {"input": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert got.shape == (n, len(CLASSES))
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_second_export_is_skipped_unless_forced(exported, capfd):
    vdir, rec = exported
    before = snapshot(vdir)
    again = export.export_variant(vdir)
    assert again["skipped"] is True and again["sha256"] == rec["sha256"]
    assert snapshot(vdir) == before
    assert "skipping" in capfd.readouterr().err
    assert export.export_is_current(vdir)


def test_export_with_a_replaced_model_is_not_current(tmp_path, exported):
    vdir, _ = exported
    copy = tmp_path / vdir.name
    copy.mkdir()
    for name in ("export.json", "model.onnx"):
        (copy / name).write_bytes((vdir / name).read_bytes())
    assert export.export_is_current(copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.truncate(1000)
    assert not export.export_is_current(copy)


# --- TTA and the legacy exporter -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tta_export_equals_average_of_image_and_flip_logits(tmp_path, data_root):
    from harness.train import load_checkpoint

    vdir = make_variant(tmp_path, data_root, tta=True)
    rec = export.export_variant(vdir)
    assert rec["tta_hflip"] is True and rec["parity"]["passed"]
    model, _ = load_checkpoint(vdir / "model.pt")
    x = _x(3, seed=2)
    got = runtime.create_session(vdir / "model.onnx", [runtime.CPU]).run(None, {"input": x})[0]
    with torch.no_grad():
        t = torch.from_numpy(x)
        plain = model(t).numpy()
        averaged = ((model(t) + model(t.flip(3))) / 2).numpy()
    np.testing.assert_allclose(got, averaged, atol=1e-4, rtol=1e-3)
    assert np.abs(got - plain).max() > 1e-3  # the wrapper really is in the graph


def test_torchscript_exporter_with_external_data_beside_the_model(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(onnx_contract, "EXTERNAL_DATA_THRESHOLD", 0)  # force the > 2 GiB layout on a small model
    vdir = make_variant(tmp_path, data_root)
    rec = export.export_variant(vdir, exporter="torchscript")
    assert rec["exporter"]["kind"] == "torchscript" and rec["opset"] == 17 and rec["parity"]["passed"]
    assert rec["external_data"] == "model.onnx.data"
    assert sorted(p.name for p in vdir.iterdir()) == [
        "config.json",
        "export.json",
        "model.onnx",
        "model.onnx.data",
        "model.pt",
    ]
    assert (vdir / "model.onnx").stat().st_size < 100_000 < (vdir / "model.onnx.data").stat().st_size
    onnx.checker.check_model(str(vdir / "model.onnx"), full_check=True)
    x = _x(2)
    out = runtime.create_session(vdir / "model.onnx", [runtime.CPU]).run(None, {"input": x})[0]
    assert out.shape == (2, len(CLASSES))


def test_failed_parity_is_recorded_and_installs_no_model(tmp_path, data_root, monkeypatch):
    vdir = make_variant(tmp_path, data_root)
    real = export.torch_logits
    monkeypatch.setattr(export, "torch_logits", lambda module, x, batch=8: real(module, x, batch) + 1e-2)
    with pytest.raises(export.ExportError, match="parity failed") as info:
        export.export_variant(vdir, exporter="torchscript")
    assert str(vdir / "model.onnx") in str(info.value)
    assert sorted(os.listdir(vdir)) == ["config.json", "export.json", "model.pt"]  # no model.onnx, no temp file
    rec = artifacts.read_json(vdir / "export.json")
    assert rec["parity"]["passed"] is False and rec["parity"]["cpu"]["max_abs"] == pytest.approx(1e-2, rel=1e-3)
    assert not export.export_is_current(vdir)


# --- graph contract and parity arithmetic (no export needed) ---------------------------------------------------------


N_CLASSES = len(CLASSES)


def _proto(batch, size=SIZE, classes=N_CLASSES, dtype=onnx.TensorProto.FLOAT, opset=18):
    from onnx import helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["logits"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, classes])],
        [helper.make_tensor("w", dtype, [3, classes], [0.0] * (3 * classes))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_check_graph_contract():
    info = onnx_contract.check_graph(_proto("batch"), SIZE, len(CLASSES), "m.onnx")
    assert info["input"]["shape"] == ["batch", 3, SIZE, SIZE] and info["opset"] == 18
    with pytest.raises(onnx_contract.ExportError, match="batch dimension is not symbolic"):
        onnx_contract.check_graph(_proto(2), SIZE, len(CLASSES), "m.onnx")
    with pytest.raises(onnx_contract.ExportError, match=r"expected \[N, 3, 64, 64\]"):
        onnx_contract.check_graph(_proto("batch"), 64, len(CLASSES), "m.onnx")
    with pytest.raises(onnx_contract.ExportError, match="BFLOAT16"):
        onnx_contract.check_graph(_proto("batch", dtype=onnx.TensorProto.BFLOAT16), SIZE, len(CLASSES), "m.onnx")
    with pytest.raises(onnx_contract.ExportError, match="opset 16"):
        onnx_contract.check_graph(_proto("batch", opset=16), SIZE, len(CLASSES), "m.onnx")


def test_compare_tolerance_and_top1():
    ref = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    ok = parity.compare(ref, ref + 5e-5, 1e-4, 1e-3)
    assert ok["passed"] and ok["max_abs"] == pytest.approx(5e-5, rel=1e-2)
    assert ok["max_tolerance_used"] == pytest.approx(5e-5 / (1e-4 + 1e-3 * 0.0), rel=1e-2)  # worst at ref == 0
    bad = parity.compare(ref, ref + np.array([[0, 0, 0], [0, 3e-3, 0]]), 1e-4, 1e-3)
    assert not bad["passed"] and not bad["within_tolerance"]  # 3e-3 > 1e-4 + 1e-3 * 2
    assert bad["max_tolerance_used"] == pytest.approx(3e-3 / (1e-4 + 2e-3), rel=1e-3)
    near = np.array([[1.0, 0.999, 0.0]])
    flipped = np.array([[0.999, 1.0, 0.0]])
    strict = parity.compare(near, flipped, 1e-2, 1e-2, names=["a.jpg"])
    assert strict["within_tolerance"] and strict["top1_mismatches"] == ["a.jpg"] and not strict["passed"]
    tie = parity.compare(near, flipped, 1e-2, 1e-2, tie_margin=2e-2, names=["a.jpg"])
    assert tie["passed"] and tie["top1_near_tie_flips"] == ["a.jpg"]


# --- bad input: clear errors, nothing written ------------------------------------------------------------------------


def test_missing_test_set_is_a_clear_error_and_writes_nothing(tmp_path):
    data = make_dataset(tmp_path / "data", splits=("test_easy",))
    vdir = make_variant(tmp_path / "run", data)
    before = snapshot(tmp_path / "run")
    with pytest.raises(DataError) as info:
        export.export_variant(vdir)
    assert "test_difficult" in str(info.value) and str(data / "test_difficult") in str(info.value)
    assert snapshot(tmp_path / "run") == before


def test_corrupt_checkpoint_names_the_file(tmp_path, data_root):
    vdir = make_variant(tmp_path, data_root)
    (vdir / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(vdir / "model.pt")):
        export.export_variant(vdir)
    assert sorted(os.listdir(vdir)) == ["config.json", "model.pt"]


def test_export_run_needs_trained_variants(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained variants"):
        export.export_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.export_run(tmp_path / "nope")
