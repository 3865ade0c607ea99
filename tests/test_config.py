"""Profiles: every built-in profile validates; overrides apply; bad fields fail naming the field."""

import pytest

from harness.config import apply_overrides, builtin_profiles, load_profile, parse_override
from harness.validate import ConfigError
from harness.variants import split_variant


@pytest.mark.parametrize("name", ["smoke", "cpu", "full"])
def test_builtin_profiles_validate(name):
    p = load_profile(name)
    assert p.name == name
    assert set(p.variants) == {f"{i}-{l}" for i in ("scratch", "imagenet") for l in ("none", "usual", "mixup", "all")}
    assert p.phases["imagenet"][0].train_from == "head"


def test_builtin_list():
    assert {"smoke", "cpu", "full"} <= set(builtin_profiles())


def test_override_typed_values():
    p = load_profile("cpu", ["image_size=96", "augment.zoom_out=2.0", "seeds=[1, 2]", "backbone=vgg16"])
    assert p.image_size == 96 and p.augment.zoom_out == 2.0 and p.seeds == (1, 2) and p.backbone == "vgg16"
    assert "overrides" in p.source


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("device=cpu") == (["device"], "cpu")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=true"]) == {"a": {"b": 1, "c": True}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


@pytest.mark.parametrize(
    "override, match",
    [
        ("backbone=resnet", "backbone = 'resnet'"),
        ("levels=['none', 'heavy']", "levels\\[1\\] = 'heavy'"),
        ("batch_size=1", "batch_size"),
        ("bogus=1", "unknown keys \\['bogus'\\]"),
        ("augment.erase_p=2.0", "erase_p"),
        ("augment.crop_scale=[0.9, 0.1]", "crop_scale"),
    ],
)
def test_invalid_fields_named(override, match):
    with pytest.raises(ConfigError, match=match):
        load_profile("smoke", [override])


def test_unknown_profile_lists_builtins(tmp_path):
    with pytest.raises(ConfigError, match="built-in profiles"):
        load_profile("nonexistent")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_profile(str(bad))


def test_split_variant():
    assert split_variant("imagenet-all") == ("imagenet", "all")
    with pytest.raises(ConfigError):
        split_variant("pretrained-all")


def test_train_from_must_be_a_stage_of_the_backbone():
    ft = 'phases.imagenet=[{{name="head",epochs=1,train_from="head"}},{{name="ft",epochs=1,train_from="{}"}}]'
    with pytest.raises(
        ConfigError,
        match="train_from = 'block4_conv1' must be 'head', 'all', a named fine-tuning point of efficientnet_lite0",
    ):
        load_profile("full", ["backbone=efficientnet_lite0", ft.format("block4_conv1")])
    p = load_profile("full", ["backbone=efficientnet_lite0", ft.format("blocks.3")])
    assert p.phases["imagenet"][1].train_from == "blocks.3"
    assert load_profile("full", ["backbone=efficientnet_lite0"]).phases["imagenet"][1].train_from == "upper"
