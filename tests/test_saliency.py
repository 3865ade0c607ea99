"""Black-box saliency (harness.saliency): occlusion and RISE known answers (hand-computed, Captum, ONNX graphs with a
known region), invariants (hypothesis), cost accounting, the parameter-randomisation sanity check and the chance
levels of the localization scores."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from harness.saliency.localization import box_mask, energy_chance, energy_share, pointing_chance, pointing_game
from harness.saliency.occlusion import occlusion_attribution, window_positions
from harness.saliency.perturbation import SaliencyResult
from harness.saliency.registry import BLACK_BOX, get_method, resolve_params, saliency
from harness.saliency.rise import MaskSet, rise_masks
from harness.saliency.sanity import map_rank_correlation, randomize_onnx_head, randomize_torch_head
from harness.validate import ConfigError

REGION = (slice(4, 12), slice(20, 28))  # rows 4..11, cols 20..27 of a 32 x 32 image


# --- forward functions and tiny ONNX graphs ---------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Counting:
    """A forward function that records how many images it was asked to evaluate."""

    def __init__(self, fn):
        self.fn, self.images, self.calls = fn, 0, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1] == 3
        self.images += len(x)
        self.calls += 1
        return self.fn(x)


def linear_forward(h: int, w: int, classes: int = 3, seed: int = 0):
    """Softmax of a fixed random linear function of the pixels: cheap, input-dependent, deterministic."""
    weights = np.random.default_rng(seed).normal(0, 1.0, (classes, 3 * h * w)) / np.sqrt(h * w)
    return lambda x: softmax(x.reshape(len(x), -1).astype(np.float64) @ weights.T)


def constant_forward(x: np.ndarray) -> np.ndarray:
    return np.tile(np.array([[0.2, 0.5, 0.3]]), (len(x), 1))


def _model(nodes, inits, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def region_model(gain: float = 10.0) -> onnx.ModelProto:
    """Class-1 logit = gain * (mean of REGION over all channels - 0.45); the logits of classes 0 and 2 are 0 and 0.5,
    so p1 moves through its whole range as the region's mean goes from 0 to 0.9."""
    f32 = np.float32
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["region"]),
        helper.make_node("ReduceMean", ["region", "all"], ["mean"], keepdims=1),
        helper.make_node("Flatten", ["mean"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "gain"], ["l1"]),
        helper.make_node("Mul", ["l1", "onehot"], ["spread"]),
        helper.make_node("Add", ["spread", "offsets"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = {
        "starts": np.array([4, 20], np.int64),
        "ends": np.array([12, 28], np.int64),
        "axes": np.array([2, 3], np.int64),
        "all": np.array([1, 2, 3], np.int64),
        "gain": np.array([gain], f32),
        "onehot": np.array([0, 1, 0], f32),
        "offsets": np.array([0.0, -0.45 * gain, 0.5], f32),
    }
    return _model(nodes, inits, ["N", 3])


def ignoring_model() -> onnx.ModelProto:
    """A classifier whose output ignores its input: Flatten -> Mul by 0 -> Gemm head -> Softmax."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "zero"], ["zeroed"]),
        helper.make_node("Gemm", ["zeroed", "head.weight", "head.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = {
        "zero": np.array([0.0], np.float32),
        "head.weight": rng.normal(0, 0.1, (3, 3 * 32 * 32)).astype(np.float32),
        "head.bias": np.array([0.3, -0.2, 0.1], np.float32),
    }
    return _model(nodes, inits, ["N", 3])


def mlp_model() -> onnx.ModelProto:
    """Flatten -> Gemm (hidden, 16) -> Relu -> MatMul + Add (head, 3 classes); logits out."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "hidden.weight", "hidden.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "head.weight_t"], ["m"]),
        helper.make_node("Add", ["m", "head.bias"], ["probs"]),
    ]
    inits = {
        "hidden.weight": rng.normal(0, 0.02, (16, 3 * 32 * 32)).astype(np.float32),
        "hidden.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "head.weight_t": rng.normal(0, 0.3, (16, 3)).astype(np.float32),
        "head.bias": rng.normal(0, 0.1, 3).astype(np.float32),
    }
    return _model(nodes, inits, ["N", 3])


