"""Robustness under corruptions (harness.robustness): known answers on tiny linear ONNX models built here, the
corruption registry's invariants, the evidence file and its verdicts (recomputed from the per-image records).

The models read the "redness" (mean R - G) of a fixed pixel mask of a 48 px input: the labelled region only, the
image's border only, or everything (invariant to brightness: hue and saturation are kept by brighter / darker).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from harness import artifacts, runtime
from harness.config import load_profile
from harness.data import Dataset, Region, Sample
from harness.preprocess import make_forward
from harness.robustness.corruptions import CORRUPTIONS, corrupt, photo_rng
from harness.robustness.measures import corruption_summary, paired_interval
from harness.robustness.settings import RobustnessSettings, parse_robustness
from harness.robustness.step import ROBUSTNESS_FILE, robustness_step
from harness.spec import resolve_spec
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import judge

S = 48
CLASSES = ("background", "red")
BOX = (16, 32)  # the labelled region: rows and columns 16..31


# --- tiny models and data (used by test_masking.py, test_faithfulness.py and test_robustness_report.py too) ---------


def linear_model(path: Path, weights: np.ndarray, bias, classes=CLASSES) -> Path:
    """logits = x.flatten() @ W + b: an ONNX model over N x 3 x S x S float input."""
    c = weights.shape[0]
    w = numpy_helper.from_array(weights.reshape(c, -1).T.astype(np.float32), "W")
    b = numpy_helper.from_array(np.asarray(bias, np.float32), "B")
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "W"], ["m"]),
        helper.make_node("Add", ["m", "B"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, S, S])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def region_mask() -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[BOX[0] : BOX[1], BOX[0] : BOX[1]] = True
    return m


def border_mask(width: int = 4) -> np.ndarray:
    m = np.ones((S, S), bool)
    m[width:-width, width:-width] = False
    return m


def redness(mask: np.ndarray, k: float = 40.0, classes=CLASSES) -> np.ndarray:
    """Weights giving the last class k * mean over `mask` of (R - G), the first 0."""
    w = np.zeros((len(classes), 3, S, S), np.float32)
    n = mask.sum()
    w[-1, 0][mask] = k / n
    w[-1, 1][mask] = -k / n
    return w


def photo(red: bool, rng: np.random.Generator, green: bool = False) -> torch.Tensor:
    img = np.full((S, S, 3), 120, np.int64)
    if red:
        img[..., 0], img[..., 1] = 200, 60
    if green:
        img[..., 0], img[..., 1] = 60, 200
    img = np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())


def dataset(n_red: int = 4, n_background: int = 2, seed: int = 0) -> Dataset:
    """Red photos with the central square labelled 'red', and grey background photos (no region)."""
    rng = np.random.default_rng(seed)
    a, b = float(BOX[0]), float(BOX[1])
    poly = ((a, a), (b, a), (b, b), (a, b))
    samples = []
    for i in range(n_red + n_background):
        red = i < n_red
        regions = (Region("red", poly, (a, a, b - a, b - a)),) if red else ()
        label = "red" if red else "background"
        samples.append(Sample(f"t/img{i}.png", photo(red, rng), label, frozenset({label}), regions))
    return Dataset("t", CLASSES, tuple(samples), True)


def session_of(path: Path, classes=CLASSES):
    session = runtime.create_session(path, [runtime.CPU])
    spec = resolve_spec(path, {"classes": list(classes)}, list(classes), session=session)
    return make_forward(session, spec, list(classes)), spec


def checked_folder(run: Path, name: str, weights: np.ndarray, bias, ds: Dataset, **settings_kw) -> Path:
    """A `harness check`-like model folder (config.json, model.onnx) with its robustness evidence written."""
    folder = run / name
    model = linear_model(folder / "model.onnx", weights, bias, ds.classes)
    artifacts.write_json(
        folder / "config.json",
        {"kind": "check", "variant": name, "backbone": "onnx", "seed": 0, "classes": list(ds.classes)},
    )
    forward, spec = session_of(model, ds.classes)
    s = RobustnessSettings(**({"draws": 4, "faithfulness": False} | settings_kw))
    robustness_step(folder, forward, spec, {"t": ds}, ds.classes, s, artifacts.sha256_file(model), "onnx", log=print)
    return folder


# --- the registry --------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(CORRUPTIONS)),
    image=hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=24).map(lambda s: (*s[:2], 3))
    ),
)
def test_severity_zero_is_the_identity_for_every_corruption(name, image):
    out = corrupt(name, image, 0)
    assert out.dtype == np.uint8 and np.array_equal(out, image) and out is not image


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(CORRUPTIONS)), severity=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_every_corruption_keeps_the_shape_and_is_deterministic_per_photo(name, severity, seed):
    image = np.random.default_rng(seed).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    a, b = corrupt(name, image, severity), corrupt(name, image, severity)
    assert a.shape == image.shape and a.dtype == np.uint8 and np.array_equal(a, b)


def test_noise_differs_between_photos_and_severities_but_not_between_reruns():
    rng = np.random.default_rng(1)
    x, y = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    nx, ny = corrupt("gaussian_noise", x, 2).astype(int) - x, corrupt("gaussian_noise", y, 2).astype(int) - y
    assert not np.array_equal(nx, ny)
    assert not np.array_equal(corrupt("gaussian_noise", x, 1), corrupt("gaussian_noise", x, 2))
    assert photo_rng(x, "gaussian_noise", 2).random() == photo_rng(x.copy(), "gaussian_noise", 2).random()
    assert photo_rng(x, "gaussian_noise", 2, seed=1).random() != photo_rng(x, "gaussian_noise", 2).random()


def test_severity_grows_the_change_on_a_textured_photo():
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in CORRUPTIONS:
        changes = [np.abs(corrupt(name, image, s).astype(int) - image).mean() for s in (1, 5)]
        assert changes[0] > 0, name
        assert changes[1] >= changes[0] - 1.0, (name, changes)


def test_brighter_and_darker_keep_hue_and_saturation_of_every_pixel():
    image = np.random.default_rng(3).integers(1, 256, (16, 16, 3), dtype=np.uint8)
    for name in ("brighter", "darker"):
        out = corrupt(name, image, 3).astype(int)
        order_in, order_out = np.argsort(image, axis=2), np.argsort(out, axis=2)
        ties = (np.diff(np.sort(out, axis=2), axis=2) == 0).any(axis=2)
        assert (order_in == order_out).all(axis=2)[~ties].all(), name


def test_bad_input_is_refused_with_the_value():
    with pytest.raises(ValueError, match="severity must be an integer in 0..5"):
        corrupt("jpeg", np.zeros((4, 4, 3), np.uint8), 6)
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        corrupt("jpeg", np.zeros((4, 4), np.uint8), 1)
    with pytest.raises(KeyError, match="unknown corruption 'fog'"):
        corrupt("fog", np.zeros((4, 4, 3), np.uint8), 1)


# --- statistics ---------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.integers(0, 15), st.integers(0, 15))
def test_the_paired_interval_holds_the_difference_and_is_symmetric(both, a_only, b_only, neither):
    if both + a_only + b_only + neither == 0:
        return
    lo, hi = paired_interval(both, a_only, b_only, neither)
    d = (a_only - b_only) / (both + a_only + b_only + neither)
    assert -1 <= lo <= d + 1e-12 and d - 1e-12 <= hi <= 1
    lo2, hi2 = paired_interval(both, b_only, a_only, neither)
    assert lo2 == pytest.approx(-hi) and hi2 == pytest.approx(-lo)


def test_the_paired_interval_of_a_perfect_separation_by_hand():
    # 3 pairs, a right and b wrong in each: Wilson's bounds are 3 / (3 + z^2) and z^2 / (3 + z^2), phi = 0, so the
    # lower end is 1 - sqrt(2) * z^2 / (3 + z^2) and the upper end 1
    z2 = 1.959963984540054**2
    lo, hi = paired_interval(0, 3, 0, 0)
    assert lo == pytest.approx(1 - np.sqrt(2) * z2 / (3 + z2)) and hi == 1.0
    assert paired_interval(5, 0, 0, 5) == pytest.approx(
        (paired_interval(5, 0, 0, 5)[0], -paired_interval(5, 0, 0, 5)[0])
    )


# --- settings and thresholds ---------------------------------------------------------------------------------------


def test_the_default_suite_is_one_mild_severity_and_full_is_the_grid():
    profile = load_profile("smoke")
    assert profile.robustness.severities == (1,) and profile.robustness.corruptions == tuple(CORRUPTIONS)
    full = load_profile("smoke", ["robustness.full=true"])
    assert full.robustness.severities == (1, 2, 3, 4, 5)
    assert full.to_dict()["robustness"]["full"] is True


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"severity": 6}, "robustness.severity"),
        ({"corruptions": ["fog"]}, "robustness.corruptions[0]"),
        ({"fill": "black"}, "robustness.fill"),
        ({"draws": 0}, "robustness.draws"),
        ({"spare": 1}, "unknown keys"),
    ],
)
def test_bad_settings_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_robustness(raw, "profile.toml")


def test_bad_thresholds_name_their_key():
    with pytest.raises(ConfigError, match="thresholds.robustness.gated"):
        parse_thresholds({"robustness": {"gated": ["fog"]}}, "t.toml")
    with pytest.raises(ConfigError, match="thresholds.robustness.max_severity"):
        parse_thresholds({"robustness": {"max_severity": 0}}, "t.toml")
    rule = parse_thresholds({"robustness": {"gated": ["*"], "max_drop": 0.2}}, "t.toml").robustness
    assert rule.gates("jpeg") and rule.max_drop == 0.2


# --- known answers through onnxruntime ------------------------------------------------------------------------------


def test_a_model_invariant_to_brightness_shows_zero_drop_for_brighter_and_darker(tmp_path):
    classes = ("green", "red")
    rng = np.random.default_rng(4)
    samples = tuple(
        Sample(f"t/{i}.png", photo(i % 2 == 0, rng, green=i % 2 == 1), c, frozenset({c}))
        for i, c in enumerate(["red", "green"] * 3)
    )
    ds = Dataset("t", classes, samples, False)
    w = redness(np.ones((S, S), bool), classes=classes)
    w[0] = -w[1]  # green: the opposite of red's logit; no bias: the sign of the mean (R - G) decides
    forward, spec = session_of(linear_model(tmp_path / "m.onnx", w, [0.0, 0.0], classes), classes)
    s = RobustnessSettings(full=True, corruptions=("brighter", "darker"), masking=False, faithfulness=False)
    ev = robustness_step(tmp_path, forward, spec, {"t": ds}, classes, s, "sha", "onnx")[ROBUSTNESS_FILE]
    for name in ("brighter", "darker"):
        for sev in range(1, 6):
            m = corruption_summary(ev["images"]["t"], name, sev)
            assert m["clean_soft"] == 1.0 and m["drop"] == 0.0 and m["mcnemar_p"] == 1.0, (name, sev)


def test_the_evidence_records_every_photo_s_answer_and_resumes(tmp_path, capsys):
    ds = dataset()
    folder = checked_folder(tmp_path, "m", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg", "darker"))
    ev = json.loads((folder / ROBUSTNESS_FILE).read_text())
    assert ev["inputs"]["settings"]["severities"] == [1] and ev["corruptions"] == ["jpeg", "darker"]
    recs = ev["images"]["t"]
    assert [r["image"] for r in recs] == [s.name for s in ds.samples]
    assert set(recs[0]["corrupted"]) == {"jpeg", "darker"} and set(recs[0]["corrupted"]["jpeg"]) == {"1"}
    assert ev["masking"]["t"]["images"][0]["status"] == "masked" and len(ev["masking"]["t"]["images"][0]["random"]) == 4
    stamp = (folder / ROBUSTNESS_FILE).stat().st_mtime_ns
    forward, spec = session_of(folder / "model.onnx")
    s = RobustnessSettings(draws=4, faithfulness=False, corruptions=("jpeg", "darker"))
    sha = artifacts.sha256_file(folder / "model.onnx")
    robustness_step(folder, forward, spec, {"t": ds}, CLASSES, s, sha, "onnx")
    assert (folder / ROBUSTNESS_FILE).stat().st_mtime_ns == stamp and "is current" in capsys.readouterr().err
    robustness_step(
        folder, forward, spec, {"t": ds}, CLASSES, RobustnessSettings(draws=4, faithfulness=False), sha, "onnx"
    )
    assert len(json.loads((folder / ROBUSTNESS_FILE).read_text())["corruptions"]) == len(CORRUPTIONS)  # redone
    robustness_step(folder, forward, spec, {"t": ds}, CLASSES, RobustnessSettings(enabled=False), sha, "onnx")
    assert not (folder / ROBUSTNESS_FILE).exists()


def _verdicts(run: Path, rule: dict, criterion: str) -> dict:
    t = parse_thresholds({"gated": ["*"], "robustness": rule}, "t")
    return {v.id: v for v in judge(run, t, ["t"]) if v.criterion == criterion}


def test_robustness_verdicts_are_judged_per_corruption_from_the_records(tmp_path):
    ds = dataset()
    checked_folder(tmp_path, "m", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg", "colour_cast"))
    by = _verdicts(tmp_path, {"gated": ["jpeg"], "max_drop": 0.1}, "robustness")
    assert set(by) == {"onnx-m-t-jpeg", "onnx-m-t-colour_cast"}
    jpeg = by["onnx-m-t-jpeg"]
    assert jpeg.gated and not by["onnx-m-t-colour_cast"].gated and jpeg.evidence == ("m/robustness.json",)
    assert jpeg.status == "PASS" and jpeg.value == 0.0 and "McNemar" in jpeg.detail
    # a record edited to a wrong answer is what the verdict reads (never a stored summary)
    path = tmp_path / "m" / ROBUSTNESS_FILE
    ev = json.loads(path.read_text())
    for r in ev["images"]["t"][:2]:
        r["corrupted"]["jpeg"]["1"]["predicted"] = "background"
    path.write_text(json.dumps(ev))
    jpeg = _verdicts(tmp_path, {"gated": ["jpeg"], "max_drop": 0.1}, "robustness")["onnx-m-t-jpeg"]
    assert jpeg.status == "FAIL" and jpeg.value == pytest.approx(2 / 6)


def test_robustness_evidence_of_another_model_or_missing_is_an_error(tmp_path):
    ds = dataset()
    folder = checked_folder(tmp_path, "m", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",))
    linear_model(folder / "model.onnx", redness(border_mask()), [0.0, -4.0])  # another model on disk
    v = _verdicts(tmp_path, {"gated": ["jpeg"]}, "robustness")["onnx-m-t-jpeg"]
    assert v.status == "ERROR" and "another model" in v.detail
    (folder / ROBUSTNESS_FILE).unlink()
    v = _verdicts(tmp_path, {"gated": ["jpeg"]}, "robustness")["onnx-m-t-jpeg"]
    assert v.status == "ERROR" and "robustness.json missing" in v.detail
    v = _verdicts(tmp_path, {"gated": ["jpeg"], "max_severity": 2}, "robustness")["onnx-m-t-jpeg"]
    assert v.status == "ERROR"


def test_a_severity_above_the_measured_ones_is_an_error_naming_the_setting(tmp_path):
    checked_folder(tmp_path, "m", redness(region_mask()), [0.0, -4.0], dataset(), corruptions=("jpeg",))
    v = _verdicts(tmp_path, {"gated": ["jpeg"], "max_severity": 3}, "robustness")["onnx-m-t-jpeg"]
    assert v.status == "ERROR" and "robustness.full=true" in v.detail
