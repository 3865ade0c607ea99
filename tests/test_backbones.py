"""Backbone registry: shapes, freezing, and the offline ImageNet weight-loading path for VGG16."""

import pytest
import torch

from harness.backbones import BACKBONES, build_classifier, set_trainable, vgg16_weights_file
from harness.checkpoints import WeightsUnavailable


@pytest.fixture(scope="session")
def vgg16_checkpoint(tmp_path_factory):
    """A generated (not ImageNet!) torchvision VGG16 state dict, saved under torchvision's cache file name."""
    from torchvision.models import vgg16

    torch.manual_seed(123)
    state = vgg16().state_dict()
    hub = tmp_path_factory.mktemp("torch_home") / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path = hub / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state["features.28.weight"].clone()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_classifier_shapes_and_cam_layer(name):
    b = BACKBONES[name]
    model = build_classifier(name, "scratch", 6).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 6)
    layer = model.get_submodule(b.cam_layer)
    seen = {}
    layer.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert seen["shape"][1] == b.channels


def test_vgg16_loads_explicit_weights_file(vgg16_checkpoint):
    path, expected = vgg16_checkpoint
    model = build_classifier("vgg16", "imagenet", 6, weights_file=path)
    assert torch.equal(model.features[28].weight, expected)


def test_vgg16_loads_from_standard_hub_cache(vgg16_checkpoint, monkeypatch):
    path, expected = vgg16_checkpoint
    monkeypatch.setenv("TORCH_HOME", str(path.parents[2]))
    assert vgg16_weights_file(None) == path
    model = build_classifier("vgg16", "imagenet", 6)  # torchvision's own loading path, reading the cache
    assert torch.equal(model.features[28].weight, expected)


def test_vgg16_offline_without_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable) as err:
        build_classifier("vgg16", "imagenet", 6)
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg and "--weights-file" in msg
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_classifier("vgg16", "imagenet", 6, weights_file=tmp_path / "nope.pth")


def test_vgg16_rejects_foreign_state_dict(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsUnavailable, match="bad.pth: not a torchvision VGG16 state dict"):
        build_classifier("vgg16", "imagenet", 6, weights_file=bad)


def test_scratch_is_random_and_imagenet_lite0_is_loaded():
    a = build_classifier("efficientnet_lite0", "imagenet", 6)
    b = build_classifier("efficientnet_lite0", "imagenet", 6)
    assert torch.equal(a.features.body.conv_stem.weight, b.features.body.conv_stem.weight)
    c = build_classifier("efficientnet_lite0", "scratch", 6)
    assert not torch.equal(a.features.body.conv_stem.weight, c.features.body.conv_stem.weight)


def test_set_trainable_vgg16():
    model = build_classifier("vgg16", "scratch", 6)
    n_head = set_trainable(model, "vgg16", "head")
    assert n_head == sum(p.numel() for p in model.head.parameters())
    set_trainable(model, "vgg16", "block4_conv1")
    assert not model.features[14].weight.requires_grad and model.features[17].weight.requires_grad
    assert model.features[28].weight.requires_grad and model.head[1].weight.requires_grad
    set_trainable(model, "vgg16", "all")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="block9_conv1"):
        set_trainable(model, "vgg16", "block9_conv1")


def test_set_trainable_lite0_stage():
    model = build_classifier("efficientnet_lite0", "scratch", 6)
    set_trainable(model, "efficientnet_lite0", "blocks.5")
    body = model.features.body
    assert not body.blocks[4][0].conv_pw.weight.requires_grad
    assert body.blocks[5][0].conv_pw.weight.requires_grad and body.conv_head.weight.requires_grad