def ort_forward(model: onnx.ModelProto, logits: bool = False):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def forward(x: np.ndarray) -> np.ndarray:
        out = sess.run(None, {"input": x})[0]
        return softmax(out.astype(np.float64)) if logits else out

    return forward


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def image(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, h, w)).astype(np.float32)


# --- occlusion: known answers -----------------------------------------------------------------------------------------


def test_window_positions_known_answers():
    assert window_positions(224, 32, 16) == list(range(0, 193, 16))  # 13 positions, the last at 192 = 224 - 32
    assert window_positions(30, 8, 4) == [0, 4, 8, 12, 16, 20, 22]  # 22 = 30 - 8 added so the border is covered
    assert window_positions(8, 8, 3) == [0]
    assert window_positions(5, 1, 1) == [0, 1, 2, 3, 4]
    for bad in [(8, 9, 1), (8, 4, 5), (8, 0, 1), (8, 2, 0), (8, True, 1)]:
        with pytest.raises(ValueError):
            window_positions(*bad)


def test_occlusion_hand_computed():
    """p1 = 0.5 * pixel (0, 0) of channel 0; a white 3x3 image, black 2x2 windows with stride 1 (4 windows).
    Only the window at (0, 0) covers pixel (0, 0) and it drops p1 by 0.5; every pixel's attribution is 0.5 divided
    by the number of windows covering it if the (0, 0) window is among them, else 0."""

    def forward(x):
        p1 = 0.5 * x[:, 0, 0, 0].astype(np.float64)
        return np.stack([1 - p1, p1], 1)

    p0, attr, passes = occlusion_attribution(
        forward, np.ones((3, 3, 3), np.float32), window=2, stride=1, baseline=0.0, batch=3
    )
    assert passes == 5 and np.allclose(p0, [0.5, 0.5])
    expected_1 = np.array([[0.5, 0.25, 0.0], [0.25, 0.125, 0.0], [0.0, 0.0, 0.0]])
    assert np.allclose(attr[1], expected_1, atol=1e-12)
    assert np.allclose(attr[0], -expected_1, atol=1e-12)
    res = saliency(
        "occlusion", forward, np.ones((3, 3, 3), np.float32), [0, 1], {"window": 2, "stride": 1, "baseline": 0.0}
    )
    assert np.allclose(res.maps[1], expected_1 / 0.5) and not res.maps[0].any()  # ReLU: class 0 only gains


@pytest.mark.parametrize("window,stride", [(8, 4), (4, 4), (6, 2)])
def test_occlusion_matches_captum_when_windows_tile(window, stride):
    from captum.attr import Occlusion

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3), nn.Softmax(1)
    ).eval()
    x = torch.rand(1, 3, 32, 32)
    assert (32 - window) % stride == 0  # same windows as Captum's

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    p0, attr, _ = occlusion_attribution(forward, x[0].numpy(), window, stride, 0.5, batch=16, targets=[0, 2])
    occ = Occlusion(net)
    for i, c in enumerate([0, 2]):
        ref = (
            occ.attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, stride, stride),
                baselines=0.5,
                target=c,
                perturbations_per_eval=16,
            )[0]
            .double()
            .numpy()
        )
        assert np.allclose(ref[0], ref[1]) and np.allclose(ref[0], ref[2])  # windows span all channels
        assert np.abs(attr[i]).max() > 1e-4  # a real signal, not two zero arrays
        assert np.allclose(attr[i], ref.mean(0), rtol=1e-4, atol=1e-6)


