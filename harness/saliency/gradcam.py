"""Grad-CAM maps (Selvaraju et al., 2017) on a backbone's declared layer, and three-panel overlay PNGs."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from harness import artifacts


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"x must be one RGB image, 3 x H x W or 1 x 3 x H x W, got shape {tuple(x.shape)}")
    return x.float()


def _finish(weighted: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """ReLU, bilinear upsampling to `size`, divide by the max; an all-zero map stays zero."""
    cam = F.relu(weighted)[None, None]
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
    # Normalising after the (linear) upsampling instead of before only changes the scale, and makes the peak
    # exactly 1 even when no output pixel centre falls on a feature-map cell centre.
    peak = float(cam.max())
    if not peak > 0.0:  # also catches NaN
        return np.zeros(size, dtype=np.float32)
    return (cam / peak).clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def gradcam_maps(
    model: nn.Module,
    layer_path: str,
    x: torch.Tensor,
    class_indices: Iterable[int] = (),
    size: tuple[int, int] | None = None,
    predicted: bool = False,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One forward pass, one gradient per class: (softmax probabilities, {class index: map}).

    `x` is one image as the model takes it (RGB float in [0, 1], 3 x H x W or 1 x 3 x H x W). Each map is
    float32 `size` (height, width; default x's own size) with values in [0, 1]; with `predicted` the top class's
    map is included too. The activation of `layer_path` (a module path inside `model`, e.g. a Backbone's
    cam_layer) is captured by a forward hook and detached there, so the gradient is taken with respect to exactly
    that tensor whatever the parameters' requires_grad says. Channel weights are the spatial mean of the
    gradient; the weighted sum of channels goes through ReLU and is normalised by its maximum.
    """
    x = _as_batch(x)
    out_size: tuple[int, int] = (int(size[0]), int(size[1])) if size is not None else (int(x.shape[2]), int(x.shape[3]))
    layer = model.get_submodule(layer_path)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{layer_path} returns {type(output).__name__}, not a tensor; pick a conv feature map")
        act = output.detach().requires_grad_(True)
        captured.append(act)
        return act

    was_training = model.training
    # Only the layer's activation needs a gradient: with every parameter frozen for the call, autograd records
    # nothing below the layer (about half the forward cost); the flags are restored afterwards.
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    model.eval()
    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.to(next(model.parameters()).device))
            if not captured:
                raise RuntimeError(f"layer {layer_path} was not called in the forward pass")
            act = captured[-1]
            if act.ndim != 4:
                raise ValueError(f"{layer_path} output has shape {tuple(act.shape)}; Grad-CAM needs N x C x h x w")
            probs = torch.softmax(logits.detach().float(), 1)[0].cpu().numpy()
            classes = ([int(probs.argmax())] if predicted else []) + [int(c) for c in class_indices]
            classes = list(dict.fromkeys(classes))
            maps: dict[int, np.ndarray] = {}
            for n, c in enumerate(classes):
                if not 0 <= c < logits.shape[1]:
                    raise ValueError(f"class index {c} out of range for {logits.shape[1]} classes")
                score = logits[0, c]
                grad = None
                if score.requires_grad:
                    (grad,) = torch.autograd.grad(score, act, retain_graph=n < len(classes) - 1, allow_unused=True)
                if grad is None:  # the score does not depend on the layer at all
                    maps[c] = np.zeros(out_size, dtype=np.float32)
                    continue
                weights = grad[0].float().mean(dim=(1, 2))  # one weight per channel: the mean gradient
                maps[c] = _finish((weights[:, None, None] * act[0].detach().float()).sum(0), out_size)
    finally:
        handle.remove()
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
    return probs, maps


def gradcam(
    model: nn.Module, layer_path: str, x: torch.Tensor, class_idx: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Grad-CAM map of class `class_idx` for one image: float32 (height, width) in [0, 1] (see gradcam_maps)."""
    return gradcam_maps(model, layer_path, x, [class_idx], size)[1][int(class_idx)]


# --- overlays --------------------------------------------------------------------------------------------------------

_REGION_COLOURS = ("#00e5ff", "#ffffff", "#ff00ff", "#76ff03", "#ffea00", "#ff9100")


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    a = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    return a.astype(np.uint8)


def jet_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The reference's superimposition: jet colours of the map blended over the photo (float H x W x 3 in [0, 1])."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image / 255.0 + alpha * heat, 0, 1)


def save_overlay(
    path: Path,
    image: torch.Tensor | np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    regions: Sequence = (),
    title: str = "",
    dpi: int = 72,
) -> Path:
    """Write the experiment's three panels (heat map, jet overlay, original) as one PNG, atomically.

    `rows` are (caption, map) pairs, one row of panels each (the original photo only in the first row);
    `regions` (harness.data.Region) are drawn as polygons (their box when a region has no polygon) on the overlay
    and the original, labelled with their class. Rendered by matplotlib's Agg canvas, then stored as a dithered
    256-colour PNG, which keeps a 640 x 480 photo's panels under about 100 kB at the default DPI.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # a bare Figure + Agg canvas: pyplot (and its global state) stays out
    from matplotlib.patches import Polygon, Rectangle

    img = _hwc(image)
    h, w = img.shape[:2]
    colour: dict[str, str] = {}
    for r in regions:
        colour.setdefault(r.label, _REGION_COLOURS[len(colour) % len(_REGION_COLOURS)])
    panel_w = 3.6
    fig = Figure(figsize=(3 * panel_w, panel_w * h / w * len(rows) + 0.35 * (len(rows) + 1)), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for n, ((caption, cam), ax) in enumerate(zip(rows, axes)):
        for a in ax:
            a.set_axis_off()
        if not cam.max() > 0:
            caption += " (zero map)"
        ax[0].imshow(cam, cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
        ax[0].set_title(f"{caption}: heat map", fontsize=10, parse_math=False)
        ax[1].imshow(jet_overlay(img, cam))
        ax[1].set_title(f"{caption}: superimposed", fontsize=10, parse_math=False)
        drawn = [ax[1]]
        if n == 0:
            ax[2].imshow(img)
            ax[2].set_title("original", fontsize=10, parse_math=False)
            drawn.append(ax[2])
        for a in drawn:
            for r in regions:
                c = colour[r.label]
                if len(r.polygon) >= 3:
                    a.add_patch(Polygon(r.polygon, closed=True, fill=False, edgecolor=c, linewidth=1.5))
                    tx, ty = min(p[0] for p in r.polygon), min(p[1] for p in r.polygon)
                else:
                    x, y, bw, bh = r.bbox
                    a.add_patch(Rectangle((x, y), bw, bh, fill=False, edgecolor=c, linewidth=1.5))
                    tx, ty = x, y
                a.text(
                    max(tx, 0),
                    max(ty, 0),
                    r.label,
                    color="black",
                    fontsize=8,
                    va="top",
                    parse_math=False,
                    bbox={"facecolor": c, "edgecolor": "none", "pad": 1, "alpha": 0.8},
                )
            a.set_xlim(0, w)
            a.set_ylim(h, 0)
    if title:
        fig.suptitle(title, fontsize=11, parse_math=False)
    fig.tight_layout()
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    buf = io.BytesIO()
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT)
    # dithering hides the banding a 256-colour palette leaves in the smooth jet gradients
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(buf, format="png", optimize=True)
    return artifacts.atomic_write_bytes(Path(path), buf.getvalue())
