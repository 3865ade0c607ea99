"""A model's spec applied: photos in, the model's input out (`prepare`, `to_model`), its output read back as
probabilities in dataset class order (`make_forward`), and saliency maps taken back onto the photo (`map_to_image`).

The pipeline, with the canonical array in the middle (float32 N x 3 x H x W, RGB in [0, 1], at the model's size --
exactly what harness evaluates its own exports on):

    photos (uint8 3 x h x w) --prepare--> canonical --to_model--> model input --session--> output
                                                                          make_forward: probabilities, dataset order
    saliency over the model input (H x W) --map_to_image--> map over the photo (h x w)

Saliency methods perturb the canonical array; ``make_forward`` applies ``to_model`` to every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from harness.data import Sample, resize_batch
from harness.spec import SRC_DEFAULT, ModelSpec, SpecError
from harness.stats import softmax

ROW_SUM_TOL = 1e-3  # probabilities: rows >= 0 summing to 1 within this
_NP = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
PREDICT_BATCH = 16  # photos prepared and run at a time by `predict`


class NonFiniteOutput(SpecError):
    """The model's output holds NaN or infinite values; `rows` are the offending rows of the batch."""

    def __init__(self, message: str, rows: tuple[int, ...]):
        super().__init__(message)
        self.rows = rows


# --- images in, model input out -------------------------------------------------------------------------------------


def crop_window(h: int, w: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """shorter-side-crop geometry: (rh, rw, top, left): the photo h x w is resized to rh x rw (aspect kept, the
    smallest such size covering H x W) and the window [top:top+H, left:left+W] of it is the model's input."""
    H, W = size
    scale = max(H / h, W / w)
    rh, rw = max(H, int(round(h * scale))), max(W, int(round(w * scale)))
    return rh, rw, (rh - H) // 2, (rw - W) // 2


def prepare(spec: ModelSpec, images: Sequence[torch.Tensor]) -> np.ndarray:
    """uint8 3 x h x w photos -> canonical float32 (N, 3, H, W), RGB in [0, 1], at the model's size. "stretch" is
    bit-identical to what harness evaluates its exports on (`resize_batch(images, S).float() / 255`)."""
    H, W = spec.size
    if len(images) == 0:
        return np.zeros((0, 3, H, W), np.float32)
    if spec.resize == "stretch":
        if H == W:
            batch = resize_batch(images, H)
        else:
            batch = torch.stack([TF.resize(im, [H, W], antialias=True) for im in images])
    else:
        out = []
        for im in images:
            rh, rw, top, left = crop_window(int(im.shape[-2]), int(im.shape[-1]), (H, W))
            out.append(TF.resize(im, [rh, rw], antialias=True)[:, top : top + H, left : left + W])
        batch = torch.stack(out)
    return batch.float().div_(255).numpy()


def to_model(spec: ModelSpec, canonical: np.ndarray) -> np.ndarray:
    """Canonical (N, 3, H, W) RGB [0, 1] float32 -> the array the model takes: channel order, value range (uint8:
    round(x * 255) clipped to 0..255), (x - mean) / std, dtype, layout. A harness export's spec returns the canonical
    array itself (float32, contiguous), so check feeds exactly what harness evaluates with."""
    x = np.asarray(canonical, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"canonical batch must be N x 3 x H x W, got shape {list(x.shape)}")
    if spec.channels == "BGR":
        x = x[:, ::-1]
    if spec.dtype == "uint8":
        x = np.clip(np.rint(x * np.float32(255)), 0, 255).astype(np.uint8)
    else:
        if spec.value_range == "0..255":
            x = x * np.float32(255)
        if spec.mean is not None or spec.std is not None:
            mean = np.asarray(spec.mean or (0.0, 0.0, 0.0), np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(spec.std or (1.0, 1.0, 1.0), np.float32).reshape(1, 3, 1, 1)
            x = (x - mean) / std
        x = x.astype(_NP[spec.dtype], copy=False)
    if spec.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x)


def _resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float64))[None, None]
    return torch.nn.functional.interpolate(
        t, size=hw, mode="bilinear", align_corners=False, antialias=hw[0] < m.shape[0] or hw[1] < m.shape[1]
    )[0, 0].numpy()