def test_occlusion_finds_region_through_onnxruntime():
    fwd = ort_forward(region_model())
    img = image(seed=3)
    img[:, REGION[0], REGION[1]] = 0.9  # brighter than the grey occluder: occluding it lowers the class-1 logit
    res = saliency("occlusion", fwd, img, [1, 0], {"window": 4, "stride": 2})
    mask = np.zeros((32, 32), bool)
    mask[REGION] = True
    m = res.maps[1]
    assert m.shape == (32, 32) and m.max() == 1.0
    peak = np.unravel_index(np.argmax(m), m.shape)
    assert mask[peak]
    assert energy_share(m, mask) > 0.6 > 6 * energy_chance(mask)  # chance is 64 / 1024
    assert m[~box_mask([18, 2, 12, 12], 32, 32)].max() == 0.0  # windows away from the region change nothing
    assert res.passes == 15 * 15 + 1


def test_rise_finds_region_through_onnxruntime():
    fwd = ort_forward(region_model())
    img = image(seed=3)
    img[:, REGION[0], REGION[1]] = 0.9
    res = saliency("rise", fwd, img, [1], {"masks": 400, "grid": 8})
    mask = np.zeros((32, 32), bool)
    mask[REGION] = True
    m = res.maps[1]
    assert pointing_game(m, mask, tolerance_px=0)
    assert energy_share(m, mask) > 3 * energy_chance(mask)  # RISE keeps a floor outside (min-subtracted, not ReLU)
    assert m[mask].mean() > 3 * m[~mask].mean()
    assert res.passes == 401


def test_all_targets_from_one_sweep():
    fwd = Counting(linear_forward(24, 20))
    img = image(24, 20)
    both = saliency("occlusion", fwd, img, [0, 2], {"window": 6, "stride": 3})
    n_both = fwd.images
    alone = saliency("occlusion", fwd, img, [2], {"window": 6, "stride": 3})
    assert fwd.images == 2 * n_both  # explaining two classes cost what explaining one does
    assert np.array_equal(both.maps[2], alone.maps[2]) and set(both.maps) == {0, 2}
    rise_both = saliency("rise", fwd, img, [0, 2], {"masks": 30})
    rise_one = saliency("rise", fwd, img, [0], {"masks": 30})
    assert np.allclose(rise_both.maps[0], rise_one.maps[0], atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(3, 40), w=st.integers(3, 40), data=st.data())
def test_occlusion_invariants(h, w, data):
    window = data.draw(st.integers(1, min(h, w)), "window")
    stride = data.draw(st.integers(1, window), "stride")
    batch = data.draw(st.integers(1, 50), "batch")
    for axis in (h, w):  # every pixel is covered: the first window starts at 0, the last ends at the border
        pos = window_positions(axis, window, stride)
        cover = np.zeros(axis, int)
        for p in pos:
            cover[p : p + window] += 1
        assert cover.min() >= 1 and pos[-1] == axis - window and pos == sorted(set(pos))
    fwd = Counting(linear_forward(h, w, seed=h * w))
    params = {"window": window, "stride": stride, "batch": batch}
    res = saliency("occlusion", fwd, image(h, w, seed=w), [0, 1, 2], params)
    assert res.passes == fwd.images == BLACK_BOX["occlusion"].passes(h, w, resolve_params("occlusion", params, "t"))
    assert fwd.calls == -(-res.passes // batch)
    for m in res.maps.values():
        assert m.shape == (h, w) and m.dtype == np.float64 and np.isfinite(m).all()
        assert m.min() >= 0.0 and (m.max() == 1.0 or not m.any())
    assert np.isclose(res.probabilities.sum(), 1.0)


# --- RISE -------------------------------------------------------------------------------------------------------------


def test_rise_masks_match_torch_bilinear_and_keep_probability():
    ms = MaskSet(50, 30, 20, grid=5, p=0.3, seed=4)
    cell_h, cell_w = 6, 4  # ceil(30 / 5), ceil(20 / 5)
    for i in (0, 7, 49):
        up = torch.nn.functional.interpolate(
            torch.from_numpy(ms.cells[i].astype(np.float64))[None, None],
            size=(6 * cell_h, 6 * cell_w),
            mode="bilinear",
            align_corners=False,
        )
        sy, sx = int(ms.shift_y[i]), int(ms.shift_x[i])
        assert 0 <= sy < cell_h and 0 <= sx < cell_w
        assert np.allclose(ms.mask(i), up[0, 0, sy : sy + 30, sx : sx + 20].numpy(), atol=1e-6)
    masks = rise_masks(400, 32, 32, grid=8, p=0.3, seed=0)
    assert masks.shape == (400, 32, 32) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert abs(masks.mean() - 0.3) < 0.02


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 40), h=st.integers(8, 24), w=st.integers(8, 24))
def test_rise_deterministic_per_seed_and_batch_free(seed, batch, h, w):
    fwd = Counting(linear_forward(h, w))
    img = image(h, w, seed=1)
    a = saliency("rise", fwd, img, [1], {"masks": 20, "grid": 4, "seed": seed, "batch": batch})
    b = saliency("rise", fwd, img, [1], {"masks": 20, "grid": 4, "seed": seed})
    other = saliency("rise", fwd, img, [1], {"masks": 20, "grid": 4, "seed": (seed + 1) % 2**32})
    assert np.allclose(a.maps[1], b.maps[1], atol=1e-9)  # the seed alone fixes the maps, not the batching
    assert not np.allclose(a.maps[1], other.maps[1])
    assert a.passes == 21 and fwd.images == 63
    m = a.maps[1]
    assert m.shape == (h, w) and m.min() == 0.0 and m.max() == 1.0  # min subtracted, divided by max


