"""Exact and perceptual copies: sha256 of each file's bytes (exact duplicate files), and imagehash's perceptual hash
(pHash, 64 bits) of each decoded image and of its mirror image, so a flipped copy is found too."""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
import torch
from PIL import Image, ImageOps

HASH_BITS = 64


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 3 x H x W tensor as an RGB PIL image (its three planes merged by Pillow: no transposed copy)."""
    planes = image.numpy()
    return Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(planes[c])) for c in range(3)])


def phash_pair(image: torch.Tensor | Image.Image) -> tuple[str, str]:
    """(pHash of the image, pHash of its mirror image) as 16-digit hex strings."""
    im = image if isinstance(image, Image.Image) else to_pil(image)
    return str(imagehash.phash(im)), str(imagehash.phash(ImageOps.mirror(im)))


def _bits(hexes: Sequence[str]) -> np.ndarray:
    """N x 64 booleans of hex hashes (imagehash's own bit order)."""
    if not hexes:
        return np.zeros((0, HASH_BITS), dtype=bool)
    return np.stack([imagehash.hex_to_hash(h).hash.reshape(-1) for h in hexes])


def distances(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """len(a) x len(b) Hamming distances (bits) between hex hashes."""
    x, y = _bits(a).astype(np.int32), _bits(b).astype(np.int32)
    return x @ (1 - y).T + (1 - x) @ y.T


def mirrored_distances(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]]) -> np.ndarray:
    """len(a) x len(b) distances between images given as (hash, mirror hash): the smaller of the straight and the
    mirrored comparison, so an image and its mirror are 0 bits apart."""
    straight = distances([h for h, _ in a], [h for h, _ in b])
    mirror = distances([m for _, m in a], [h for h, _ in b])
    return np.minimum(straight, mirror)


def groups_of_equal(keys: Sequence[str]) -> list[list[int]]:
    """Indices of the entries sharing a key (each group of 2 or more), in order of first appearance."""
    by: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by.setdefault(k, []).append(i)
    return [g for g in by.values() if len(g) > 1]
