"""Hostile and careless inputs of the issue-27 audit, each at its mechanism (every test failed on the code before):

- a user's thresholds file naming a test set the run does not have is an error in `harness run` and `harness check`,
  as in `harness report` (the built-in profile's rules set aside on another dataset stay a note);
- `harness check --out` onto a training run, onto an earlier check of another model, or into the dataset is refused;
- a class with one training photo (no validation photo, so no "best validation epoch") is refused at data load;
- a --weights-file that is a torch file of another architecture is refused by the preflight, before any training;
- an ONNX input too large to allocate is refused while the spec is resolved; a non-finite output on ANY image is an
  error naming that image (never class 0 in metrics.json);
- animated GIFs are read (first frame); a file that is not an image is refused naming it; hidden files are skipped
  and counted in the log;
- advice that would hurt: no `harness export --force` for a foreign model, spec classes override broken harness
  metadata, a test set whose constant answer already scores 1.0 says why it cannot be judged above it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import harness.check
import harness.preprocess
import harness.run
from harness import backbones
from harness.cli import main
from harness.config import load_profile
from harness.data import MIN_TRAIN_PER_CLASS, DataError, Dataset, Sample, decode_image, load_test, load_train
from harness.evaluate import EvaluateError, split_metrics
from harness.run import fit_profile
from harness.spec import SpecError, read_spec, resolve_spec
from harness.thresholds import parse_thresholds
from harness.train import prepare_data
from tests.conftest import write_image
from tests.onnx_wrappers import harness_like_model, mean_model

CLASSES = ("a", "b", "c")
SMALL = [
    "--set",
    "saliency.occlusion.window=8",
    "--set",
    "saliency.occlusion.stride=8",
    "--set",
    "saliency.sanity_images=2",
    "--set",
    "robustness.enabled=false",
]


def _classes(order=CLASSES) -> list[str]:
    return ["--set", "classes=[" + ", ".join(f'"{c}"' for c in order) + "]"]


def _check_data(root: Path, test_classes=CLASSES, per_class: int = 2) -> Path:
    """train/<class>/ (names the classes for harness check) and an ImageFolder test set test_plain."""
    for k, c in enumerate(CLASSES):
        write_image(root / "train" / c / f"{c}.png", (40 * k, 80, 200 - 40 * k), size=(40, 32), seed=k)
    for k, c in enumerate(test_classes):
        for i in range(per_class):
            write_image(root / "test_plain" / c / f"{c}_{i}.png", (60 * k, 90, 30), size=(40, 32), seed=10 + i)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def no_training(monkeypatch):
    """The matrix must never start: a preflight error ends `harness run` before any variant trains."""

    def refuse(*a, **k):
        pytest.fail("the matrix started: the error was not found in the preflight")

    monkeypatch.setattr(harness.run, "execute_matrix", refuse)


# --- 1. a user's thresholds file naming a test set the run does not have -----------------------------------------


@pytest.mark.parametrize(
    "toml, hint",
    [
        ("[thresholds.accuracy.test_plian]\nsoft_min = 0.99\n", "did you mean 'test_plain'"),
        ("[thresholds.accuracy.test_easy]\nsoft_min = 0.5\n", "test_easy"),  # the profile names it too: still mine
        ('[thresholds.cam]\nsplit = "test_plian"\n', "did you mean 'test_plain'"),
    ],
)
def test_run_refuses_a_user_thresholds_file_naming_an_absent_test_set(
    tiny_root, tmp_path, no_training, capsys, toml, hint
):
    t = tmp_path / "t.toml"
    t.write_text(toml)
    out = tmp_path / "run"
    argv = ["run", "--profile", "smoke", "--variants", "scratch-none", "--data", str(tiny_root)]
    code = main([*argv, "--thresholds", str(t), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert hint in err and str(t) in err and "not applied" not in err
    assert not out.exists()


def test_the_profiles_own_rules_on_another_dataset_are_set_aside_with_a_note(tiny_root):
    profile = load_profile("smoke", ["image_size=32"])
    thresholds = parse_thresholds(profile.thresholds, profile.source)
    fitted, _, notes = fit_profile(profile, thresholds, tiny_root)
    assert fitted.test_sets == ("test_plain",)
    assert any("not applied" in n for n in notes)


def test_check_refuses_a_user_thresholds_file_naming_an_absent_test_set(tmp_path, capsys):
    data = _check_data(tmp_path / "data")
    model = mean_model(tmp_path / "m.onnx")
    t = tmp_path / "t.toml"
    t.write_text("[thresholds.accuracy.test_plian]\nsoft_min = 0.99\n")
    out = tmp_path / "out"
    code = main(["check", str(model), "--data", str(data), *_classes(), "--thresholds", str(t), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'test_plain'" in err and str(t) in err, err
    assert not out.exists()


# --- 2. harness check --out --------------------------------------------------------------------------------------


def _check(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["check", str(model), "--data", str(data), *_classes(), *SMALL, "--out", str(out), *extra])


def test_check_out_onto_a_training_run_is_refused_and_leaves_it_alone(tmp_path, capsys):
    data = _check_data(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"profile": {"name": "smoke"}, "variants": ["scratch-none"]}))
    (run / "vgg16-scratch-none-s0").mkdir()
    (run / "vgg16-scratch-none-s0" / "config.json").write_text(json.dumps({"variant": "scratch-none"}))
    before = _files(run)
    code = _check(mean_model(tmp_path / "m.onnx"), data, run)
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(run) in err and "harness run" in err and "--out" in err
    assert _files(run) == before


def test_check_out_reused_for_another_model_is_refused_and_the_same_model_resumes(tmp_path, capsys):
    data = _check_data(tmp_path / "data")
    out = tmp_path / "out"
    first = mean_model(tmp_path / "first.onnx", seed=1)
    assert _check(first, data, out) in (0, 1)
    before = _files(out)
    capsys.readouterr()
    code = _check(mean_model(tmp_path / "second.onnx", seed=2), data, out)
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(out) in err and "first.onnx" in err and "another --out" in err
    assert _files(out) == before
    # the same file again: a resume, every step current
    assert _check(first, data, out) in (0, 1)
    assert "metrics.json is current" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["same", "inside"])
def test_check_out_in_the_dataset_is_refused(tmp_path, capsys, where):
    data = _check_data(tmp_path / "data")
    before = _files(data)
    out = data if where == "same" else data / "test_plain" / "out"
    code = _check(mean_model(tmp_path / "m.onnx"), data, out)
    err = capsys.readouterr().err
    assert code == 2 and "--data" in err and str(data) in err, err
    assert _files(data) == before and not (data / "test_plain" / "out").exists()


# --- 3. a training split with no validation photo of a class -----------------------------------------------------


def test_a_class_with_one_training_photo_is_refused_at_data_load(tiny_root):
    for p in sorted((tiny_root / "train" / "red").iterdir())[1:]:
        p.unlink()
    assert len(load_train(tiny_root)) == 11  # read for anything but training (an audit): accepted
    with pytest.raises(DataError) as err:
        load_train(tiny_root, min_per_class=MIN_TRAIN_PER_CLASS)
    msg = str(err.value)
    assert str(tiny_root / "train" / "red") in msg and "1 photo" in msg and "at least 2" in msg
    assert "green" not in msg  # the classes that have enough are not named


def test_one_photo_per_class_stops_harness_run_before_training(tmp_path, no_training, capsys):
    root = tmp_path / "data"
    for k, c in enumerate(CLASSES):
        write_image(root / "train" / c / f"{c}.jpg", (70 * k, 60, 90), seed=k)
        write_image(root / "test_plain" / c / f"t_{c}.jpg", (70 * k, 60, 90), seed=10 + k)
    code = main(
        ["run", "--profile", "smoke", "--variants", "scratch-none", "--data", str(root), "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "validation" in err and "1 photo" in err, err
    assert not (tmp_path / "r").exists()


def test_prepare_data_refuses_a_split_without_validation_photos():
    """A Dataset built in Python (not through load_train) with one photo per class: no silent 0.0 validation loss."""
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    ds = Dataset("train", ("x", "y"), tuple(Sample(f"{c}.png", img, c, frozenset({c})) for c in "xy"), False)
    with pytest.raises(DataError, match=r"'x'.*1 photo"):
        prepare_data(ds, load_profile("smoke", ["image_size=32"]))


# --- 4. a weights file of another architecture --------------------------------------------------------------------


def test_a_weights_file_with_foreign_keys_is_refused_by_the_preflight(
    tiny_root, tmp_path, monkeypatch, no_training, capsys
):
    vgg = backbones.BACKBONES["vgg16"]
    monkeypatch.setitem(backbones.BACKBONES, "vgg16", dataclasses.replace(vgg, min_weights_bytes=0))
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}, foreign)
    argv = ["run", "--profile", "smoke", "--variants", "scratch-none,imagenet-none", "--data", str(tiny_root)]
    code = main([*argv, "--weights-file", str(foreign), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(foreign) in err and "'features.0.weight'" in err
    assert not (tmp_path / "r").exists()


def test_a_lite0_weights_file_with_one_wrong_shape_names_the_key(tiny_root, tmp_path, no_training, capsys):
    from harness.lite0_weights import lite0_weights_path

    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "lite0.pth"
    torch.save(state, bad)
    argv = ["run", "--profile", "smoke", "--backbone", "efficientnet_lite0", "--variants", "imagenet-none"]
    code = main([*argv, "--data", str(tiny_root), "--weights-file", str(bad), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and repr(key) in err, err


# --- 5. an ONNX input too large to allocate; non-finite outputs on a later image -----------------------------------


def test_a_huge_declared_input_is_refused_while_resolving_the_spec(tmp_path):
    model = mean_model(tmp_path / "huge.onnx", input_shape=("N", 3, 100000, 100000))
    with pytest.raises(SpecError) as err:
        resolve_spec(model, read_spec(None, ['classes=["a", "b", "c"]']), CLASSES)
    msg = str(err.value)
    assert "'x'" in msg and "100000 x 100000" in msg and "pixels" in msg


def test_a_huge_spec_size_on_a_dynamic_input_names_the_spec(tmp_path):
    model = mean_model(tmp_path / "dyn.onnx", input_shape=("N", 3, "H", "W"))
    with pytest.raises(SpecError, match=r"--set: size = \[50000, 50000\].*pixels.*size = \[H, W\]"):
        resolve_spec(model, read_spec(None, ['classes=["a", "b", "c"]', "size=50000"]), CLASSES)


def test_check_of_a_huge_input_allocates_nothing(tmp_path, monkeypatch, capsys):
    data = _check_data(tmp_path / "data")
    for module in (harness.check, harness.preprocess):  # wherever check prepares photos (today: check.prepare)
        if hasattr(module, "prepare"):
            monkeypatch.setattr(module, "prepare", lambda *a, **k: pytest.fail("photos were prepared at that size"))
    model = mean_model(tmp_path / "huge.onnx", input_shape=("N", 3, 100000, 100000))
    code = _check(model, data, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "100000 x 100000" in err and "huge.onnx" in err, err


def _inf_on_black_model(path: Path) -> Path:
    """N x 3 x 32 x 32 -> w / mean(image): finite logits for every photo but an all-black one (1/0 = inf)."""
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "one"], ["m1"]),
        helper.make_node("Div", ["w", "m1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "inf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([[0.1, 0.2, 0.3]], np.float32), "w"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


def test_a_non_finite_output_on_a_later_image_is_an_error_naming_it(tmp_path, capsys):
    data = _check_data(tmp_path / "data")
    Image.new("RGB", (40, 32), (0, 0, 0)).save(data / "test_plain" / "c" / "c_black.png")
    out = tmp_path / "out"
    code = _check(_inf_on_black_model(tmp_path / "inf.onnx"), data, out)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "test_plain/c/c_black.png" in err and "NaN or infinite" in err
    assert "test_plain: soft " not in err  # no accuracy of the model printed from them
    assert not list(out.rglob("metrics.json"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_split_metrics_never_scores_a_non_finite_row(bad):
    """The last guard, for harness's own exports too: an argmax over NaN is column 0, i.e. the first class."""
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    ds = Dataset("t", CLASSES, tuple(Sample(f"t/{i}.png", img, "b", frozenset({"b"})) for i in range(3)), False)
    logits = np.array([[0.0, 3.0, 0.0], [bad, 0.0, 0.0], [0.0, 2.0, 1.0]])
    with pytest.raises(EvaluateError, match=r"NaN or infinite for 1 of 3 images: t/1\.png"):
        split_metrics(ds, logits, CLASSES)
    with pytest.raises(EvaluateError, match=r"t/1\.png"):
        split_metrics(ds, None, CLASSES, probabilities=logits / 3)


