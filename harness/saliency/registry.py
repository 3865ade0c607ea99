"""Every saliency method by name: its report title, evidence file, thresholds key and, for the black-box methods
(occlusion, RISE: numpy only), the computation; the one table every other module reads instead of a name list.

Adding a method is one entry here plus its module. Grad-CAM's computation needs the PyTorch model and runs in its own
step (``harness.saliency.gradcam_step``), so its entry carries none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.saliency import occlusion, rise
from harness.saliency.perturbation import Forward, Method, SaliencyResult, check_image
from harness.validate import ConfigError


@dataclass(frozen=True)
class MethodInfo:
    name: str  # as named in a profile's [saliency] methods
    title: str  # as shown in a report
    evidence: str  # <evidence>.json in a model's folder, its key in report.json and its criterion prefix
    thresholds_key: str  # the [thresholds.<key>] table with its localization rule
    black_box: bool  # runs through onnxruntime on any ONNX model (False: needs the PyTorch model)
    method: Method | None = None  # the black-box computation (None for Grad-CAM)

    def __post_init__(self) -> None:
        if self.black_box != (self.method is not None):
            raise ValueError(f"saliency method {self.name!r}: a black-box method, and only one, has a computation")


GRADCAM = "gradcam"

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(GRADCAM, "Grad-CAM", "cam", "cam", black_box=False),
        MethodInfo(occlusion.NAME, "occlusion", "occlusion", "occlusion", black_box=True, method=occlusion.METHOD),
        MethodInfo(rise.NAME, "RISE", "rise", "rise", black_box=True, method=rise.METHOD),
    )
}
BY_EVIDENCE: dict[str, MethodInfo] = {m.evidence: m for m in METHODS.values()}
# The computations of the black-box methods, by name (registry order).
BLACK_BOX: dict[str, Method] = {m.name: m.method for m in METHODS.values() if m.method is not None}


def method_info(name: str) -> MethodInfo:
    """The entry of a method name (or of its evidence key: 'cam' is Grad-CAM's)."""
    if name in METHODS:
        return METHODS[name]
    if name in BY_EVIDENCE:
        return BY_EVIDENCE[name]
    raise KeyError(f"unknown saliency method {name!r}; known: {sorted(METHODS)}")


def known_methods(black_box: bool | None = None) -> list[str]:
    """Method names in registry order (Grad-CAM first); only the black-box ones (True) or the others (False)."""
    return [m.name for m in METHODS.values() if black_box is None or m.black_box == black_box]


def get_method(name: str) -> Method:
    """The computation of the black-box method ``name``; ConfigError naming it and the known black-box methods."""
    if not isinstance(name, str) or name not in BLACK_BOX:
        raise ConfigError(f"unknown saliency method {name!r}; known methods: {sorted(BLACK_BOX)}")
    return BLACK_BOX[name]


def resolve_params(
    name: str, params: Mapping[str, Any], where: str, *, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The method's defaults overlaid with ``params``, every key and value validated.

    ``size`` = (H, W) of the images, when known, also bounds size-dependent values (occlusion window <= image).
    Unknown keys or bad values raise ConfigError naming ``where``, the key and the value."""
    method = get_method(name)
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{where}: parameters of saliency method {name!r} must be a table of key = value, got {params!r}"
        )
    unknown = sorted(str(k) for k in params if k not in method.defaults)
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {unknown} for saliency method {name!r} (known: {sorted(method.defaults)})"
        )
    merged = {**method.defaults, **params}
    return method.validate(merged, where, size) if method.validate else dict(merged)


def saliency(
    name: str,
    forward: Forward,
    image: np.ndarray,
    targets: Sequence[int],
    params: Mapping[str, Any] | None = None,
    *,
    where: str = "saliency parameters",
) -> SaliencyResult:
    """Maps of ``image`` (float32 (3, H, W) in [0, 1]) for every class in ``targets`` with method ``name``."""
    img = check_image(image)
    resolved = resolve_params(name, params or {}, where, size=(img.shape[1], img.shape[2]))
    return get_method(name).compute(forward, img, targets, **resolved)
