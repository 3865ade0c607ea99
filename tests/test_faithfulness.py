"""Faithfulness of the maps (harness.robustness.faithfulness): deletion / insertion curves of the stored maps against
a random map's, on a model whose answer depends on a known region: a map of that region beats the random map, a map
of everything else loses to it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import artifacts
from harness.robustness.faithfulness import RANDOM, auc, curves, image_batch, pixel_order
from harness.robustness.maps import MapStore, load_maps, maps_file, thumb_shape
from harness.robustness.measures import faithfulness_summary
from harness.robustness.settings import RobustnessSettings
from harness.robustness.step import robustness_step
from harness.thresholds import parse_thresholds
from harness.verdicts import judge
from tests.test_robustness import S, checked_folder, dataset, linear_model, redness, region_mask, session_of


def test_auc_is_the_trapezoid_over_the_unit_interval():
    assert auc([0.7, 0.7, 0.7]) == pytest.approx(0.7)
    assert auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert auc([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        auc([1.0])


def test_ties_are_broken_by_the_seed_and_the_most_salient_pixels_come_first():
    m = np.zeros((4, 4))
    m[1, 2], m[3, 0] = 1.0, 0.5
    a, b = pixel_order(m, np.random.default_rng(0)), pixel_order(m, np.random.default_rng(1))
    assert list(a[:2]) == [6, 12] == list(b[:2]) and sorted(a) == list(range(16))
    assert list(a[2:]) != list(b[2:])


def test_the_curves_start_and_end_where_the_paper_says(tmp_path):
    ds = dataset(n_red=1, n_background=0)
    forward, _ = session_of(linear_model(tmp_path / "m.onnx", redness(region_mask()), [0.0, -4.0]))
    x = ds.samples[0].image.numpy().astype(np.float32) / 255
    batch, names = image_batch(x, {"occlusion": region_mask().astype(float)}, 5, np.random.default_rng(0))
    assert names == ["occlusion", RANDOM] and batch.shape == (3 + 2 * 2 * 4, 3, S, S)
    probs = forward(batch)
    c = curves(probs, names, 5, target=1)
    clean, black, blur = probs[0, 1], probs[1, 1], probs[2, 1]
    for name in names:
        assert len(c[name]["deletion"]) == len(c[name]["insertion"]) == 6
        assert c[name]["deletion"][0] == pytest.approx(clean, abs=1e-6) and c[name]["deletion"][-1] == pytest.approx(
            black, abs=1e-6
        )
        assert c[name]["insertion"][0] == pytest.approx(blur, abs=1e-6) and c[name]["insertion"][-1] == pytest.approx(
            clean, abs=1e-6
        )
    # deleting the region first removes the answer at once; a random map removes it bit by bit
    assert auc(c["occlusion"]["deletion"]) < auc(c[RANDOM]["deletion"])


def _store(path, saliency: np.ndarray, ds) -> None:
    store = MapStore((S, S))
    for s in ds.samples:
        store.add("t", s.name, {"red": saliency, "background": 1 - saliency})
    store.save(path)


def _step(folder, ds) -> None:
    forward, spec = session_of(folder / "model.onnx")
    s = RobustnessSettings(corruptions=("jpeg",), masking=False, steps=8)
    sha = artifacts.sha256_file(folder / "model.onnx")
    robustness_step(folder, forward, spec, {"t": ds}, ds.classes, s, sha, "onnx", ["occlusion"])


def _faithful_folder(tmp_path, name: str, saliency: np.ndarray):
    """A checked model reading the region, with an 'occlusion' maps file holding `saliency` for every photo."""
    ds = dataset(n_red=4, n_background=0)
    folder = tmp_path / name
    folder.mkdir(parents=True)
    _store(folder / maps_file("occlusion"), saliency, ds)
    checked_folder(tmp_path, name, redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",), masking=False)
    _step(folder, ds)
    return folder


def test_a_map_of_the_region_the_model_reads_beats_a_random_map_and_its_inverse_does_not(tmp_path):
    good = _faithful_folder(tmp_path, "good", region_mask().astype(np.float32))
    bad = _faithful_folder(tmp_path, "bad", (~region_mask()).astype(np.float32))
    ev = json.loads((good / "faithfulness.json").read_text())
    assert ev["methods"]["occlusion"]["maps"] == 8 and len(ev["images"]["t"]) == 4
    m = faithfulness_summary(ev["images"]["t"], "occlusion")
    assert m["n"] == 4 and m["deletion"] < m["deletion_random"] and m["margin"] > 0 and m["wins"] == 4
    t = parse_thresholds({"gated": ["*"], "robustness": {"faithfulness_gated": True}}, "t")
    by = {v.id: v for v in judge(tmp_path, t, ["t"]) if v.criterion == "faithfulness"}
    assert by["onnx-good-occlusion-t"].status == "PASS" and "sign test" in by["onnx-good-occlusion-t"].detail
    assert by["onnx-bad-occlusion-t"].status == "FAIL" and by["onnx-bad-occlusion-t"].value < 0
    assert (
        faithfulness_summary(json.loads((bad / "faithfulness.json").read_text())["images"]["t"], "occlusion")["losses"]
        == 4
    )


def test_the_curves_are_redone_when_the_maps_change_and_only_then(tmp_path):
    folder = _faithful_folder(tmp_path, "m", region_mask().astype(np.float32))
    ds = dataset(n_red=4, n_background=0)
    stamp = (folder / "faithfulness.json").stat().st_mtime_ns
    _step(folder, ds)
    assert (folder / "faithfulness.json").stat().st_mtime_ns == stamp
    _store(folder / maps_file("occlusion"), (~region_mask()).astype(np.float32), ds)  # a saliency step reran
    _step(folder, ds)
    ev = json.loads((folder / "faithfulness.json").read_text())
    assert faithfulness_summary(ev["images"]["t"], "occlusion")["margin"] < 0


def test_missing_maps_are_named_and_a_gated_faithfulness_is_an_error(tmp_path):
    ds = dataset(n_red=2, n_background=0)
    folder = checked_folder(tmp_path, "m", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",))
    forward, spec = session_of(folder / "model.onnx")
    s = RobustnessSettings(corruptions=("jpeg",), masking=False)
    robustness_step(
        folder, forward, spec, {"t": ds}, ds.classes, s, artifacts.sha256_file(folder / "model.onnx"), "onnx", ["rise"]
    )
    ev = json.loads((folder / "faithfulness.json").read_text())
    assert "rise.maps.npz missing" in ev["methods"]["rise"]["skipped"]
    t = parse_thresholds({"gated": ["*"], "robustness": {"faithfulness_gated": True}}, "t")
    v = next(v for v in judge(tmp_path, t, ["t"]) if v.criterion == "faithfulness")
    assert v.id == "onnx-m-rise-t" and v.status == "ERROR" and "rise.maps.npz missing" in v.detail


def test_the_maps_store_round_trips_thumbnails_in_the_input_geometry(tmp_path):
    store = MapStore((224, 112))
    assert store.shape == thumb_shape(224, 112) == (64, 32)
    big = np.linspace(0, 1, 224 * 112, dtype=np.float32).reshape(224, 112)
    store.add("test", "a/b.png", {"x": big, "y": np.zeros((30, 40))})  # a map over the photo is stretched too
    path = store.save(tmp_path / "cam.maps.npz")
    maps = load_maps(path)
    assert set(maps) == {("test", "a/b.png", "x"), ("test", "a/b.png", "y")}
    assert maps[("test", "a/b.png", "x")].shape == (64, 32) and abs(maps[("test", "a/b.png", "x")].mean() - 0.5) < 0.01
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cam.maps.npz: not a readable maps file"):
        load_maps(path)