# --- 6. formats and hidden files ----------------------------------------------------------------------------------


def _gif(path: Path) -> Path:
    frames = [Image.new("RGB", (40, 30), c) for c in ((220, 20, 20), (20, 20, 220))]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def test_an_animated_gif_is_read_as_its_first_frame(tmp_path):
    for i in range(4):
        write_image(tmp_path / "test_x" / "a" / f"p{i}.png", (30, 200, 40), seed=i)
    _gif(tmp_path / "test_x" / "a" / "moving.gif")
    ds = load_test(tmp_path, "test_x", ("a", "b"))
    assert len(ds) == 5
    t, _, size = decode_image(tmp_path / "test_x" / "a" / "moving.gif")
    assert size == (40, 30) and abs(int(t[0].float().mean()) - 220) <= 2 and int(t[2].float().mean()) <= 22


def test_a_file_that_is_not_an_image_is_refused_naming_it(tmp_path):
    for i in range(2):
        write_image(tmp_path / "test_x" / "a" / f"p{i}.png", (30, 200, 40), seed=i)
    (tmp_path / "test_x" / "a" / "notes.txt").write_text("shot on a phone")
    with pytest.raises(DataError, match=r"notes\.txt.*not an image"):
        load_test(tmp_path, "test_x", ("a", "b"))


