"""Training precision: the profile's `precision` ("auto" | "fp32" | "bf16") resolved for a device and a backbone.

bf16 here is always torch.autocast (the weights, the optimizer and model.pt stay float32); ONNX export and parity run
in float32 on the saved weights, so the exported model does not depend on the training precision.

"auto" picks bf16 only where it is fast:
- CUDA: when torch.cuda.is_bf16_supported() (tensor cores run it for every backbone; the harness trained CUDA in bf16
  autocast before this field existed);
- CPU: when the processor has AMX or AVX512-BF16 (cpu_bf16_flags) AND the backbone's registry entry says bf16
  autocast was measured faster on such a CPU at the profile's image size (Backbone.cpu_bf16_min_size: VGG16 from
  224 px, EfficientNet-Lite0 never; the figures are in harness/backbones.py, benchmarks/test_speedups.py measures
  them). Elsewhere bf16 on a CPU is emulated and slower.
The resolved precision is recorded in run.json and in each model's config.json; it is one of the training inputs, so a
model trained in another precision is stale (harness.provenance.train_inputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from harness.backbones import get_backbone
from harness.validate import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
FP32, BF16 = "fp32", "bf16"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of a CPU whose bf16 matmuls/convs are native


@dataclass(frozen=True)
class Precision:
    """What a training runs in: `resolved` ("fp32" | "bf16"), what the profile asked for and why."""

    requested: str
    resolved: str
    reason: str

    @property
    def autocast(self) -> bool:
        return self.resolved == BF16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The CPU_BF16_FLAGS this machine's CPU reports (empty where /proc/cpuinfo is absent: not Linux, or unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_fast(device: torch.device) -> tuple[bool, str]:
    """(whether `device` runs bf16 autocast natively, the evidence in words)."""
    if device.type == "cuda":
        ok = bool(torch.cuda.is_bf16_supported())
        return ok, f"torch.cuda.is_bf16_supported() is {ok}"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, f"the CPU has {', '.join(flags)} ({torch.backends.cpu.get_cpu_capability()})"
        return False, f"the CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"
    return False, f"no bf16 rule for device {device.type!r}"


def resolve(requested: str, backbone: str, device: torch.device, image_size: int) -> Precision:
    """The precision a training of `backbone` at `image_size` px on `device` runs in; ConfigError for bf16 asked of a
    GPU without it."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision = {requested!r} must be one of {list(PRECISIONS)}")
    fast, evidence = bf16_fast(device)
    if requested == FP32:
        return Precision(requested, FP32, "asked for (precision = 'fp32')")
    if requested == BF16:
        if device.type == "cuda" and not fast:
            raise ConfigError(
                f"precision = 'bf16' but this GPU does not run bfloat16 ({evidence}); use --set precision=auto "
                f"or --set precision=fp32"
            )
        note = "" if fast else f"; slow here: {evidence}"
        return Precision(requested, BF16, f"asked for (precision = 'bf16'){note}")
    if not fast:
        return Precision(requested, FP32, f"auto: {evidence}")
    least = get_backbone(backbone).cpu_bf16_min_size
    if device.type == "cpu" and (least is None or image_size < least):
        at = "at any size" if least is None else f"below {least} px"
        slower = f"{backbone} measured no faster in bf16 on such a CPU {at} (registry)"
        return Precision(requested, FP32, f"auto: {evidence}, but {slower}")
    why = "" if device.type == "cuda" else f" and {backbone} measured faster in bf16 there from {least} px (registry)"
    return Precision(requested, BF16, f"auto: {evidence}{why}")


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision | None) -> Iterator[None]:
    """bf16 autocast on `device` when `precision` resolved to bf16; otherwise nothing changes (float32)."""
    enabled = precision is not None and precision.autocast
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
        yield