def map_to_image(spec: ModelSpec, saliency: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """An (H, W) map over the model input -> an (h, w) float64 map over the photo the input was prepared from.
    stretch: bilinear resize back; shorter-side-crop: resized into the crop window, zeros outside it (the model never
    saw those pixels)."""
    m = np.asarray(saliency, dtype=np.float64)
    if m.shape != tuple(spec.size):
        raise ValueError(f"saliency map has shape {list(m.shape)}, expected the model input size {list(spec.size)}")
    h, w = int(image_hw[0]), int(image_hw[1])
    if spec.resize == "stretch":
        return _resize_map(m, (h, w))
    rh, rw, top, left = crop_window(h, w, spec.size)
    H, W = spec.size
    r0, r1 = int(round(top * h / rh)), int(round((top + H) * h / rh))
    c0, c1 = int(round(left * w / rw)), int(round((left + W) * w / rw))
    out = np.zeros((h, w), np.float64)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = _resize_map(m, (r1 - r0, c1 - c0))
    return out


def make_forward(
    session, spec: ModelSpec, dataset_classes: Sequence[str], batch: int = 32
) -> Callable[[np.ndarray], np.ndarray]:
    """A forward function: canonical batch (N, 3, H, W) -> float32 probabilities (N, len(dataset_classes)), columns in
    DATASET class order. Logits are softmaxed; "probabilities" outputs are checked on the first call (rows >= 0,
    summing to 1 within 1e-3), and so are logits whose kind was only defaulted (they must not already be
    probabilities). Runs in batches of `batch` (of the graph's static batch size when it has one; the last one is
    then padded). Any row of NaN or infinite values, in any call, raises NonFiniteOutput (its `rows`)."""
    order = [spec.classes.index(c) for c in dataset_classes]
    if len(set(order)) != len(spec.classes):
        raise SpecError(f"classes = {list(spec.classes)} are not the dataset's classes {list(dataset_classes)}")
    fixed = next(
        (
            i.shape[0]
            for i in session.get_inputs()
            if i.name == spec.input and i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0
        ),
        None,
    )
    step = int(fixed or max(1, int(batch)))
    checked = [False]

    def run(x: np.ndarray) -> np.ndarray:
        n = len(x)
        if fixed and n < fixed:
            x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)], axis=0)
        y = np.asarray(session.run([spec.output], {spec.input: to_model(spec, x)})[0])
        return y.reshape(len(y), -1)[:n]

    def forward(canonical: np.ndarray) -> np.ndarray:
        canonical = np.asarray(canonical, dtype=np.float32)
        if len(canonical) == 0:
            return np.zeros((0, len(order)), np.float32)
        y = np.concatenate([run(canonical[i : i + step]) for i in range(0, len(canonical), step)], axis=0)
        y = y.astype(np.float64)
        if y.ndim == 2 and y.shape[1] == len(spec.classes):  # a wrong width is _check_output's to say
            rows = np.flatnonzero(~np.isfinite(y).all(axis=1))
            if len(rows):  # every call: a NaN row must never become class 0 (argmax) or a saliency score
                raise NonFiniteOutput(
                    f"output {spec.output!r} holds NaN or infinite values for {len(rows)} of {len(y)} inputs; "
                    f"check the input spec (dtype, value_range, mean/std) and the model",
                    tuple(int(r) for r in rows),
                )
        if not checked[0]:
            _check_output(spec, y)
            checked[0] = True
        p = softmax(y, dtype=None) if spec.output_kind == "logits" else y
        return p[:, order].astype(np.float32)

    return forward


def predict(
    forward: Callable[[np.ndarray], np.ndarray],
    spec: ModelSpec,
    samples: Sequence[Sample],
    split: str,
    batch: int = PREDICT_BATCH,
) -> np.ndarray:
    """Probabilities (N, classes) in dataset class order of the photos of `samples`, prepared and run `batch` at a
    time (never the whole test set at the model's size at once). Every image is checked: those whose output is NaN
    or infinite are a SpecError naming them (never an argmax of NaN, read as the first class)."""
    out: list[np.ndarray] = []
    bad: list[str] = []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        try:
            out.append(forward(prepare(spec, [s.image for s in chunk])))
        except NonFiniteOutput as exc:
            bad += [chunk[r].name for r in exc.rows]
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise SpecError(
            f"output {spec.output!r} is NaN or infinite for {len(bad)} of {len(samples)} images of {split}: "
            f"{shown}; such an image cannot be scored. Check the input spec (dtype, value_range, mean/std) and the "
            f"model on these images"
        )
    return np.concatenate(out, axis=0) if out else np.zeros((0, len(spec.classes)), np.float32)


def _check_output(spec: ModelSpec, y: np.ndarray) -> None:
    where = spec.sources.get("output_kind", SRC_DEFAULT)
    if y.shape[1] != len(spec.classes):
        raise SpecError(
            f"output {spec.output!r} gives {y.shape[1]} columns, but classes lists {len(spec.classes)} "
            f"names ({spec.sources.get('classes', '?')}); the model does not classify these classes"
        )
    if not np.all(np.isfinite(y)):
        raise SpecError(
            f"output {spec.output!r} holds NaN or infinite values; check the input spec (dtype, "
            f"value_range, mean/std) and the model"
        )
    sums = y.sum(axis=1)
    looks = bool(np.all(y >= 0) and np.all(np.abs(sums - 1) <= ROW_SUM_TOL))
    worst = float(sums[np.argmax(np.abs(sums - 1))])
    if spec.output_kind == "probabilities" and not looks:
        raise SpecError(
            f"{where}: output {spec.output!r} does not look like probabilities (row sums {worst:.4g}"
            f"{', negative values' if np.any(y < 0) else ''}); set output_kind = 'logits'"
        )
    if spec.output_kind == "logits" and looks and where == SRC_DEFAULT and y.shape[1] > 1:
        raise SpecError(
            f"output {spec.output!r} looks like probabilities (every row >= 0 and summing to 1), but "
            f"output_kind was not given and defaults to 'logits' (softmax would be applied twice); set "
            f"output_kind = 'probabilities' (or 'logits' to force it)"
        )