# --- models that ignore their input, sanity check ---------------------------------------------------------------------


@pytest.mark.parametrize("name,params", [("occlusion", {"window": 8, "stride": 4}), ("rise", {"masks": 40})])
def test_model_ignoring_input_gives_zero_maps_and_sanity_says_so(name, params):
    model = ignoring_model()
    randomised, replaced = randomize_onnx_head(model, seed=5)
    assert replaced == ["head.weight", "head.bias"]
    img = image(seed=2)
    trained = saliency(name, ort_forward(model), img, [0, 1, 2], params)
    rand = saliency(name, ort_forward(randomised), img, [0, 1, 2], params)
    assert not np.allclose(trained.probabilities, rand.probabilities)  # the head did change
    for c in range(3):
        assert not trained.maps[c].any() and not rand.maps[c].any()
        assert map_rank_correlation(trained.maps[c], rand.maps[c]) == 1.0
    assert not saliency(name, constant_forward, img, [1], params).maps[1].any()


def test_map_rank_correlation_conventions():
    a = np.arange(12, dtype=float).reshape(3, 4)
    assert map_rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert map_rank_correlation(a, -a) == pytest.approx(-1.0)
    assert map_rank_correlation(a, a**3) == pytest.approx(1.0)  # ranks, not values
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    c = np.array([[1.0, 2.0], [4.0, 3.0]])
    # flattened ranks 1 3 2 4 and 1 2 4 3: d = 0 1 -2 1, rho = 1 - 6 * 6 / (4 * 15)
    assert map_rank_correlation(b, c) == pytest.approx(0.4)
    z = np.zeros((3, 4))
    assert map_rank_correlation(z, z) == 1.0 and map_rank_correlation(z + 0.5, z) == 1.0
    assert map_rank_correlation(z, a) == 0.0 and map_rank_correlation(a, z) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        map_rank_correlation(a, a.T)
    with pytest.raises(ValueError, match="NaN"):
        map_rank_correlation(a, np.where(a > 5, np.nan, a))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_map_rank_correlation_never_nan(seed, levels):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, levels, (5, 6)).astype(float), rng.integers(0, levels, (5, 6)).astype(float)
    r = map_rank_correlation(a, b)
    assert np.isfinite(r) and -1.0 - 1e-12 <= r <= 1.0 + 1e-12
    assert map_rank_correlation(a, b) == pytest.approx(map_rank_correlation(b, a), abs=1e-12)


