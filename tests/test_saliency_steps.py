"""The saliency steps of a harness run: Grad-CAM's cam.json with chance levels and its sanity check, the black-box
occlusion step on the exported model (occlusion.json), and the verdicts judged against chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import artifacts, testsets
from harness.config import load_profile
from harness.data import load_test, working_short_side
from harness.export import export_variant
from harness.saliency import localization
from harness.saliency.blackbox_step import variant_blackbox
from harness.saliency.gradcam_step import CAM_PROTOCOL, cam_variant
from harness.thresholds import parse_thresholds
from harness.verdicts import ERROR, judge
from tests.test_cam import tiny_run  # noqa: F401  (the fixture: one untrained VGG16 at 32 px, COCO + ImageFolder)

VDIR = "vgg16-scratch-none-s0"


def _set_profile(run, *overrides):
    vdir = run / VDIR
    config = artifacts.read_json(vdir / "config.json")
    profile = load_profile("smoke", ["image_size=32", 'test_sets=["test_coco", "test_plain"]', *overrides])
    config["profile"] = profile.to_dict()
    artifacts.write_json(vdir / "config.json", config)
    return vdir


def test_cam_json_records_each_region_s_chance_level_and_the_sanity_check(tiny_run):  # noqa: F811
    vdir = _set_profile(tiny_run, "saliency.sanity_images=2")
    cam = cam_variant(vdir)
    rec = {r["image"]: r for r in cam["images"]["test_coco"]}["test_coco/a.png"]
    h, w = 60, 80
    geeks = rec["classes"]["geeks"]  # a box [55, 5, 20, 50] on an 80 x 60 photo
    mask = localization.box_mask([55, 5, 20, 50], h, w)
    assert geeks["energy_chance"] == pytest.approx(20 * 50 / (80 * 60))
    assert geeks["pointing_chance"] == pytest.approx(localization.pointing_chance(mask, 15.0))
    assert geeks["energy_chance"] < geeks["pointing_chance"] < 1
    summary = cam["summary"]["test_coco"]
    scored = [s for r in cam["images"]["test_coco"] if r["status"] == "scored" for s in r["classes"].values()]
    assert summary["energy_chance_mean"] == pytest.approx(np.mean([s["energy_chance"] for s in scored]))
    sanity = cam["sanity"]
    assert sanity["images"] == 2 and sanity["maps"] == 3 and -1 <= sanity["spearman_mean"] <= 1
    assert sanity["randomised"] == ["head.4"]  # the classifier's last Linear
    assert cam["inputs"]["protocol"] == CAM_PROTOCOL


def test_a_cam_json_from_before_the_chance_levels_is_redone_not_judged(tiny_run, capsys):  # noqa: F811
    vdir = _set_profile(tiny_run)
    cam_variant(vdir, splits=["test_plain"])
    old = artifacts.read_json(vdir / "cam.json")
    old["inputs"].pop("protocol")  # as an older harness wrote it
    artifacts.write_json(vdir / "cam.json", old)
    cam_variant(vdir, splits=["test_plain"])
    assert "skipping" not in capsys.readouterr().err
    assert artifacts.read_json(vdir / "cam.json")["inputs"]["protocol"] == CAM_PROTOCOL


def test_localization_verdicts_stand_beside_chance_and_fail_their_sanity_check(tiny_run):  # noqa: F811
    vdir = _set_profile(tiny_run, "saliency.sanity_images=2")
    cam = cam_variant(vdir)
    chance = cam["summary"]["test_coco"]["energy_chance_mean"]
    t = parse_thresholds(
        {"gated": ["scratch-none"], "cam": {"energy_share_margin": 0.05, "pointing_margin": 0.0, "sanity_max": 1.0}},
        "t",
    )
    by = {f"{v.criterion}[{v.id}]": v for v in judge(tiny_run, t, ["test_coco", "test_plain"])}
    energy = by["cam_energy[vgg16-scratch-none-test_coco]"]
    assert energy.chance == pytest.approx(chance) and energy.threshold == pytest.approx(chance + 0.05)
    assert energy.status in ("PASS", "FAIL") and "uniform map scores" in energy.detail
    assert "cam_energy[vgg16-scratch-none-test_plain]" not in by  # no regions there: not judged
    assert by["cam_sanity[vgg16-scratch-none]"].value == pytest.approx(cam["sanity"]["spearman_mean"])
    strict = parse_thresholds(
        {"gated": ["scratch-none"], "cam": {"energy_share_margin": 0.05, "sanity_max": -1.0}}, "t"
    )
    by = {f"{v.criterion}[{v.id}]": v for v in judge(tiny_run, strict, ["test_coco", "test_plain"])}
    energy = by["cam_energy[vgg16-scratch-none-test_coco]"]
    assert energy.status == ERROR and "do not depend on the model" in energy.detail
    assert by["cam_sanity[vgg16-scratch-none]"].status == "FAIL"


def test_no_test_set_with_regions_makes_localization_skip_not_error(tmp_path):
    from tests.test_trust import _evidence

    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=1.0, split="test", n=8, constant=0.25)
    folder = next(tmp_path.glob("*-s0"))
    artifacts.write_json(folder / "cam.json", {"summary": {"test": {"has_regions": False, "images_scored": 0}}})
    t = parse_thresholds({"gated": ["imagenet-all"], "cam": {"energy_share_margin": 0.1}}, "t")
    verdicts = [v for v in judge(tmp_path, t, ["test"]) if v.criterion.startswith("cam_")]
    assert verdicts and all(v.status == "SKIP" for v in verdicts)
    assert "no test set of this run has labelled regions" in verdicts[0].detail


@pytest.mark.slow
def test_the_occlusion_step_on_the_exported_model_is_recorded_and_resumable(tiny_run, capsys):  # noqa: F811
    vdir = _set_profile(
        tiny_run,
        'saliency.methods=["gradcam", "occlusion"]',
        "saliency.occlusion.window=16",
        "saliency.occlusion.stride=8",
        "saliency.sanity_images=2",
    )
    export_variant(vdir)
    occ = variant_blackbox(vdir, "occlusion")
    on_disk = json.loads((vdir / "occlusion.json").read_text())
    assert on_disk["inputs"]["method"] == "occlusion" and on_disk["inputs"]["params"]["window"] == 16
    assert on_disk["passes_per_image"] == pytest.approx(3 * 3 + 1 + 1)
    coco = on_disk["summary"]["test_coco"]
    assert coco["images_scored"] == 2 and 0 <= coco["energy_share_mean"] <= 1 and coco["energy_chance_mean"] > 0
    assert occ["sanity"]["randomised"] and occ["sanity"]["maps"] == 3
    pngs = sorted(p.relative_to(vdir).as_posix() for p in (vdir / "occlusion").rglob("*.png"))
    assert "occlusion/test_coco/a.png" in pngs and "occlusion/test_plain/bayes/e.png" in pngs
    assert not [p for p in vdir.iterdir() if p.name.startswith(".cam-")]  # staging and randomised model removed
    stamp = (vdir / "occlusion.json").stat().st_mtime_ns
    variant_blackbox(vdir, "occlusion")
    assert (vdir / "occlusion.json").stat().st_mtime_ns == stamp and "current, skipping" in capsys.readouterr().err
    _set_profile(
        tiny_run,
        'saliency.methods=["gradcam", "occlusion"]',
        "saliency.occlusion.window=8",
        "saliency.occlusion.stride=8",
        "saliency.sanity_images=2",
    )
    redone = variant_blackbox(vdir, "occlusion")  # other parameters: stale, redone without --force
    assert redone["passes_per_image"] == pytest.approx(4 * 4 + 1 + 1)


@pytest.mark.slow
def test_the_steps_use_the_test_sets_given_instead_of_decoding_them(tiny_run, monkeypatch, capsys):  # noqa: F811
    vdir = _set_profile(
        tiny_run,
        'saliency.methods=["gradcam", "occlusion"]',
        "saliency.occlusion.window=16",
        "saliency.occlusion.stride=8",
        "saliency.sanity=false",
    )
    export_variant(vdir)
    cam_variant(vdir)
    variant_blackbox(vdir, "occlusion")
    config = artifacts.read_json(vdir / "config.json")
    tests = {  # what a job decodes once and hands to every step
        split: load_test(Path(config["data_root"]), split, config["classes"], max_short_side=working_short_side(32))
        for split in ("test_coco", "test_plain")
    }
    capsys.readouterr()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a test set was decoded again")

    monkeypatch.setattr(testsets, "load_test", no_decoding)  # the decoder behind the steps' load_test_sets
    cam_variant(vdir, tests=tests)
    variant_blackbox(vdir, "occlusion", tests=tests)
    err = capsys.readouterr().err
    assert "cam.json is current" in err and "occlusion.json is current" in err
