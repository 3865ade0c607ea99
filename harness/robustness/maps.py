"""The saliency maps a step computed, stored beside its evidence (<evidence>.maps.npz: cam.maps.npz, occlusion...)
for the faithfulness curves to read back: one float16 thumbnail per (test set, image, class), at most THUMB_SIDE px on
its longer side, in the geometry of the model's input (a map over the photo is stretched as the photo is)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from harness import artifacts

THUMB_SIDE = 64
SUFFIX = ".maps.npz"

Key = tuple[str, str, str]  # (test set, image name, class)


def maps_file(evidence: str) -> str:
    """'cam' -> 'cam.maps.npz'."""
    return f"{evidence}{SUFFIX}"


def thumb_shape(h: int, w: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most `side` (aspect kept, never enlarged)."""
    s = min(1.0, side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A map resized to `hw`, bilinear (antialiased when shrinking), float32."""
    a = np.asarray(m, dtype=np.float32)
    if a.shape == tuple(hw):
        return a.copy()
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    shrink = hw[0] < a.shape[0] or hw[1] < a.shape[1]
    out = torch.nn.functional.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0, 0].numpy()


class MapStore:
    """Collects maps in the model input's geometry (`input_hw`: the model's H x W) and writes them as one .npz."""

    def __init__(self, input_hw: tuple[int, int]) -> None:
        self.shape = thumb_shape(int(input_hw[0]), int(input_hw[1]))
        self.keys: list[Key] = []
        self.maps: list[np.ndarray] = []

    def add(self, split: str, image: str, maps: Mapping[str, np.ndarray]) -> None:
        """The maps of one image by class name; each one over the model's input or over the photo (stretched)."""
        for cls, m in sorted(maps.items()):
            self.keys.append((str(split), str(image), str(cls)))
            self.maps.append(resize_map(m, self.shape).astype(np.float16))

    def save(self, path: Path) -> Path:
        buf = io.BytesIO()
        maps = np.stack(self.maps) if self.maps else np.zeros((0, *self.shape), np.float16)
        np.savez_compressed(buf, maps=maps, index=np.array(json.dumps([list(k) for k in self.keys])))
        return artifacts.atomic_write_bytes(Path(path), buf.getvalue())


def load_maps(path: Path) -> dict[Key, np.ndarray]:
    """{(test set, image, class): float32 thumbnail} of a .maps.npz; ValueError naming the file when unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = json.loads(str(z["index"]))
            maps = z["maps"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable maps file ({exc}); rerun the saliency step (--force)") from exc
    if len(keys) != len(maps) or not all(isinstance(k, list) and len(k) == 3 for k in keys):
        raise ValueError(f"{path}: its index does not match its maps; rerun the saliency step (--force)")
    return {(str(k[0]), str(k[1]), str(k[2])): m for k, m in zip(keys, maps)}
