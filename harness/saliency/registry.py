"""Every saliency method by name: what it is called in a report, where its evidence lives, which thresholds judge it.

The one table other modules read (thresholds, verdicts, the HTML, compare) instead of keeping name tables of their
own. Adding a method is one entry here plus its module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str  # as named in a profile's [saliency] methods
    title: str  # as shown in a report
    evidence: str  # <evidence>.json in a model's folder, its key in report.json and its criterion prefix
    thresholds_key: str  # the [thresholds.<key>] table with its localization rule
    black_box: bool  # runs through onnxruntime on any ONNX model (False: needs the PyTorch model)


GRADCAM = "gradcam"

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(GRADCAM, "Grad-CAM", "cam", "cam", black_box=False),
        MethodInfo("occlusion", "occlusion", "occlusion", "occlusion", black_box=True),
        MethodInfo("rise", "RISE", "rise", "rise", black_box=True),
    )
}
BY_EVIDENCE: dict[str, MethodInfo] = {m.evidence: m for m in METHODS.values()}


def method_info(name: str) -> MethodInfo:
    """The entry of a method name (or of its evidence key: 'cam' is Grad-CAM's)."""
    if name in METHODS:
        return METHODS[name]
    if name in BY_EVIDENCE:
        return BY_EVIDENCE[name]
    raise KeyError(f"unknown saliency method {name!r}; known: {sorted(METHODS)}")
