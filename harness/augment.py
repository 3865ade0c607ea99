"""Registry of augmentation levels and their parameters: a per-image transforms.v2 pipeline plus an optional
per-batch MixUp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentParams:
    """Parameters of the augmentation levels; the level registry decides which of them apply."""

    hflip: bool = True
    vflip: bool = True
    rotation: float = 40.0
    zoom: float = 0.2  # Keras zoom_range: scale drawn from [1 - zoom, 1 + zoom]
    zoom_out: float = 1.0  # extra zoom-out: smallest scale becomes min(1 - zoom, 1 / zoom_out)
    fill: int = 0  # constant fill (0-255) for pixels that affine transforms bring in
    crop_scale: tuple[float, float] = (1.0, 1.0)  # RandomResizedCrop area range; (1, 1) disables it
    erase_p: float = 0.5
    erase_scale: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    mixup_alpha: float = 1.0


@dataclass(frozen=True)
class Level:
    """An augmentation level is data: whether the usual geometric/erasing pipeline and MixUp apply."""

    name: str
    usual: bool
    mixup: bool
    description: str


LEVELS: dict[str, Level] = {
    lvl.name: lvl
    for lvl in (
        Level("none", usual=False, mixup=False, description="no augmentation"),
        Level("usual", usual=True, mixup=False, description="flips, rotation, zoom, random erasing"),
        Level("mixup", usual=False, mixup=True, description="MixUp per batch"),
        Level("all", usual=True, mixup=True, description="usual + MixUp"),
    )
}


def image_transform(level: Level, params: AugmentParams, size: int) -> v2.Compose:
    """Per-image pipeline: uint8 3 x size x size in, float32 in [0, 1] out (normalisation lives in the model)."""
    steps: list[v2.Transform] = []
    if level.usual:
        if params.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if params.vflip:
            steps.append(v2.RandomVerticalFlip())
        low = min(1.0 - params.zoom, 1.0 / params.zoom_out)
        steps.append(v2.RandomAffine(degrees=params.rotation, scale=(low, 1.0 + params.zoom), fill=params.fill))
        if params.crop_scale != (1.0, 1.0):
            steps.append(v2.RandomResizedCrop(size, scale=params.crop_scale, antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if level.usual and params.erase_p > 0:
        steps.append(
            UniformRandomErasing(p=params.erase_p, scale=params.erase_scale, ratio=params.erase_ratio, value="random")
        )
    return v2.Compose(steps)


class UniformRandomErasing(v2.RandomErasing):
    """RandomErasing whose random fill is uniform in the data range [0, 1] (the reference's erasing), not N(0, 1)."""

    def make_params(self, flat_inputs):
        params = super().make_params(flat_inputs)
        if params.get("v") is not None and self.value is None:
            params["v"] = torch.rand_like(params["v"])
        return params


BatchFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_transform(level: Level, params: AugmentParams, num_classes: int) -> BatchFn:
    """Per-batch step: (images, int labels) -> (images, probability targets). MixUp where the level has it."""
    if level.mixup:
        mixup = v2.MixUp(alpha=params.mixup_alpha, num_classes=num_classes)

        def mix(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return mixup(images, labels)

        return mix

    def one_hot(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, F.one_hot(labels, num_classes).to(images.dtype)

    return one_hot
