"""Augmentation throughput per level (images/s): fit()'s per-image pipeline plus its per-batch step (MixUp or
one-hot), on a batch of the real training images already resized and on the device, as harness.train.fit does."""

from __future__ import annotations

import itertools

import pytest

from harness.augment import LEVELS


@pytest.mark.parametrize("level", list(LEVELS))
def test_augment(benchmark, timer, prepared, sync_device, model_case, level, device):
    import torch

    from harness.augment import batch_transform, image_transform

    backbone, profile = model_case
    data = prepared(profile)
    x, y = data.train_x.to(device), data.train_y.to(device)
    per_image = image_transform(LEVELS[level], profile.augment, profile.image_size)
    per_batch = batch_transform(LEVELS[level], profile.augment, len(data.classes))
    bs = profile.batch_size
    order = list(data.epoch_index)
    starts = itertools.cycle(range(0, len(order) - bs + 1, bs))

    def run():
        idx = torch.as_tensor(order[next(starts) :][:bs], device=device)
        xb = torch.stack([per_image(img) for img in x[idx]])
        xb, target = per_batch(xb, y[idx])
        xb = xb.contiguous(memory_format=torch.channels_last)
        sync_device(device)
        return xb, target

    benchmark.group = f"augment {profile.name} {profile.image_size}px batch {bs}"
    benchmark.extra_info.update(
        level=level,
        profile=profile.name,
        image_size=profile.image_size,
        batch=bs,
        device=device,
        augment=LEVELS[level].description,
    )
    median = timer(benchmark, run)
    if median is not None:
        benchmark.extra_info["images_per_s"] = bs / median
