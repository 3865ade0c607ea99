"""The model input/output contract (harness.spec): reading, resolving against ONNX graphs, preprocessing, geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2 import functional as TF

from harness import runtime
from harness.data import resize_batch
from harness.preprocess import crop_window, make_forward, map_to_image, prepare, to_model
from harness.spec import ModelSpec, SpecError, read_spec, resolve_spec
from harness.validate import ConfigError
from tests.onnx_wrappers import harness_like_model, mean_model, wrap_nhwc_uint8_bgr_probs

CLASSES = ["apple", "banana", "cherry", "date"]
ORDER = [2, 0, 3, 1]  # the wrapper's column j is class ORDER[j]
WRAPPED_CLASSES = [CLASSES[i] for i in ORDER]
WRAPPED_SPEC = [
    'layout="NHWC"',
    'dtype="uint8"',
    'channels="BGR"',
    'output_kind="probabilities"',
    f"classes={json.dumps(WRAPPED_CLASSES)}",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("spec_models")
    src = harness_like_model(d / "harness.onnx", CLASSES, size=32, seed=3)
    return {
        "harness": src,
        "wrapped": wrap_nhwc_uint8_bgr_probs(src, d / "wrapped.onnx", ORDER),
        "wrapped_meta": wrap_nhwc_uint8_bgr_probs(src, d / "wrapped_meta.onnx", ORDER, metadata=True),
    }


def _session(path: Path):
    return runtime.create_session(path, [runtime.CPU])


def _photos(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Photos of odd sizes, each a different colour with a gradient and noise (so predictions differ)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(23, 61)) | 1, int(rng.integers(23, 61)) | 1
        base = rng.integers(0, 256, 3)[:, None, None]
        ramp = np.linspace(0, 1, w)[None, None, :] * rng.integers(-120, 120, 3)[:, None, None]
        noise = rng.integers(-25, 25, (3, h, w))
        out.append(torch.from_numpy(np.clip(base + ramp + noise, 0, 255).astype(np.uint8)))
    return out


def _spec(**kw) -> ModelSpec:
    base = dict(
        input="x",
        layout="NCHW",
        size=(32, 32),
        dtype="float32",
        value_range="0..1",
        mean=None,
        std=None,
        channels="RGB",
        resize="stretch",
        output="y",
        output_kind="logits",
        classes=tuple(CLASSES),
    )
    return ModelSpec(**(base | kw))


def _raises(fn, *words: str) -> str:
    with pytest.raises(SpecError) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# --- defaults from a harness export ---------------------------------------------------------------------------------


def test_harness_export_needs_no_spec_and_records_sources(models):
    spec = resolve_spec(models["harness"], read_spec(None), CLASSES)
    assert (spec.input, spec.layout, spec.size, spec.dtype, spec.value_range) == (
        "input",
        "NCHW",
        (32, 32),
        "float32",
        "0..1",
    )
    assert (spec.mean, spec.std, spec.channels, spec.resize, spec.output, spec.output_kind) == (
        None,
        None,
        "RGB",
        "stretch",
        "logits",
        "logits",
    )
    assert spec.classes == tuple(CLASSES)
    assert spec.sources["classes"] == "ONNX metadata" and spec.sources["input"] == "graph"
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["size"] == [32, 32] and d["classes"] == CLASSES and set(d["sources"]) == set(d) - {"sources"}
    assert resolve_spec(models["harness"], {}, CLASSES, session=_session(models["harness"])) == spec


def test_harness_spec_feeds_exactly_the_evaluated_array(models):
    spec = resolve_spec(models["harness"], {}, CLASSES)
    photos = _photos(3)
    canonical = prepare(spec, photos)
    x = to_model(spec, canonical)
    ref = resize_batch(photos, 32).float().div_(255).numpy()
    assert x.dtype == np.float32 and x.flags.c_contiguous and np.array_equal(x, ref)
    logits = runtime.run_batches(_session(models["harness"]), ref)
    probs = make_forward(_session(models["harness"]), spec, CLASSES)(canonical)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-6)


def test_dataset_order_differs_from_model_order(models):
    spec = resolve_spec(models["harness"], {}, CLASSES)
    canonical = prepare(spec, _photos(4))
    fwd = make_forward(_session(models["harness"]), spec, CLASSES)
    rev = make_forward(_session(models["harness"]), spec, CLASSES[::-1])
    np.testing.assert_array_equal(rev(canonical), fwd(canonical)[:, ::-1])


# --- the foreign wrapper: right spec round-trips, wrong specs stop -------------------------------------------------


def test_wrapped_model_with_its_spec_gives_the_same_probabilities(models):
    photos = _photos(11, seed=5)
    ref_spec = resolve_spec(models["harness"], {}, CLASSES)
    ref = make_forward(_session(models["harness"]), ref_spec, CLASSES)(prepare(ref_spec, photos))
    session = _session(models["wrapped"])
    spec = resolve_spec(models["wrapped"], read_spec(None, WRAPPED_SPEC), CLASSES, session=session)
    assert (spec.input, spec.output, spec.size, spec.value_range) == ("image", "probs", (32, 32), "0..255")
    assert spec.sources["layout"] == "--set" and spec.sources["size"] == "graph shape"
    got = make_forward(session, spec, CLASSES, batch=4)(prepare(spec, photos))  # 4 + 4 + 3
    assert got.shape == (11, 4)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert len(set(ref.argmax(1))) >= 2, "photos should not all get one class (the comparison would be weak)"


def test_wrapper_input_is_the_uint8_bgr_nhwc_image():
    spec = _spec(layout="NHWC", dtype="uint8", value_range="0..255", channels="BGR")
    photos = _photos(2, seed=1)
    x = to_model(spec, prepare(spec, photos))
    expect = resize_batch(photos, 32).numpy()[:, ::-1].transpose(0, 2, 3, 1)
    assert x.dtype == np.uint8 and np.array_equal(x, expect)


def test_nchw_claimed_on_the_nhwc_model_names_layout(models):
    raw = read_spec(None, [s for s in WRAPPED_SPEC if "layout" not in s] + ['layout="NCHW"'])
    _raises(
        lambda: resolve_spec(models["wrapped"], raw, CLASSES), "--set", "layout", "'NCHW'", "NHWC", "[N, 32, 32, 3]"
    )


def test_layout_is_inferred_from_the_graph(models):
    raw = read_spec(None, [s for s in WRAPPED_SPEC if "layout" not in s])
    spec = resolve_spec(models["wrapped"], raw, CLASSES)
    assert spec.layout == "NHWC" and spec.sources["layout"] == "graph shape"


def test_classes_omitted_on_a_foreign_model(models):
    raw = read_spec(None, [s for s in WRAPPED_SPEC if "classes" not in s])
    _raises(lambda: resolve_spec(models["wrapped"], raw, CLASSES), "classes", "output columns", str(models["wrapped"]))


@pytest.mark.parametrize(
    "classes, words",
    [
        (
            ["cherry", "apple", "dates", "banana"],
            ["missing ['date']", "not in the dataset ['dates']", "'dates' -> 'date'"],
        ),
        (["cherry", "apple", "date"], ["missing ['banana']", "3 names for the dataset's 4 classes"]),
        (["cherry", "apple", "date", "banana", "kiwi"], ["not in the dataset ['kiwi']", "5 names"]),
    ],
)
def test_classes_not_the_datasets_are_named(models, classes, words):
    raw = read_spec(None, [s for s in WRAPPED_SPEC if "classes" not in s] + [f"classes={json.dumps(classes)}"])
    _raises(lambda: resolve_spec(models["wrapped"], raw, CLASSES), "--set", "classes", *words)


def test_harness_metadata_contradicting_the_graph_names_the_metadata(models):
    _raises(lambda: resolve_spec(models["wrapped_meta"], {}, CLASSES), "ONNX metadata of", "layout", "NHWC")


def test_wrong_dtype_and_uint8_contradictions(models, tmp_path):
    _raises(
        lambda: resolve_spec(models["harness"], read_spec(None, ['dtype="uint8"']), CLASSES),
        "dtype",
        "'uint8'",
        "float32",
    )
    raw = read_spec(None, WRAPPED_SPEC + ['value_range="0..1"'])
    _raises(lambda: resolve_spec(models["wrapped"], raw, CLASSES), "value_range", "uint8")
    raw = read_spec(None, WRAPPED_SPEC + ["mean=[1, 2, 3]"])
    _raises(lambda: resolve_spec(models["wrapped"], raw, CLASSES), "mean", "graph must normalise")
    path = mean_model(tmp_path / "i64.onnx", elem_type=onnx.TensorProto.INT64)
    _raises(lambda: resolve_spec(path, {"classes": CLASSES[:3]}, CLASSES[:3]), "int64")


def test_probabilities_claimed_on_a_logits_model_stops_on_the_first_call(models):
    raw = read_spec(None, ['output_kind="probabilities"'])
    spec = resolve_spec(models["harness"], raw, CLASSES)
    fwd = make_forward(_session(models["harness"]), spec, CLASSES)
    _raises(
        lambda: fwd(prepare(spec, _photos(2))),
        "--set",
        "does not look like probabilities",
        "row sums",
        "output_kind = 'logits'",
    )


def test_defaulted_logits_on_a_softmax_model_stops(tmp_path):
    path = mean_model(tmp_path / "soft.onnx", softmax=True)
    spec = resolve_spec(path, {"classes": CLASSES[:3]}, CLASSES[:3])
    assert spec.output_kind == "logits" and spec.sources["output_kind"] == "default"
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    _raises(
        lambda: make_forward(_session(path), spec, CLASSES[:3])(x),
        "looks like probabilities",
        "output_kind = 'probabilities'",
    )
    spec = resolve_spec(path, {"classes": CLASSES[:3], "output_kind": "probabilities"}, CLASSES[:3])
    p = make_forward(_session(path), spec, CLASSES[:3])(x)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)


# --- graph shapes ---------------------------------------------------------------------------------------------------


def test_output_width_not_the_number_of_classes(tmp_path):
    path = mean_model(tmp_path / "m5.onnx", num_classes=5)
    _raises(lambda: resolve_spec(path, {"classes": CLASSES}, CLASSES), "classes lists 4 names", "'y'", "[N, 5]")
    lie = mean_model(tmp_path / "dyn.onnx", num_classes=5, output_shape=["N", "C"])  # width found at run time
    spec = resolve_spec(lie, {"classes": CLASSES}, CLASSES)
    x = np.zeros((1, 3, 32, 32), np.float32)
    _raises(lambda: make_forward(_session(lie), spec, CLASSES)(x), "5 columns", "4 names")


def test_several_inputs(tmp_path):
    path = mean_model(tmp_path / "two.onnx", extra_inputs=["scale"])
    raw = {"classes": CLASSES[:3]}
    _raises(lambda: resolve_spec(path, raw, CLASSES[:3]), "several inputs", "['x', 'scale']", "input =")
    _raises(lambda: resolve_spec(path, raw | {"input": "x"}, CLASSES[:3]), "also requires inputs ['scale']")
    _raises(lambda: resolve_spec(path, raw | {"input": "X"}, CLASSES[:3]), "input = 'X'", "['x', 'scale']")


def test_output_named_that_does_not_exist(models):
    _raises(
        lambda: resolve_spec(models["harness"], read_spec(None, ["output=logit"]), CLASSES),
        "output = 'logit'",
        "['logits']",
        "did you mean 'logits'",
    )


def test_input_rank_and_static_shape(tmp_path):
    rank3 = mean_model(tmp_path / "r3.onnx", input_shape=["N", 3, 32])
    _raises(lambda: resolve_spec(rank3, {"classes": CLASSES[:3]}, CLASSES[:3]), "rank 3", "[N, 3, 32]")
    gray = mean_model(tmp_path / "gray.onnx", input_shape=["N", 1, 32, 32])
    _raises(lambda: resolve_spec(gray, {"classes": CLASSES[:3], "layout": "NCHW"}, CLASSES[:3]), "channel dim", "1")
    _raises(lambda: resolve_spec(gray, {"classes": CLASSES[:3]}, CLASSES[:3]), "layout")
    rect = mean_model(tmp_path / "rect.onnx", input_shape=["N", 3, 24, 40])
    spec = resolve_spec(rect, {"classes": CLASSES[:3]}, CLASSES[:3])
    assert spec.size == (24, 40) and spec.layout == "NCHW"
    _raises(
        lambda: resolve_spec(
            rect, read_spec(None, ["size=[40, 24]", 'classes=["apple", "banana", "cherry"]']), CLASSES[:3]
        ),
        "--set",
        "size = [40, 24]",
        "set size = [24, 40]",
    )


def test_dynamic_size_needs_size_and_layout(tmp_path):
    dyn = mean_model(tmp_path / "dyn.onnx", input_shape=["N", 3, "H", "W"])
    _raises(lambda: resolve_spec(dyn, {"classes": CLASSES[:3]}, CLASSES[:3]), "size = [H, W]")
    assert resolve_spec(dyn, {"classes": CLASSES[:3], "size": 48}, CLASSES[:3]).size == (48, 48)
    anyc = mean_model(tmp_path / "anyc.onnx", input_shape=["N", "C", "H", "W"])
    _raises(lambda: resolve_spec(anyc, {"classes": CLASSES[:3], "size": 48}, CLASSES[:3]), 'layout = "NCHW"')
    spec = resolve_spec(anyc, {"classes": CLASSES[:3], "size": [20, 30], "layout": "nhwc"}, CLASSES[:3])
    assert (spec.layout, spec.size) == ("NHWC", (20, 30))


def test_static_batch_of_one_runs_image_by_image(tmp_path):
    path = mean_model(tmp_path / "b1.onnx", input_shape=[1, 3, 32, 32])
    spec = resolve_spec(path, {"classes": CLASSES[:3]}, CLASSES[:3])
    x = np.random.default_rng(2).random((5, 3, 32, 32), dtype=np.float32)
    fwd = make_forward(_session(path), spec, CLASSES[:3], batch=32)
    one_by_one = np.concatenate([fwd(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(fwd(x), one_by_one, atol=1e-7)
    assert fwd(x[:0]).shape == (0, 3)


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(runtime.ModelLoadError, match="bad.onnx"):
        resolve_spec(bad, {"classes": CLASSES}, CLASSES)


# --- reading the spec -----------------------------------------------------------------------------------------------


def test_spec_file_top_level_or_spec_table_and_overrides_win(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('layout = "NHWC"\nmean = [123.675, 116.28, 103.53]\nclasses = ["a", "b"]\n', encoding="utf-8")
    raw = read_spec(f, ['layout="NCHW"', "size=64"])
    assert raw == {"layout": "NCHW", "mean": (123.675, 116.28, 103.53), "classes": ("a", "b"), "size": (64, 64)}
    assert raw.sources == {"layout": "--set", "mean": f"spec file {f}", "classes": f"spec file {f}", "size": "--set"}
    g = tmp_path / "t.toml"
    g.write_text('[spec]\nchannels = "BGR"\nstd = "none"\n', encoding="utf-8")
    assert read_spec(g) == {"channels": "BGR", "std": None}
    assert read_spec(None) == {} and read_spec(None).sources == {}


@pytest.mark.parametrize(
    "text, words",
    [
        ('layuot = "NHWC"', ["unknown key 'layuot'", "did you mean 'layout'"]),
        ('layout = "NWHC"', ["layout = 'NWHC'", "['NCHW', 'NHWC']"]),
        ("mean = [1, 2]", ["mean = [1, 2]", "3 numbers"]),
        ('mean = [1, "x", 3]', ["mean[1]", "a number"]),
        ("std = [1, 0, 1]", ["std[1]", "> 0"]),
        ("size = [0, 32]", ["size = [0, 32]"]),
        ("size = 32.5", ["size = 32.5"]),
        ('dtype = "int8"', ["dtype = 'int8'", "uint8"]),
        ('value_range = "0-255"', ["value_range", "0..255"]),
        ('resize = "crop"', ["resize", "shorter-side-crop"]),
        ('output_kind = "softmax"', ["output_kind", "probabilities"]),
        ("classes = []", ["classes"]),
        ('classes = ["a", "a"]', ["classes", "repeated: 'a'"]),
        ('input = ""', ["input"]),
        ('[spec]\nlayout = "NHWC"\n[other]\nx = 1', ["outside the [spec] table", "other"]),
        ("[augment]\nx = 1", ["augment is a table"]),
        ("layout = ", ["invalid TOML"]),
    ],
)
def test_bad_spec_files_are_spec_errors(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text, encoding="utf-8")
    msg = _raises(lambda: read_spec(f), f"spec file {f}", *words)
    assert "Traceback" not in msg


@pytest.mark.parametrize(
    "item, words",
    [
        ("layuot=NHWC", ["--set", "unknown key 'layuot'", "'layout'"]),
        ("layout=NWHC", ["--set", "layout = 'NWHC'"]),
        ("mean=[1,2]", ["--set", "mean"]),
        ("classes", ["--set", "key=value"]),
        ("spec.nope=1", ["--set", "unknown key 'nope'"]),
    ],
)
def test_bad_overrides_are_spec_errors(item, words):
    _raises(lambda: read_spec(None, [item]), *words)


def test_missing_spec_file_and_spec_error_is_a_config_error(tmp_path):
    msg = _raises(lambda: read_spec(tmp_path / "nope.toml"), "nope.toml", "does not exist")
    assert issubclass(SpecError, ConfigError) and msg
    _raises(lambda: resolve_spec(tmp_path / "x.onnx", {"layout": "NWHC"}, CLASSES), "layout = 'NWHC'")


def test_bare_words_and_case(tmp_path):
    assert read_spec(None, ["layout=nhwc", "channels=bgr", "resize=shorter-side-crop", "input=pixel_values"]) == {
        "layout": "NHWC",
        "channels": "BGR",
        "resize": "shorter-side-crop",
        "input": "pixel_values",
    }


# --- preprocessing and geometry -------------------------------------------------------------------------------------


def test_prepare_stretch_is_bit_identical_to_harness_evaluation():
    photos = _photos(6, seed=9)
    x = prepare(_spec(), photos)
    assert x.dtype == np.float32 and x.shape == (6, 3, 32, 32)
    assert np.array_equal(x, resize_batch(photos, 32).float() / 255)
    rect = prepare(_spec(size=(24, 40)), photos)
    assert np.array_equal(rect, torch.stack([TF.resize(p, [24, 40], antialias=True) for p in photos]).float() / 255)
    assert prepare(_spec(), []).shape == (0, 3, 32, 32)


def _ramp(h: int, w: int, along: str) -> torch.Tensor:
    """uint8 image whose value is 4 x (column index) (or row index), the same in every channel."""
    idx = np.arange(w if along == "x" else h) * 4
    a = np.broadcast_to(idx[None, :] if along == "x" else idx[:, None], (h, w))
    return torch.from_numpy(np.repeat(a[None], 3, 0).astype(np.uint8).copy())


def test_shorter_side_crop_known_answer_wide_and_tall():
    spec = _spec(size=(10, 10), resize="shorter-side-crop")
    assert crop_window(20, 40, (10, 10)) == (10, 20, 0, 5)
    # 20 x 40 photo -> 10 x 20 (factor 2; antialiased bilinear keeps a linear ramp: resized column j = 4 (2j + 0.5))
    # -> columns 5..14 survive, i.e. photo columns 10..29: values 4 (2 (k + 5) + 0.5) = 8k + 42
    x = prepare(spec, [_ramp(20, 40, "x")])[0]
    expect = (8 * np.arange(10) + 42) / 255
    np.testing.assert_array_equal(x, np.broadcast_to(expect.astype(np.float32), (3, 10, 10)))
    tall = prepare(spec, [_ramp(40, 20, "y")])[0]
    np.testing.assert_array_equal(tall, np.broadcast_to(expect.astype(np.float32)[:, None], (3, 10, 10)))


def test_shorter_side_crop_ignores_pixels_outside_the_window():
    spec = _spec(size=(10, 10), resize="shorter-side-crop")
    a = _ramp(20, 40, "x")
    b = a.clone()
    b[:, :, :8] = 255  # photo columns 0..7 and 32..39 are outside the window and its filter footprint
    b[:, :, 32:] = 0
    assert np.array_equal(prepare(spec, [a]), prepare(spec, [b]))
    c = a.clone()
    c[:, :, 15] = 255  # inside: changes the input
    assert not np.array_equal(prepare(spec, [a]), prepare(spec, [c]))


def test_map_to_image_stretch_keeps_quadrants():
    spec = _spec()
    m = np.zeros((32, 32))
    m[16:, :16] = 1.0  # bottom-left of the model input
    out = map_to_image(spec, m, (40, 60))
    assert out.shape == (40, 60) and out.dtype == np.float64
    assert out[20:, :30].sum() / out.sum() > 0.97
    assert out[-1, 0] == pytest.approx(1.0) and out[0, -1] == pytest.approx(0.0)
    np.testing.assert_allclose(map_to_image(spec, np.ones((32, 32)), (7, 90)), 1.0)


def test_map_to_image_crop_puts_the_map_in_the_window_and_zeros_outside():
    spec = _spec(size=(10, 10), resize="shorter-side-crop")
    out = map_to_image(spec, np.ones((10, 10)), (20, 40))  # window: photo columns 10..29, all rows
    assert np.all(out[:, :10] == 0) and np.all(out[:, 30:] == 0)
    np.testing.assert_allclose(out[:, 10:30], 1.0)
    m = np.zeros((10, 10))
    m[:5, 5:] = 1.0  # top-right of the window
    q = map_to_image(spec, m, (20, 40))
    assert q[:10, 20:30].sum() / q.sum() > 0.9 and q[:, :10].sum() == 0 and q[:, 30:].sum() == 0
    tall = map_to_image(spec, np.ones((10, 10)), (40, 20))
    assert np.all(tall[:10] == 0) and np.all(tall[30:] == 0) and np.allclose(tall[10:30], 1.0)
    with pytest.raises(ValueError, match="model input size"):
        map_to_image(spec, np.ones((5, 5)), (20, 40))


def test_to_model_normalises_in_the_models_channel_order():
    spec = _spec(value_range="0..255", channels="BGR", mean=(100.0, 110.0, 120.0), std=(2.0, 4.0, 5.0), layout="NHWC")
    canonical = np.zeros((1, 3, 2, 2), np.float32)
    canonical[0, 0], canonical[0, 1], canonical[0, 2] = 1.0, 0.5, 0.0  # R, G, B
    x = to_model(spec, canonical)
    assert x.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(x[0, 0, 0], [(0 - 100) / 2, (127.5 - 110) / 4, (255 - 120) / 5], rtol=1e-6)
    assert to_model(_spec(dtype="float16"), canonical).dtype == np.float16
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        to_model(_spec(), np.zeros((1, 32, 32, 3), np.float32))


def _inverse(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    y = x.astype(np.float64)
    if spec.layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    if spec.mean is not None:
        y = y * np.array(spec.std).reshape(1, 3, 1, 1) + np.array(spec.mean).reshape(1, 3, 1, 1)
    if spec.value_range == "0..255":
        y = y / 255
    if spec.channels == "BGR":
        y = y[:, ::-1]
    return y


triples = st.tuples(*[st.floats(-2, 2)] * 3)
pos_triples = st.tuples(*[st.floats(0.05, 3)] * 3)


@settings(max_examples=60, deadline=None)
@given(
    layout=st.sampled_from(["NCHW", "NHWC"]),
    channels=st.sampled_from(["RGB", "BGR"]),
    value_range=st.sampled_from(["0..1", "0..255"]),
    norm=st.one_of(st.none(), st.tuples(triples, pos_triples)),
    n=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_to_model_inverts_to_the_canonical_array(layout, channels, value_range, norm, n, h, w, seed):
    scale = 255 if value_range == "0..255" else 1
    mean, std = (None, None) if norm is None else (tuple(m * scale for m in norm[0]), tuple(s * scale for s in norm[1]))
    spec = _spec(layout=layout, channels=channels, value_range=value_range, mean=mean, std=std, size=(h, w))
    canonical = np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)
    x = to_model(spec, canonical)
    assert x.dtype == np.float32 and x.shape == ((n, 3, h, w) if layout == "NCHW" else (n, h, w, 3))
    np.testing.assert_allclose(_inverse(spec, x), canonical, atol=2e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), channels=st.sampled_from(["RGB", "BGR"]))
def test_uint8_to_model_recovers_the_resized_pixels(seed, channels):
    g = torch.Generator().manual_seed(seed)
    photo = torch.randint(0, 256, (3, 13, 17), dtype=torch.uint8, generator=g)
    spec = _spec(dtype="uint8", value_range="0..255", channels=channels, size=(9, 11))
    x = to_model(spec, prepare(spec, [photo]))
    ref = TF.resize(photo, [9, 11], antialias=True).numpy()
    assert np.array_equal(x[0], ref[::-1] if channels == "BGR" else ref)
