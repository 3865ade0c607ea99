"""Tests for harness.saliency.gradcam (Grad-CAM maps, overlays) and harness.saliency.gradcam_step (the cam step and
cam.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from harness import artifacts
from harness.backbones import BACKBONES, Classifier, build_classifier, get_backbone
from harness.config import load_profile
from harness.data import Region
from harness.saliency.gradcam import gradcam, gradcam_maps, save_overlay
from harness.saliency.gradcam_step import cam_run, cam_variant

CLASSES = ("background", "bayes", "geeks")


class HalfMasks(nn.Module):
    """Channel 0 sees only the left half of the feature map, channel 1 only the right half."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        w = a.shape[-1]
        left = torch.zeros_like(a[:, :1])
        left[..., : w // 2] = 1
        return torch.cat([a[:, :1] * left, a[:, 1:2] * (1 - left)], 1)


def half_model() -> Classifier:
    """A Classifier whose class 0 logit is the mean activation of the left half, class 1 of the right half."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1 / 27)
        conv.bias.fill_(0.1)
    model = Classifier(nn.Sequential(conv, nn.ReLU(), HalfMasks()), 2, 2, (0, 0, 0), (1, 1, 1), hidden=2)
    with torch.no_grad():
        for lin in (model.head[1], model.head[4]):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return model.eval()


def textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


# --- Grad-CAM maps ---------------------------------------------------------------------------------------------------


def test_left_half_model_peaks_on_the_left_and_class_selects_the_map():
    model, x = half_model(), textured(32, 32)
    size = (48, 64)  # the "original" image is larger than the model input, as for the real 640 x 480 photos
    left = gradcam(model, "features.2", x, 0, size)
    right = gradcam(model, "features.2", x, 1, size)
    for cam in (left, right):
        assert cam.shape == size and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert np.unravel_index(left.argmax(), size)[1] < size[1] // 2
    assert np.unravel_index(right.argmax(), size)[1] >= size[1] // 2
    # all the energy on its own half (up to the bilinear seam in the middle)
    assert left[:, : size[1] // 2].sum() > 0.95 * left.sum()
    assert right[:, size[1] // 2 :].sum() > 0.95 * right.sum()


def test_matches_a_hand_written_gradcam_on_vgg16():
    torch.manual_seed(0)
    model = build_classifier("vgg16", "scratch", 3, hidden=16).eval()
    x = textured(64, 64, seed=1)
    probs, maps = gradcam_maps(model, "features.29", x, [0, 2], size=(30, 40), predicted=True)
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert set(maps) == {0, 2, int(probs.argmax())}
    # reference: split the network at the layer by hand
    xb = (x[None] - model.mean) / model.std
    act = model.features[:30](xb).detach().requires_grad_(True)
    logits = model.head(model.pool(model.features[30:](act)))
    for c in (0, 2):
        (g,) = torch.autograd.grad(logits[0, c], act, retain_graph=True)
        cam = F.relu((g[0].mean((1, 2))[:, None, None] * act[0]).sum(0)).detach()
        cam = F.interpolate(cam[None, None], size=(30, 40), mode="bilinear", align_corners=False)[0, 0].numpy()
        expected = cam / cam.max() if cam.max() > 0 else cam
        np.testing.assert_allclose(maps[c], expected, atol=1e-5)


def test_works_with_torchvision_vgg_inplace_relus_and_leaves_model_untouched():
    from torchvision.models import vgg16

    torch.manual_seed(0)
    model = vgg16(weights=None, num_classes=4)  # torchvision's own ReLUs are inplace
    model.train()
    model.classifier.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam = gradcam(model, "features.29", textured(32, 32), 1, size=(20, 24))
    assert cam.shape == (20, 24) and 0 <= cam.min() and cam.max() <= 1
    assert model.training  # mode restored
    assert not model.features[29]._forward_hooks  # hook removed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # gradients taken at the layer only
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_declared_cam_layer_of_every_backbone(backbone):
    torch.manual_seed(0)
    model = build_classifier(backbone, "scratch", 6, hidden=16).eval()
    layer = get_backbone(backbone).cam_layer
    model.get_submodule(layer)  # exists
    probs, maps = gradcam_maps(model, layer, textured(64, 64), range(6), size=(48, 64), predicted=True)
    assert len(maps) == 6
    nonzero = 0
    for cam in maps.values():
        assert cam.shape == (48, 64) and np.isfinite(cam).all()
        assert cam.min() >= 0 and cam.max() <= 1
        if cam.max() > 0:
            nonzero += 1
            assert cam.max() == pytest.approx(1.0)
    assert nonzero >= 1  # at least one class has a positive map
    # frozen parameters (requires_grad False) do not stop the map
    for p in model.parameters():
        p.requires_grad_(False)
    again = gradcam(model, layer, textured(64, 64), 3, size=(48, 64))
    np.testing.assert_allclose(again, maps[3], atol=1e-5)


def test_zero_gradient_gives_an_all_zero_map():
    model = build_classifier("vgg16", "scratch", 3, hidden=8).eval()
    with torch.no_grad():
        model.head[4].weight.zero_()  # every logit is a constant: no gradient reaches the layer
    cam = gradcam(model, "features.29", textured(32, 32), 0, size=(24, 32))
    assert cam.shape == (24, 32) and not np.isnan(cam).any() and (cam == 0).all()


def test_negative_evidence_everywhere_gives_zeros_not_nan():
    model = half_model()
    with torch.no_grad():
        model.head[4].weight.copy_(-torch.eye(2))  # ReLU removes everything
        model.head[1].bias.fill_(1.0)
    cam = gradcam(model, "features.2", textured(16, 16), 0)
    assert cam.shape == (16, 16) and (cam == 0).all()


def test_bad_arguments():
    model = half_model()
    with pytest.raises(ValueError):
        gradcam(model, "features.2", torch.rand(2, 3, 8, 8), 0)
    with pytest.raises(ValueError):
        gradcam(model, "features.2", torch.rand(3, 8, 8), 5)
    with pytest.raises(AttributeError):
        gradcam(model, "features.9", torch.rand(3, 8, 8), 0)


# --- overlays --------------------------------------------------------------------------------------------------------


def test_overlay_png_small_and_valid(tmp_path):
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 480, 640), dtype=np.uint8))  # noise: the worst case for PNG
    cam = np.outer(np.hanning(480), np.hanning(640)).astype(np.float32)
    regions = (
        Region("bayes", ((100.0, 100.0), (300.0, 120.0), (280.0, 300.0), (90.0, 280.0)), (90, 100, 210, 200)),
        Region("geeks", (), (400, 50, 100, 100)),
    )
    path = save_overlay(
        tmp_path / "a" / "x.png",
        image,
        [("predicted bayes", cam), ("label geeks", cam[::-1])],
        regions,
        "x.jpg: predicted bayes (0.91)",
    )
    assert path.is_file() and path.stat().st_size < 150_000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 3 * im.height / 2
    assert not list(path.parent.glob(".*.tmp"))


# --- the cam step on a tiny run --------------------------------------------------------------------------------------


def _write_image(path: Path, rgb: tuple[int, int, int], size=(80, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8) + np.array(rgb, np.uint8)
    arr[10:40, 10:50] = 255 - arr[10:40, 10:50]
    Image.fromarray(arr).save(path)


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A run with one VGG16 variant (untrained, 32 px) and a dataset: a COCO split and an ImageFolder split."""
    data = tmp_path / "data"
    names = ["a.png", "b.png", "c.png", "d.png"]
    for n, name in enumerate(names):
        _write_image(data / "test_coco" / name, (40 * n, 100, 200 - 40 * n))
    cat = {c: i + 1 for i, c in enumerate(CLASSES)}
    poly = [10.0, 10.0, 50.0, 10.0, 50.0, 40.0, 10.0, 40.0]
    coco = {
        "categories": [{"id": i, "name": c} for c, i in cat.items()] + [{"id": 9, "name": "unknown_book"}],
        "images": [
            {
                "id": 1,
                "file_name": "test_coco/a.png",
                "primary_label": "bayes",
                "acceptable_labels": ["bayes", "geeks"],
            },
            {
                "id": 2,
                "file_name": "test_coco/b.png",
                "primary_label": "background",
                "acceptable_labels": [],
                "background_acceptable": True,
            },
            {"id": 3, "file_name": "test_coco/c.png", "primary_label": "geeks", "acceptable_labels": ["geeks"]},
            {"id": 4, "file_name": "test_coco/d.png", "primary_label": "geeks", "acceptable_labels": ["geeks"]},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": cat["bayes"], "segmentation": [poly], "bbox": [10, 10, 40, 30]},
            {"id": 2, "image_id": 1, "category_id": cat["geeks"], "segmentation": [], "bbox": [55, 5, 20, 50]},
            {"id": 3, "image_id": 2, "category_id": 9, "segmentation": [poly], "bbox": [10, 10, 40, 30]},
            {"id": 4, "image_id": 3, "category_id": cat["geeks"], "segmentation": [poly], "bbox": [10, 10, 40, 30]},
            # image 4: labelled geeks but no region drawn
        ],
    }
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "test_coco.json").write_text(json.dumps(coco))
    _write_image(data / "test_plain" / "bayes" / "e.png", (10, 200, 10))
    _write_image(data / "test_plain" / "geeks" / "e.png", (200, 10, 10))

    profile = load_profile("smoke", ["image_size=32", 'test_sets=["test_coco", "test_plain"]'])
    run = tmp_path / "run"
    vdir = run / "vgg16-scratch-none-s0"
    torch.manual_seed(0)
    model = build_classifier("vgg16", "scratch", len(CLASSES), hidden=8)
    artifacts.write_json(
        vdir / "config.json",
        {
            "variant": "scratch-none",
            "backbone": "vgg16",
            "classes": list(CLASSES),
            "data_root": str(data),
            "profile": profile.to_dict(),
        },
    )
    artifacts.save_torch(
        vdir / "model.pt",
        {
            "state_dict": model.state_dict(),
            "backbone": "vgg16",
            "classes": list(CLASSES),
            "image_size": 32,
            "hidden": 8,
            "dropout": 0.0,
            "variant": "scratch-none",
            "seed": 0,
        },
    )
    return run