def _hidden(folder: Path) -> None:
    write_image(folder / ".x.png", (1, 2, 3), seed=5)  # a real image, but hidden
    (folder / "._p0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")


def test_hidden_files_are_ignored_and_counted(tmp_path):
    for i in range(4):
        write_image(tmp_path / "test_x" / "a" / f"p{i}.png", (30, 200, 40), seed=i)
        write_image(tmp_path / "train" / "a" / f"p{i}.png", (30, 200, 40), seed=i)
        write_image(tmp_path / "train" / "b" / f"p{i}.png", (200, 30, 40), seed=i)
    _hidden(tmp_path / "test_x" / "a")
    _hidden(tmp_path / "train" / "b")
    ds = load_test(tmp_path, "test_x", ("a", "b"))
    assert len(ds) == 4 and sorted(ds.ignored) == ["test_x/a/.DS_Store", "test_x/a/._p0.png", "test_x/a/.x.png"]
    train = load_train(tmp_path)
    assert len(train) == 8 and len(train.ignored) == 3


def test_run_logs_the_hidden_files_it_ignored(tiny_root, monkeypatch, capsys):
    _hidden(tiny_root / "train" / "red")

    def stop(*a, **k):
        raise DataError("stopped after the preflight")

    monkeypatch.setattr(harness.run, "check_not_stale", stop)
    argv = ["run", "--profile", "smoke", "--variants", "scratch-none", "--data", str(tiny_root)]
    assert main([*argv, "--out", str(tiny_root.parent / "r")]) == 2
    assert "note: train: ignored 3 hidden files (train/red/.DS_Store" in capsys.readouterr().err