def test_randomize_onnx_head_tiny_graph():
    model = mlp_model()
    before = inits(model)
    new, replaced = randomize_onnx_head(model, seed=3)
    assert replaced == ["head.weight_t", "head.bias"]
    after = inits(new)
    assert all(np.array_equal(before[k], v) for k, v in inits(model).items())  # the input model is left intact
    for k in before:
        assert after[k].shape == before[k].shape and after[k].dtype == before[k].dtype
        assert np.array_equal(after[k], before[k]) == (k not in replaced)
    w = after["head.weight_t"]
    assert 0.5 < w.std() / before["head.weight_t"].std() < 2.0  # same scale as the original
    again, _ = randomize_onnx_head(model, seed=3)
    assert all(np.array_equal(inits(again)[k], after[k]) for k in after)
    other, _ = randomize_onnx_head(model, seed=4)
    assert not np.array_equal(inits(other)["head.weight_t"], w)
    two, replaced2 = randomize_onnx_head(model, seed=3, layers=2)
    assert replaced2 == ["head.weight_t", "head.bias", "hidden.weight", "hidden.bias"]
    assert sorted(replaced2) == sorted(inits(two)) and all(not np.array_equal(inits(two)[k], before[k]) for k in before)
    x = image()[None]
    onnx.checker.check_model(new, full_check=True)
    assert not np.allclose(ort_forward(model, logits=True)(x), ort_forward(new, logits=True)(x))
    flat_zero = mlp_model()
    flat_zero.graph.initializer[3].CopyFrom(numpy_helper.from_array(np.zeros(3, np.float32), "head.bias"))
    zero_bias = inits(randomize_onnx_head(flat_zero)[0])["head.bias"]
    assert 0.0 < np.abs(zero_bias).max() < 0.5  # a constant original gets std 0.05, not 0


