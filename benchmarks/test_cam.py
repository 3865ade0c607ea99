"""Grad-CAM time per image: harness.saliency.gradcam_step.cam_image (one forward, one gradient per labelled class
and the prediction, maps upsampled to the photo's size, localization scores) over the difficult test photos in turn.
The overlay PNGs (matplotlib) are not included."""

from __future__ import annotations

import itertools


def test_cam(benchmark, timer, make_model, difficult_set, sync_device, model_case, device):
    from harness.backbones import get_backbone
    from harness.saliency.gradcam_step import cam_image

    backbone, profile = model_case
    model = make_model(backbone, profile).eval().to(device)
    layer = get_backbone(backbone).cam_layer
    samples = itertools.cycle(difficult_set.samples)

    def one():
        out = cam_image(
            model, layer, profile.image_size, difficult_set.classes, next(samples), difficult_set.has_regions
        )
        sync_device(device)
        return out

    benchmark.group = f"cam {backbone} {profile.image_size}px"
    benchmark.extra_info.update(
        backbone=backbone, image_size=profile.image_size, device=device, layer=layer, images=len(difficult_set.samples)
    )
    median = timer(benchmark, one)
    if median is not None:
        benchmark.extra_info["seconds_per_image"] = median
        benchmark.extra_info["images_per_s"] = 1 / median