def test_cam_variant_writes_schema_overlays_and_counts_skips(tiny_run):
    vdir = tiny_run / "vgg16-scratch-none-s0"
    result = cam_variant(vdir)
    on_disk = json.loads((vdir / "cam.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(result["summary"]))
    for key in (
        "variant",
        "backbone",
        "layer",
        "image_size",
        "classes",
        "protocol",
        "summary",
        "images",
        "seconds",
        "seconds_per_image",
    ):
        assert key in on_disk
    assert on_disk["layer"] == "features.29"
    assert on_disk["protocol"]["pointing_tolerance_px"] == 15.0
    assert set(on_disk["summary"]) == {"test_coco", "test_plain"}

    coco = on_disk["summary"]["test_coco"]
    assert coco["has_regions"] and coco["images"] == 4
    assert coco["images_scored"] == 2 and coco["images_skipped"] == 2
    assert coco["skipped"] == {"background": 1, "no_regions": 1}
    assert coco["regions_scored"] == 3  # bayes + geeks on a.png, geeks on c.png (unknown_book is no class)
    for k in ("energy_share_mean", "pointing_hit_rate", "localization_correct_rate", "iou_mean"):
        assert 0 <= coco[k] <= 1
        assert 0 <= coco["predicted_map"][k] <= 1
    assert coco["predicted_map"]["n"] == 2

    plain = on_disk["summary"]["test_plain"]
    assert not plain["has_regions"] and plain["images_scored"] == 0
    assert plain["skipped"] == {"no_annotations": 2} and plain["localization"].startswith("skipped")

    recs = {r["image"]: r for r in on_disk["images"]["test_coco"]}
    a = recs["test_coco/a.png"]
    assert a["status"] == "scored" and set(a["classes"]) == {"bayes", "geeks"}
    assert a["classes"]["bayes"]["shape"] == "polygon" and a["classes"]["geeks"]["shape"] == "box"
    for s in a["classes"].values():
        assert isinstance(s["pointing_hit"], bool) and isinstance(s["localization_correct"], bool)
        assert 0 <= s["energy_share"] <= 1 and 0 <= s["iou"] <= 1
    assert a["predicted_map"]["against"] == "bayes" and a["predicted"] in CLASSES
    assert 0 < a["probability"] <= 1
    assert recs["test_coco/b.png"]["skip_reason"] == "background"
    assert recs["test_coco/d.png"]["skip_reason"] == "no_regions"

    pngs = sorted(p.relative_to(vdir).as_posix() for p in (vdir / "cam").rglob("*.png"))
    assert pngs == [
        "cam/test_coco/a.png",
        "cam/test_coco/b.png",
        "cam/test_coco/c.png",
        "cam/test_coco/d.png",
        "cam/test_plain/bayes/e.png",
        "cam/test_plain/geeks/e.png",
    ]
    assert all(r["overlay"] in pngs for split in on_disk["images"].values() for r in split)
    for p in pngs:
        assert (vdir / p).stat().st_size < 150_000
        with Image.open(vdir / p) as im:
            assert im.format == "PNG"


@pytest.mark.slow
def test_existing_cam_json_is_skipped_unless_forced(tiny_run, capsys):
    vdir = tiny_run / "vgg16-scratch-none-s0"
    first = cam_variant(vdir, splits=["test_plain"])
    assert set(first["summary"]) == {"test_plain"}
    stamp = (vdir / "cam.json").stat().st_mtime_ns
    os.utime(vdir / "cam.json", ns=(stamp - 10**9, stamp - 10**9))
    again = cam_run(tiny_run, splits=["test_plain"])["vgg16-scratch-none-s0"]
    assert set(again["summary"]) == {"test_plain"}  # read back, not recomputed: same model, same test images
    assert (vdir / "cam.json").stat().st_mtime_ns == stamp - 10**9
    assert "skipping" in capsys.readouterr().err
    forced = cam_variant(vdir, force=True, splits=["test_plain"])
    assert (vdir / "cam.json").stat().st_mtime_ns != stamp - 10**9
    assert forced["summary"]["test_plain"]["images"] == 2
    # cam.json records what it was made from: other test sets are not "done", they are redone without --force
    other = cam_run(tiny_run)["vgg16-scratch-none-s0"]
    assert set(other["summary"]) == {"test_plain", "test_coco"}


def test_cli_cam(tiny_run, capsys):
    from harness.cli import main

    assert main(["cam", str(tiny_run), "--splits", "test_coco"]) == 0
    out = capsys.readouterr().out
    assert "vgg16-scratch-none-s0" in out and "test_coco: 2 scored, 2 skipped" in out
    cam = json.loads((tiny_run / "vgg16-scratch-none-s0" / "cam.json").read_text())
    assert set(cam["summary"]) == {"test_coco"}
    assert main(["cam", str(tiny_run / "missing")]) == 2