def test_randomize_onnx_head_constant_node_and_errors():
    model = mlp_model()  # move the head weight into a Constant node feeding a Transpose
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "head.weight_t"))
    keep = [t for t in model.graph.initializer if t.name != "head.weight_t"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w_raw"], value=numpy_helper.from_array(w.T.copy())))
    model.graph.node.insert(1, helper.make_node("Transpose", ["w_raw"], ["head.weight_t"], perm=[1, 0]))
    new, replaced = randomize_onnx_head(model, seed=0)
    assert replaced == ["w_raw", "head.bias"]
    got = numpy_helper.to_array(new.graph.node[0].attribute[0].t)
    assert got.shape == (3, 16) and not np.array_equal(got, w.T)
    no_head = _model([helper.make_node("Softmax", ["input"], ["probs"], axis=3)], {}, ["N", 3, 32, 32])
    with pytest.raises(ValueError, match="no final weight initializer"):
        randomize_onnx_head(no_head)
    with pytest.raises(ValueError, match="layers"):
        randomize_onnx_head(mlp_model(), layers=0)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_randomize_onnx_head_on_harness_export():
    from harness.export import deployable, to_onnx

    torch.manual_seed(0)
    net = TinyNet()
    module = deployable(net, {"tta_hflip": True})  # the graph runs the head on the image and on its mirror
    model = to_onnx(module, 32)
    before = inits(model)
    weight = net.fc.weight.detach().numpy()
    fc_names = [
        k
        for k, v in before.items()
        if v.shape in (weight.shape, weight.T.shape)
        and np.allclose(v.reshape(-1), (weight if v.shape == weight.shape else weight.T).reshape(-1))
    ]
    assert len(fc_names) == 1
    head_uses = [n for n in model.graph.node if fc_names[0] in n.input]
    assert len(head_uses) == 2  # one weight, two nodes
    new, replaced = randomize_onnx_head(model, seed=0)
    assert replaced[0] == fc_names[0] and len(replaced) == 2  # weight and bias, each once
    after = inits(new)
    assert [k for k in before if not np.array_equal(before[k], after[k])] == sorted(replaced, key=list(before).index)
    x = image(seed=9)[None]
    assert not np.allclose(ort_forward(model)(x), ort_forward(new)(x))


def test_randomize_torch_head():
    torch.manual_seed(0)
    net = TinyNet()
    conv_before = net.conv.weight.detach().clone()
    fc_before = net.fc.weight.detach().clone()
    assert randomize_torch_head(net, seed=1) == ["fc"]
    assert torch.equal(net.conv.weight, conv_before) and not torch.equal(net.fc.weight, fc_before)
    torch.manual_seed(0)
    twin = TinyNet()  # same initial weights as net
    randomize_torch_head(twin, seed=1)
    assert torch.equal(twin.fc.weight, net.fc.weight) and torch.equal(twin.fc.bias, net.fc.bias)
    big = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128))
    std = big[4].weight.std().item()
    assert randomize_torch_head(big, seed=0, layers=2) == ["4", "2"]
    assert abs(big[4].weight.std().item() / std - 1) < 0.1
    assert randomize_torch_head(big, seed=0, layers=5) == ["4", "2", "0"]  # the 1x1 conv counts; fewer than asked
    with pytest.raises(ValueError, match="no nn.Linear"):
        randomize_torch_head(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(ValueError, match="layers"):
        randomize_torch_head(net, layers=0)


# --- cost, registry, hostile inputs -----------------------------------------------------------------------------------


def test_default_cost_at_224_px():
    """The contract's budget: 170 passes for occlusion, 201 for RISE at 224 px; our own overhead well under the
    3 s per image (the forward here is nearly free)."""
    assert BLACK_BOX["occlusion"].passes(224, 224, BLACK_BOX["occlusion"].defaults) == 170
    assert BLACK_BOX["rise"].passes(224, 224, BLACK_BOX["rise"].defaults) == 201
    fwd = Counting(lambda x: softmax(x.mean((2, 3)).astype(np.float64) * 5))
    img = image(224, 224)
    for name in ("occlusion", "rise"):
        t0 = time.perf_counter()
        res = saliency(name, fwd, img, [0, 1])
        assert time.perf_counter() - t0 < 1.5
        assert isinstance(res, SaliencyResult) and res.passes == BLACK_BOX[name].passes(224, 224, {})
        assert res.maps[0].shape == (224, 224)
    assert fwd.images == 170 + 201
    for name, method in BLACK_BOX.items():
        text = method.description(method.defaults)
        assert ("Zeiler" if name == "occlusion" else "Petsiuk") in text and "\n" not in text


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("occlusion", {"windw": 8}, "windw"),
        ("occlusion", {"window": 0}, "window = 0"),
        ("occlusion", {"window": 33}, "window = 33"),
        ("occlusion", {"window": 8.0}, "window = 8.0"),
        ("occlusion", {"window": True}, "window = True"),
        ("occlusion", {"stride": 0}, "stride = 0"),
        ("occlusion", {"window": 8, "stride": 9}, "stride = 9"),
        ("occlusion", {"window": 8, "stride": 4, "baseline": -0.1}, "baseline = -0.1"),
        ("occlusion", {"window": 8, "stride": 4, "baseline": 1.5}, "baseline = 1.5"),
        ("occlusion", {"window": 8, "stride": 4, "baseline": float("nan")}, "baseline = nan"),
        ("occlusion", {"window": 8, "stride": 4, "baseline": "grey"}, "baseline = 'grey'"),
        ("occlusion", {"window": 8, "stride": 4, "batch": 0}, "batch = 0"),
        ("rise", {"masks": 0}, "masks = 0"),
        ("rise", {"p": 0.0}, "p = 0.0"),
        ("rise", {"p": 1}, "p = 1"),
        ("rise", {"grid": 0}, "grid = 0"),
        ("rise", {"grid": 40}, "grid = 40"),
        ("rise", {"seed": -1}, "seed = -1"),
        ("rise", {"batch": -3}, "batch = -3"),
    ],
)
def test_hostile_params(name, params, needle):
    with pytest.raises(ConfigError) as err:
        resolve_params(name, params, "profile cpu.toml [saliency]", size=(32, 32))
    assert "profile cpu.toml [saliency]" in str(err.value) and needle in str(err.value)
    with pytest.raises(ConfigError):
        saliency(name, constant_forward, image(), [0], params, where="profile cpu.toml [saliency]")