def test_check_logs_the_hidden_files_it_ignored(tmp_path, capsys):
    data = _check_data(tmp_path / "data")
    _hidden(data / "test_plain" / "a")
    assert _check(mean_model(tmp_path / "m.onnx"), data, tmp_path / "out") in (0, 1)
    err = capsys.readouterr().err
    assert "test_plain: ignored 3 hidden files" in err and "._p0.png" in err, err


# --- 7. advice that would hurt -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_check_of_a_broken_foreign_model_gives_no_export_advice(tmp_path, capsys, kind):
    data = _check_data(tmp_path / "data")
    model = tmp_path / "vendor.onnx"
    if kind == "corrupt":
        model.write_bytes(b"\x08\x07" + b"garbage" * 50)
    code = _check(model, data, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and str(model) in err, err
    assert "harness export" not in err and "delete" not in err.lower()


def test_spec_classes_override_broken_harness_classes_metadata(tmp_path):
    model = harness_like_model(tmp_path / "h.onnx", CLASSES, exporter="torchscript")
    proto = onnx.load(str(model))
    for p in proto.metadata_props:
        if p.key == "harness.classes":
            p.value = "a, b, c"  # not a JSON list
    onnx.save(proto, str(model))
    with pytest.raises(SpecError, match="classes = "):
        resolve_spec(model, read_spec(None), CLASSES)  # the message says to give them in a spec...
    spec = resolve_spec(model, read_spec(None, ['classes=["a", "b", "c"]']), CLASSES)  # ...and that works
    assert spec.classes == CLASSES and spec.sources["classes"] == "--set" and spec.size == (32, 32)


def test_a_test_set_whose_constant_answer_scores_1_says_why_it_cannot_be_judged(tmp_path, capsys):
    data = _check_data(tmp_path / "data", test_classes=("b",), per_class=3)
    code = _check(mean_model(tmp_path / "m.onnx"), data, tmp_path / "out")
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    above = [v for v in report["verdicts"] if v["criterion"] in ("accuracy", "soft_above_constant")]
    assert len(above) == 2 and code == 1
    for v in above:
        assert v["status"] == "ERROR", v
        assert "best constant answer ('b') already scores 1.0" in v["detail"] and "cannot" in v["detail"], v
    assert "cannot be judged above the constant answer" in out


def test_an_accuracy_bar_above_1_says_why(tmp_path, capsys):
    """10 of 11 photos of one class: the constant answer scores 0.909, + the default margin 0.1 = a bar of 1.009."""
    data = _check_data(tmp_path / "data", test_classes=("b",), per_class=10)
    write_image(data / "test_plain" / "a" / "a_0.png", (0, 90, 30), size=(40, 32))
    assert _check(mean_model(tmp_path / "m.onnx"), data, tmp_path / "out") == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    [acc] = [v for v in report["verdicts"] if v["criterion"] == "accuracy"]
    assert acc["status"] == "ERROR" and acc["threshold"] > 1
    assert "already scores 0.9091 soft accuracy" in acc["detail"] and "is above 1" in acc["detail"]
    soft = next(v for v in report["verdicts"] if v["criterion"] == "soft_above_constant")
    assert soft["status"] in ("PASS", "FAIL")  # beating 0.909 is possible: judged as usual
