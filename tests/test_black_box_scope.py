"""saliency.black_box_scope: the black-box saliency methods (occlusion, RISE: hundreds of onnxruntime passes a photo,
as many again for their sanity check) for every trained variant ("all") or only for the gated ones ("gated"; the
cpu profile). A variant that is not gated keeps Grad-CAM; its black-box criteria are SKIP, saying why; a gated
variant without the evidence is an ERROR, as any missing evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import artifacts
from harness.config import load_profile
from harness.rundir import STEP_OUTPUTS, complete_jobs, protocol_black_box
from harness.saliency.settings import parse_saliency
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import ERROR, SKIP, judge
from tests.test_trust import _evidence


def test_the_scope_is_validated_at_the_edge():
    s = parse_saliency({"methods": ["gradcam", "occlusion"], "black_box_scope": "gated"}, "p.toml")
    assert s.black_box_scope == "gated" and s.black_box == ("occlusion",)
    assert parse_saliency({"methods": ["occlusion", "gradcam"]}, "p.toml").black_box_scope == "all"
    assert parse_saliency(s.to_dict(), "run.json") == s  # the recorded form reads back the same
    with pytest.raises(ConfigError, match=r"p\.toml.*saliency\.black_box_scope.*'gate'.*\['all', 'gated'\]"):
        parse_saliency({"black_box_scope": "gate"}, "p.toml")
    with pytest.raises(ConfigError, match="black_box_scope"):
        parse_saliency({"black_box_scope": True}, "p.toml")


def test_the_bundled_profiles_scope():
    assert load_profile("cpu").saliency.black_box_scope == "gated"  # the 25-minute matrix (issue 25)
    assert load_profile("full").saliency.black_box_scope == "all"


def _proto(scope: str | None, gated: list[str], methods=("gradcam", "occlusion", "rise")) -> dict:
    saliency = {"methods": list(methods)} | ({"black_box_scope": scope} if scope else {})
    return {"profile": {"backbone": "vgg16", "saliency": saliency}, "thresholds": {"gated": gated}}


@pytest.mark.parametrize(
    ("scope", "gated", "variant", "expected"),
    [
        ("gated", ["imagenet-all"], "imagenet-all", ("occlusion", "rise")),
        ("gated", ["imagenet-all"], "scratch-all", ()),
        ("gated", ["vgg16-scratch-all"], "scratch-all", ("occlusion", "rise")),  # backbone-qualified entry
        ("gated", ["efficientnet_lite0-scratch-all"], "scratch-all", ()),  # another backbone's entry
        ("gated", ["*"], "scratch-none", ("occlusion", "rise")),
        ("gated", [], "imagenet-all", ()),
        ("all", ["imagenet-all"], "scratch-all", ("occlusion", "rise")),
        (None, ["imagenet-all"], "scratch-all", ("occlusion", "rise")),  # a run.json from before the field
    ],
)
def test_the_protocol_says_which_variants_get_black_box_maps(scope, gated, variant, expected):
    assert protocol_black_box(_proto(scope, gated))(variant) == expected


def test_a_job_is_complete_without_the_maps_its_variant_does_not_get(tmp_path):
    for variant in ("imagenet-all", "scratch-all"):
        d = tmp_path / f"vgg16-{variant}-s0"
        d.mkdir()
        for f in STEP_OUTPUTS:
            (d / f).write_text("{}")
    jobs = [("imagenet-all", 0), ("scratch-all", 0)]
    per_variant = protocol_black_box(_proto("gated", ["imagenet-all"], ("gradcam", "occlusion")))
    assert complete_jobs(tmp_path, "vgg16", jobs, per_variant) == {("scratch-all", 0)}  # the gated one lacks its map
    (tmp_path / "vgg16-imagenet-all-s0" / "occlusion.json").write_text("{}")
    assert complete_jobs(tmp_path, "vgg16", jobs, per_variant) == set(jobs)
    assert complete_jobs(tmp_path, "vgg16", jobs, ("occlusion",)) == {("imagenet-all", 0)}  # every variant's


def _occlusion_verdicts(run: Path, scope: str | None) -> dict[str, list]:
    t = parse_thresholds({"gated": ["imagenet-all"], "occlusion": {"energy_share_margin": 0.1}}, "t")
    saliency = {"methods": ["gradcam", "occlusion"]} | ({"black_box_scope": scope} if scope else {})
    out: dict[str, list] = {}
    for v in judge(run, t, ["test_difficult"], run_profile={"saliency": saliency}):
        if v.criterion.startswith("occlusion_"):
            out.setdefault(v.variant, []).append(v)
    return out


def test_a_variant_not_gated_is_skipped_by_design_and_a_gated_one_must_have_its_maps(tmp_path):
    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=1.0)
    _evidence(tmp_path, "vgg16", "scratch-all", 0, soft=0.5)
    by = _occlusion_verdicts(tmp_path, "gated")
    assert by["scratch-all"] and all(v.status == SKIP and not v.gated for v in by["scratch-all"])
    assert "computed for gated models only (saliency.black_box_scope = 'gated')" in by["scratch-all"][0].detail
    gated = [v for v in by["imagenet-all"] if v.criterion == "occlusion_energy"]  # the criterion with a threshold
    assert len(gated) == 1 and gated[0].status == ERROR and gated[0].gated  # missing evidence of a gated model
    assert "occlusion.json missing" in gated[0].detail
    assert {v.criterion for v in by["scratch-all"]} == {"occlusion_energy", "occlusion_pointing"}
    rise = [
        v
        for v in judge(
            tmp_path,
            parse_thresholds({"gated": ["imagenet-all"]}, "t"),
            ["test_difficult"],
            run_profile={"saliency": {"methods": ["gradcam", "occlusion"], "black_box_scope": "gated"}},
        )
        if v.criterion.startswith("rise_")
    ]
    assert rise == []  # a method the run does not compute at all is not reported, skipped or otherwise
    # every variant was meant to have them: missing maps of the ablation are an ERROR too, never a skip
    for scope in ("all", None):
        ablation = _occlusion_verdicts(tmp_path, scope)["scratch-all"]
        assert [v for v in ablation if v.criterion == "occlusion_energy"][0].status == ERROR


def test_maps_an_ablation_has_anyway_are_judged(tmp_path):
    _evidence(tmp_path, "vgg16", "scratch-all", 0, soft=0.5)
    summary = {"test_difficult": {"has_regions": True, "images_scored": 20}}
    artifacts.write_json(tmp_path / "vgg16-scratch-all-s0" / "occlusion.json", {"summary": summary})
    ablation = _occlusion_verdicts(tmp_path, "gated")["scratch-all"]
    energy = [v for v in ablation if v.criterion == "occlusion_energy"]
    assert len(energy) == 1 and energy[0].status != SKIP  # present evidence is read, not ignored
    assert not any("gated models only" in v.detail for v in ablation)


@pytest.mark.slow
def test_a_job_of_a_variant_not_gated_computes_no_black_box_maps(tiny_root, tmp_path):
    from harness.executors import DONE, Job, run_job
    from tests.test_decode_once import tiny_job_context
    from tests.test_trust import TINY

    profile = load_profile("smoke", [*TINY, 'saliency.methods=["gradcam", "occlusion"]', "robustness.full=false"])
    ctx = tiny_job_context(tiny_root, tmp_path, profile, black_box=("occlusion",), black_box_variants=("scratch-all",))
    assert ctx.black_box_for("scratch-none") == () and ctx.saliency_for("scratch-none") == ("gradcam",)
    result = run_job(ctx, Job("scratch-none", 0))
    assert result.status == DONE, result.traceback
    vdir = ctx.run_dir / "vgg16-scratch-none-s0"
    assert (vdir / "cam.json").is_file() and not (vdir / "occlusion.json").exists()
    faithfulness = artifacts.read_json(vdir / "faithfulness.json")
    assert set(faithfulness["methods"]) == {"cam"}  # no "occlusion maps missing" entry to judge as an error