def test_registry_and_resolution():
    with pytest.raises(ConfigError, match=r"'gradients'.*\['occlusion', 'rise'\]"):
        get_method("gradients")
    with pytest.raises(ConfigError, match="table"):
        resolve_params("occlusion", [("window", 8)], "x")  # type: ignore[arg-type]
    assert resolve_params("occlusion", {"window": 64}, "x") == {
        "window": 64,
        "stride": 16,
        "baseline": 0.5,
        "batch": 32,
    }
    assert resolve_params("rise", {}, "x") == dict(BLACK_BOX["rise"].defaults)
    assert get_method("rise").name == "rise"


def test_hostile_forward_image_and_targets():
    img = image()
    logits = lambda x: np.tile([[2.0, -1.0, 0.5]], (len(x), 1))  # noqa: E731
    with pytest.raises(ValueError, match="softmax"):
        saliency("occlusion", logits, img, [0], {"window": 8, "stride": 8})
    with pytest.raises(ValueError, match="shape"):
        saliency("occlusion", lambda x: constant_forward(x)[:1], img, [0], {"window": 8, "stride": 8})
    with pytest.raises(ValueError, match="NaN"):
        saliency("rise", lambda x: constant_forward(x) * np.nan, img, [0], {"masks": 3})
    with pytest.raises(ValueError, match="out of range"):
        saliency("occlusion", constant_forward, img, [3], {"window": 8, "stride": 8})
    for targets in ([], [True], [-1], ["1"]):
        with pytest.raises(ValueError, match="targets"):
            saliency("rise", constant_forward, img, targets, {"masks": 3})
    for bad in (img[:2], img * 255, img.astype(np.uint8), np.where(img > 0.5, np.nan, img), img[0]):
        with pytest.raises(ValueError, match="image"):
            saliency("occlusion", constant_forward, bad, [0], {"window": 2, "stride": 2})


# --- chance levels of the localization scores -------------------------------------------------------------------------


def test_chance_levels_of_a_box():
    mask = box_mask([10, 5, 20, 10], 40, 50)  # 200 of 2000 pixels
    assert energy_chance(mask) == 0.1
    assert energy_share(np.ones((40, 50)), mask) == pytest.approx(energy_chance(mask))
    assert pointing_chance(mask, 0) == energy_chance(mask)
    # dilated by 1 px (Euclidean, pixel centres): one more row/column on each side, corners excluded
    assert pointing_chance(mask, 1) == (22 * 12 - 4) / 2000
    assert pointing_chance(mask, 1.5) == 22 * 12 / 2000
    assert pointing_chance(mask, 1000) == 1.0
    assert pointing_chance(mask) >= pointing_chance(mask, 5) >= energy_chance(mask)
    assert energy_chance(np.zeros((4, 4), bool)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        pointing_chance(np.zeros((4, 4), bool))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tolerance_px"):
            pointing_chance(mask, bad)
    with pytest.raises(ValueError):
        energy_chance(np.full((3, 3), 2))
    with pytest.raises(ValueError):
        energy_chance(np.ones(5, bool))


def test_pointing_chance_monte_carlo():
    mask = box_mask([30, 20, 12, 8], 64, 80)
    rng = np.random.default_rng(0)
    n = 3000
    hits = sum(pointing_game(rng.random((64, 80)), mask, tolerance_px=10.0) for _ in range(n))
    chance = pointing_chance(mask, 10.0)
    assert 0.1 < chance < 0.5  # (12 + 20) x (8 + 20) minus rounded corners, of 64 x 80
    assert abs(hits / n - chance) < 4 * np.sqrt(chance * (1 - chance) / n)


@settings(max_examples=30, deadline=None)
@given(x=st.integers(-5, 30), y=st.integers(-5, 30), w=st.integers(1, 20), h=st.integers(1, 20), tol=st.floats(0, 40))
def test_chance_invariants(x, y, w, h, tol):
    mask = box_mask([x, y, w, h], 24, 32)
    assume(mask.any())
    e, p = energy_chance(mask), pointing_chance(mask, tol)
    assert 0 < e <= p <= 1 and e == mask.sum() / mask.size
