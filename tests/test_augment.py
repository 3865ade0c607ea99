"""Augmentation levels: property tests (hypothesis) on the real transforms.v2 pipelines."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import v2

from harness.augment import LEVELS, AugmentParams, batch_transform, image_transform

sizes = st.integers(8, 96)


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


@settings(max_examples=40, deadline=None)
@given(size=sizes, level=st.sampled_from(sorted(LEVELS)), seed=st.integers(0, 10_000))
def test_shape_and_dtype_preserved(size, level, seed):
    torch.manual_seed(seed)
    params = AugmentParams(zoom_out=2.5, crop_scale=(0.35, 1.0))
    out = image_transform(LEVELS[level], params, size)(_image(size, size, seed))
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


@settings(max_examples=30, deadline=None)
@given(h=sizes, w=sizes, seed=st.integers(0, 10_000))
def test_none_is_identity_after_scaling(h, w, seed):
    x = _image(h, w, seed)
    out = image_transform(LEVELS["none"], AugmentParams(), h)(x)
    assert torch.allclose(out, x.float() / 255, atol=1e-7, rtol=0)


@settings(max_examples=30, deadline=None)
@given(h=sizes, w=sizes, seed=st.integers(0, 10_000))
def test_flips_are_involutions(h, w, seed):
    x = _image(h, w, seed)
    for flip in (v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0)):
        once = flip(x)
        assert torch.equal(flip(once), x)
        assert h * w == 1 or not torch.equal(once, x) or torch.equal(once, x.flip(-1)) or torch.equal(once, x.flip(-2))


@settings(max_examples=40, deadline=None)
@given(size=st.integers(16, 96), seed=st.integers(0, 10_000))
def test_erased_area_within_bounds(size, seed):
    """Erase a constant image with the level's RandomErasing settings and measure the erased share."""
    params = AugmentParams()
    torch.manual_seed(seed)
    erase = v2.RandomErasing(p=1.0, scale=params.erase_scale, ratio=params.erase_ratio, value=-1.0)
    out = erase(torch.zeros(3, size, size))
    share = (out[0] == -1).float().mean().item()
    lo, hi = params.erase_scale
    # integer rounding of the erased rectangle's sides allows a small slack at small sizes
    slack = 2.0 / size + 1.0 / size**2 * 4
    assert share == 0.0 or lo - slack <= share <= hi + slack
    assert torch.all((out == -1).all(0) | (out == 0).all(0))  # the same rectangle on every channel


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 8), classes=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_mixup_targets_are_convex_combinations(n, classes, seed):
    torch.manual_seed(seed)
    images = torch.rand(n, 3, 16, 16)
    labels = torch.randint(0, classes, (n,))
    mixed, targets = batch_transform(LEVELS["mixup"], AugmentParams(), classes)(images, labels)
    assert mixed.shape == images.shape and targets.shape == (n, classes)
    assert torch.allclose(targets.sum(1), torch.ones(n))
    assert (targets >= 0).all() and (targets <= 1).all()
    # v2.MixUp mixes each sample with its neighbour (roll by one) using one weight lam for images and targets
    rolled, diff = images.roll(1, 0), images - images.roll(1, 0)
    if diff.abs().sum() > 0:
        lam = ((mixed - rolled) * diff).sum() / (diff * diff).sum()
        assert 0 <= lam <= 1
        assert torch.allclose(mixed, lam * images + (1 - lam) * rolled, atol=1e-5)
        onehot = torch.nn.functional.one_hot(labels, classes).float()
        assert torch.allclose(targets, lam * onehot + (1 - lam) * onehot.roll(1, 0), atol=1e-5)


def test_non_mixup_levels_give_one_hot():
    labels = torch.tensor([0, 2, 1])
    _, t = batch_transform(LEVELS["usual"], AugmentParams(), 3)(torch.rand(3, 3, 8, 8), labels)
    assert torch.equal(t, torch.eye(3)[labels])


@pytest.mark.parametrize(
    "name, usual, mixup", [("none", False, False), ("usual", True, False), ("mixup", False, True), ("all", True, True)]
)
def test_registry_levels(name, usual, mixup):
    assert (LEVELS[name].usual, LEVELS[name].mixup) == (usual, mixup)
