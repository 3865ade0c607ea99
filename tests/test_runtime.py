"""Tests for harness.runtime: provider choice, session creation errors, input checks, batching and latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import runtime


def tiny_onnx(path: Path, size: int = 8, classes: int = 3, batch: str | int = "batch") -> Path:
    """N x 3 x size x size -> GlobalAveragePool -> Flatten -> MatMul(3 x classes): logits N x classes."""
    w = np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))
    return path


def _reference(x: np.ndarray, classes: int = 3) -> np.ndarray:
    w = np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10
    return x.mean(axis=(2, 3)) @ w


needs_cpu_machine = pytest.mark.skipif(runtime.gpu_usable(), reason="checks CPU-only behaviour; this machine has a GPU")


# --- provider choice -------------------------------------------------------------------------------------------------


@needs_cpu_machine
def test_auto_on_cpu_machine_is_cpu_only_and_silent(tmp_path, capfd):
    capfd.readouterr()
    providers = runtime.select_providers("auto")
    assert providers == [runtime.CPU]
    session = runtime.create_session(tiny_onnx(tmp_path / "m.onnx"), providers)
    session.run(None, {"input": np.zeros((1, 3, 8, 8), np.float32)})
    assert session.get_providers() == [runtime.CPU]
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no provider-library errors from asking for CUDA on a CPU machine


@needs_cpu_machine
@pytest.mark.parametrize("request_", ["cuda", "tensorrt"])
def test_gpu_provider_on_cpu_machine_is_a_clear_error(request_, capfd):
    with pytest.raises(runtime.RuntimeSetupError, match="no usable GPU"):
        runtime.select_providers(request_)
    assert capfd.readouterr().err == ""


def test_cpu_request_and_unknown_request():
    assert runtime.select_providers("cpu") == [runtime.CPU]
    assert runtime.select_providers("CPU") == [runtime.CPU]
    with pytest.raises(runtime.RuntimeSetupError, match="unknown provider 'tpu'"):
        runtime.select_providers("tpu")


def test_auto_with_a_usable_gpu_asks_for_cuda_first(monkeypatch):
    import onnxruntime

    if runtime.CUDA not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    monkeypatch.setattr(runtime, "gpu_usable", lambda: True)
    assert runtime.select_providers("auto") == [runtime.CUDA, runtime.CPU]
    assert runtime.select_providers("tensorrt") == [runtime.TENSORRT, runtime.CUDA, runtime.CPU]


# --- sessions and bad files ------------------------------------------------------------------------------------------


def test_session_runs_dynamic_batches(tmp_path):
    session = runtime.create_session(tiny_onnx(tmp_path / "m.onnx"), [runtime.CPU])
    x = np.random.default_rng(0).random((11, 3, 8, 8), dtype=np.float32)
    for batch in (1, 5, 8):
        np.testing.assert_allclose(runtime.run_batches(session, x, batch), _reference(x), rtol=1e-5, atol=1e-6)
    spec = runtime.input_spec(session)
    assert spec["input"] == "input" and isinstance(spec["input_shape"][0], str)
    assert spec["input_shape"][1:] == [3, 8, 8] and spec["output_shape"][1] == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model_raises_naming_the_file(tmp_path, damage):
    path = tiny_onnx(tmp_path / "model.onnx")
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"this is not a protobuf \x00\xff" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.raises(runtime.ModelLoadError) as info:
        runtime.create_session(path, [runtime.CPU])
    assert str(path) in str(info.value) and "corrupt" in str(info.value)


def test_missing_model_names_the_file(tmp_path):
    with pytest.raises(runtime.ModelLoadError, match="model.onnx is missing"):
        runtime.create_session(tmp_path / "model.onnx", [runtime.CPU])


def test_check_io_accepts_matching_and_rejects_mismatched_shapes(tmp_path):
    path = tiny_onnx(tmp_path / "model.onnx", size=8, classes=3)
    session = runtime.create_session(path, [runtime.CPU])
    runtime.check_io(session, path, 8, 3)
    with pytest.raises(runtime.InputShapeError) as info:
        runtime.check_io(session, path, 16, 3)
    assert str(path) in str(info.value) and "image_size=16" in str(info.value)
    with pytest.raises(runtime.InputShapeError, match="expected N x 4 logits"):
        runtime.check_io(session, path, 8, 4)


def test_check_io_is_about_the_image_shape_not_the_batch(tmp_path):
    # A fixed batch dimension is still an N x 3 x S x S input; check_io is about the image shape.
    path = tiny_onnx(tmp_path / "fixed.onnx", size=8, batch=2)
    runtime.check_io(runtime.create_session(path, [runtime.CPU]), path, 8, 3)


# --- latency ---------------------------------------------------------------------------------------------------------


def test_measure_latency_reports_median_and_throughput(tmp_path):
    session = runtime.create_session(tiny_onnx(tmp_path / "m.onnx"), [runtime.CPU])
    lat = runtime.measure_latency(session, 8, batch_sizes=(1, 8), repeats=5, warmup=1)
    assert set(lat) == {"1", "8"}
    for b, rec in lat.items():
        assert rec["batch"] == int(b) and rec["repeats"] == 5 and rec["warmup"] == 1
        assert 0 < rec["min_ms"] <= rec["median_ms"] <= rec["p90_ms"]
        assert rec["throughput_ips"] == pytest.approx(int(b) / (rec["median_ms"] / 1e3))
    with pytest.raises(ValueError, match="repeats"):
        runtime.measure_latency(session, 8, repeats=0)


def test_measure_latency_stops_at_its_time_budget_after_three_runs(tmp_path):
    session = runtime.create_session(tiny_onnx(tmp_path / "m.onnx"), [runtime.CPU])
    lat = runtime.measure_latency(session, 8, batch_sizes=(2,), repeats=50, warmup=0, budget_s=0.0)
    assert lat["2"]["repeats"] == 3
