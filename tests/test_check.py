"""`harness check MODEL.onnx`: any ONNX classifier judged on a dataset, end to end, on hand-built ONNX graphs.

The "colour model" is a real, working classifier with known behaviour: two 1x1-conv detectors (red, blue) with ReLU,
global average pooling, a linear head; background wins when neither colour is present. On the generated dataset each
photo holds one coloured square (labelled with its box) on grey noise, so the model is right on every photo and the
evidence of where it looks is the square: occlusion must find it, far above a uniform map's chance level.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from harness import artifacts, check_model
from harness.cli import main

CLASSES = ("background", "blue", "red")
COLOR = {"red": (230, 30, 30), "blue": (30, 40, 230)}
SMALL = [
    "--set",
    "saliency.occlusion.window=8",
    "--set",
    "saliency.occlusion.stride=4",
    "--set",
    "saliency.sanity_images=4",
]


def _photo(path: Path, color, box, seed, size=(64, 48)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(100, 156, (size[1], size[0], 3)).astype(np.uint8)
    if color is not None:
        x, y, w, h = box
        arr[y : y + h, x : x + w] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def boxes_root(tmp_path):
    """train/<class>/ (names the classes), test_boxes (COCO, one square per photo with its box), test_plain
    (ImageFolder, no regions)."""
    root = tmp_path / "data"
    for i, c in enumerate(CLASSES):
        _photo(root / "train" / c / f"{c}.png", COLOR.get(c), (10, 10, 20, 20), i)
        _photo(root / "test_plain" / c / f"p_{c}.png", COLOR.get(c), (30, 20, 22, 22), 50 + i)
    images, anns = [], []
    layout = [
        ("red", (4, 4, 22, 20)),
        ("red", (38, 24, 24, 22)),
        ("blue", (20, 14, 24, 24)),
        ("blue", (2, 26, 22, 20)),
        ("background", None),
        ("background", None),
    ]
    for i, (label, box) in enumerate(layout):
        name = f"test_boxes/img_{i}.png"
        _photo(root / name, COLOR.get(label), box, 100 + i)
        images.append(
            {
                "id": i,
                "file_name": name,
                "width": 64,
                "height": 48,
                "primary_label": label,
                "acceptable_labels": [label] if label != "background" else [],
                "background_acceptable": label == "background",
            }
        )
        if box:
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": CLASSES.index(label) + 1, "bbox": list(box)}
            )
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "test_boxes.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
            }
        )
    )
    return root


def colour_model(path: Path, size: int = 32, gain: float = 40.0, constant: bool = False, seed: int | None = None):
    """NCHW float32 RGB 0..1 -> logits over CLASSES (see the module docstring); `constant`: the input is ignored
    (always background); `seed`: every weight random (a random-weight model)."""
    conv = np.array([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]], np.float32).reshape(2, 3, 1, 1)
    conv_b = np.array([-0.2, -0.2], np.float32)
    head = np.array([[0.0, 0.0, gain], [0.0, gain, 0.0]], np.float32)  # rows: red, blue detector
    head_b = np.array([1.5, 0.0, 0.0], np.float32)
    if constant:
        conv, head = conv * 0, head * 0
    if seed is not None:
        rng = np.random.default_rng(seed)
        conv, conv_b = rng.normal(size=conv.shape).astype(np.float32), rng.normal(size=2).astype(np.float32)
        head, head_b = rng.normal(size=head.shape).astype(np.float32), rng.normal(size=3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "head_w", "head_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)])],
        [
            numpy_helper.from_array(conv, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(head, "head_w"),
            numpy_helper.from_array(head_b, "head_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _classes_set(order=CLASSES):
    return ["--set", "classes=[" + ", ".join(f'"{c}"' for c in order) + "]"]


def _by(report):
    return {f"{v['criterion']}[{v['id']}]": v for v in report["verdicts"]}


def test_a_working_model_passes_and_its_occlusion_map_finds_the_object(boxes_root, tmp_path, capsys):
    model = colour_model(tmp_path / "colour.onnx")
    out = tmp_path / "run"
    code = main(["check", str(model), "--data", str(boxes_root), "--out", str(out), *_classes_set(), *SMALL])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    report = artifacts.read_json(out / "report.json")
    assert report["verdict"] == "PASS"
    by = _by(report)
    acc = by["accuracy[onnx-colour-test_boxes]"]
    assert acc["status"] == "PASS" and acc["value"] == 1.0 and acc["chance"] == pytest.approx(2 / 6)
    assert by["accuracy[onnx-colour-test_plain]"]["value"] == 1.0  # discovered ImageFolder split, default rule
    energy = by["occlusion_energy[onnx-colour-test_boxes]"]
    # the squares cover 14-19% of their photos: a uniform map's share; occlusion puts most energy on them
    assert 0.1 < energy["chance"] < 0.25 and energy["value"] > 3 * energy["chance"]
    assert energy["threshold"] == pytest.approx(energy["chance"] + 0.10)
    assert by["occlusion_pointing[onnx-colour-test_boxes]"]["value"] == 1.0
    assert "occlusion_energy[onnx-colour-test_plain]" not in by  # no regions there: not judged, not an error
    # Grad-CAM and parity need the PyTorch model: skipped with the reason, never an error
    assert by["onnx_parity[onnx-colour]"]["status"] == "SKIP"
    assert not [k for k in by if k.startswith("cam_")]  # no Grad-CAM criterion for an ONNX file
    folder = out / "colour"
    occ = artifacts.read_json(folder / "occlusion.json")
    assert occ["passes_per_image"] == pytest.approx(7 * 7 + 1 + 1)  # 32 px, w8 s4: 49 windows + p0 + the peek
    assert occ["seconds_per_image"] > 0 and occ["sanity"]["maps"] >= 1
    assert all(
        (out / r["overlay_path"]).is_file()
        for r in report["variants"]["colour"]["saliency"]["occlusion"]["images"]["test_boxes"]
    )
    assert (out / "report.html").is_file() and artifacts.read_json(out / "run.json")["kind"] == "check"
    # the run directory is harness run's shape: harness report recomputes the same verdicts
    assert main(["report", str(out)]) == 0
    again = artifacts.read_json(out / "report.json")
    assert [(v["id"], v["criterion"], v["status"]) for v in again["verdicts"]] == [
        (v["id"], v["criterion"], v["status"]) for v in report["verdicts"]
    ]


@pytest.mark.slow
def test_the_pytest_gate_judges_a_check_run_unchanged(boxes_root, tmp_path):
    model = colour_model(tmp_path / "colour.onnx")
    out = tmp_path / "run"
    assert main(["check", str(model), "--data", str(boxes_root), "--out", str(out), *_classes_set(), *SMALL]) == 0
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(repo / "suites" / "test_gate.py"),
            "--run-dir",
            str(out),
            "-v",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    # the gate ran the check run's own criteria, by their ids
    assert "test_occlusion_energy[onnx-colour-test_boxes] PASSED" in res.stdout
    assert "test_accuracy[onnx-colour-test_plain] PASSED" in res.stdout


def test_a_foreign_nhwc_uint8_bgr_probability_wrapper_gives_identical_predictions(boxes_root, tmp_path):
    from onnx_wrappers import wrap_nhwc_uint8_bgr_probs

    src = colour_model(tmp_path / "colour.onnx")
    order = [2, 0, 1]  # the wrapper's columns: red, background, blue
    wrapped = wrap_nhwc_uint8_bgr_probs(src, tmp_path / "vendor.onnx", order)
    spec = tmp_path / "vendor.toml"
    spec.write_text(
        'layout = "NHWC"\ndtype = "uint8"\nvalue_range = "0..255"\nchannels = "BGR"\n'
        'output_kind = "probabilities"\nclasses = ["red", "background", "blue"]\n'
    )
    a = check_model(src, boxes_root, sets=[*_classes_set()[1:], *SMALL[1::2]], out=tmp_path / "a")
    b = check_model(wrapped, boxes_root, spec=spec, sets=SMALL[1::2], out=tmp_path / "b")
    assert a.passed and b.passed
    for split in ("test_boxes", "test_plain"):
        pa = a.report["variants"]["colour"]["test_sets"][split]["predictions"]
        pb = b.report["variants"]["vendor"]["test_sets"][split]["predictions"]
        assert [p["predicted"] for p in pa] == [p["predicted"] for p in pb]
        for x, y in zip(pa, pb):
            assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-5)


@pytest.mark.parametrize(
    "spec_text, match",
    [
        (
            'dtype = "uint8"\nchannels = "BGR"\noutput_kind = "probabilities"\n'
            'classes = ["red", "background", "blue"]\n'
            'layout = "NCHW"\n',
            "layout",
        ),
        ('layout = "NHWC"\ndtype = "uint8"\nchannels = "BGR"\noutput_kind = "probabilities"\n', "classes"),
        (
            'layout = "NHWC"\ndtype = "uint8"\nchannels = "BGR"\noutput_kind = "probabilities"\n'
            'classes = ["red", "background", "green"]\n',
            "green",
        ),
    ],
)
def test_a_wrong_spec_stops_with_a_clear_error_before_anything_is_written(
    boxes_root, tmp_path, capsys, spec_text, match
):
    from onnx_wrappers import wrap_nhwc_uint8_bgr_probs

    wrapped = wrap_nhwc_uint8_bgr_probs(colour_model(tmp_path / "colour.onnx"), tmp_path / "vendor.onnx", [2, 0, 1])
    spec = tmp_path / "vendor.toml"
    spec.write_text(spec_text)
    out = tmp_path / "run"
    code = main(["check", str(wrapped), "--data", str(boxes_root), "--spec", str(spec), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("harness check: error: ") and match in err and "Traceback" not in err
    assert not out.exists()


def test_the_class_order_omitted_on_a_permuted_model_is_never_a_silent_pass(boxes_root, tmp_path):
    """classes given in the dataset's order while the model's columns are permuted: the gate fails visibly."""
    from onnx_wrappers import wrap_nhwc_uint8_bgr_probs

    wrapped = wrap_nhwc_uint8_bgr_probs(colour_model(tmp_path / "colour.onnx"), tmp_path / "vendor.onnx", [2, 0, 1])
    spec = tmp_path / "vendor.toml"
    spec.write_text(
        'layout = "NHWC"\ndtype = "uint8"\nchannels = "BGR"\noutput_kind = "probabilities"\n'
        'classes = ["background", "blue", "red"]\n'
    )
    result = check_model(wrapped, boxes_root, spec=spec, sets=SMALL[1::2], out=tmp_path / "run")
    assert result.verdict == "FAIL"
    assert any(v["criterion"] == "soft_above_constant" for v in result.failures())


@pytest.mark.slow
def test_a_constant_answer_model_and_a_random_weight_model_fail_the_gate(boxes_root, tmp_path):
    const = check_model(
        colour_model(tmp_path / "const.onnx", constant=True),
        boxes_root,
        sets=[*_classes_set()[1:], *SMALL[1::2]],
        out=tmp_path / "c",
    )
    assert const.verdict in ("FAIL", "ERROR") and not const.passed
    by = _by(const.report)
    assert by["soft_above_constant[onnx-const-test_boxes]"]["status"] == "FAIL"
    # its maps are all zeros whatever the head: "the maps do not depend on the model", localization ERROR
    assert by["occlusion_sanity[onnx-const]"]["value"] == 1.0
    assert by["occlusion_energy[onnx-const-test_boxes]"]["status"] == "ERROR"
    assert "do not depend on the model" in by["occlusion_energy[onnx-const-test_boxes]"]["detail"]
    rand = check_model(
        colour_model(tmp_path / "random.onnx", seed=3),
        boxes_root,
        sets=[*_classes_set()[1:], *SMALL[1::2]],
        out=tmp_path / "r",
    )
    assert rand.verdict in ("FAIL", "ERROR") and not rand.passed
    assert {v["criterion"] for v in rand.failures() if v["status"] == "FAIL"} & {
        "accuracy",
        "soft_above_constant",
        "wilson_above_constant",
    }
    assert (
        main(
            [
                "check",
                str(tmp_path / "random.onnx"),
                "--data",
                str(boxes_root),
                "--out",
                str(tmp_path / "r2"),
                *_classes_set(),
                *SMALL,
            ]
        )
        == 1
    )


def test_hostile_check_inputs_are_one_line_errors(boxes_root, tmp_path, capsys):
    model = colour_model(tmp_path / "colour.onnx")
    cases = [
        (["check", str(tmp_path / "missing.onnx"), "--data", str(boxes_root)], "missing.onnx"),
        (
            ["check", str(model), "--data", str(boxes_root), *_classes_set(), "--set", "saliency.methods=['gradcam']"],
            "gradcam",
        ),
        (
            ["check", str(model), "--data", str(boxes_root), *_classes_set(), "--set", "saliency.occlusion.window=0"],
            "window",
        ),
        (["check", str(model), "--data", str(boxes_root), *_classes_set(), "--set", 'layout="NWHC"'], "layout"),
        (["check", str(model), "--data", str(boxes_root), *_classes_set(), "--profile", "cpu"], "harness check"),
        (["check", str(model), "--data", str(tmp_path / "nowhere"), *_classes_set()], "nowhere"),
    ]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases.append((["check", str(tmp_path / "junk.onnx"), "--data", str(boxes_root), *_classes_set()], "junk.onnx"))
    for argv, match in cases:
        code = main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert match in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_check_of_a_harness_export_needs_no_spec_and_reproduces_its_evaluation_exactly(tmp_path):
    """The exported model of a harness run, checked from its file alone: the same predictions and probabilities as
    `harness evaluate` computed, on every test set (the spec comes from the export's metadata)."""
    from harness.evaluate import evaluate_variant
    from harness.export import export_variant
    from tests.tiny_run import make_dataset, make_variant

    data = make_dataset(tmp_path / "data")
    vdir = make_variant(tmp_path / "run", data)
    export_variant(vdir)
    metrics = evaluate_variant(vdir, providers="cpu", repeats=1, warmup=0, batch_sizes=(1,))
    result = check_model(
        vdir / "model.onnx",
        data,
        sets=["saliency.occlusion.window=16", "saliency.occlusion.stride=16"],
        out=tmp_path / "check",
    )
    entry = result.report["variants"][vdir.name]
    assert entry["kind"] == "check" and set(entry["test_sets"]) == set(metrics["test_sets"])
    spec = artifacts.read_json(tmp_path / "check" / vdir.name / "config.json")["spec"]
    assert spec["sources"]["classes"] == "ONNX metadata" and spec["layout"] == "NCHW"
    for split, m in metrics["test_sets"].items():
        c = entry["test_sets"][split]
        assert (c["soft"]["value"], c["strict"]["value"]) == (m["soft"]["value"], m["strict"]["value"])
        for a, b in zip(m["predictions"], c["predictions"]):
            assert a["image"] == b["image"] and a["predicted"] == b["predicted"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
