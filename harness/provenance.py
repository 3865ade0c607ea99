"""What each step's artefacts were made from: the inputs that matter, fingerprinted, so a rerun can tell stale from
current; and the versions and machine a step records beside them.

A step records `inputs` (a small JSON-able dict) beside its artefacts; on a rerun it recomputes the same dict and
compares. Training inputs differ -> the run stops (StaleRunError, naming the fields) unless --force; the inputs of
export / evaluate / cam differ -> the step reruns by itself (they are cheap and derived).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision

from harness.backbones import get_backbone
from harness.config import Profile
from harness.precision import cpu_bf16_flags
from harness.validate import ConfigError
from harness.variants import split_variant
from harness.version import __version__

# Profile fields that change what training produces. Everything else (name, thresholds, test sets, the matrix
# itself, device preference) does not change a trained model of a given (backbone, variant, seed).
TRAIN_FIELDS = (
    "backbone",
    "image_size",
    "batch_size",
    "augment",
    "val_fraction",
    "split_seed",
    "oversample",
    "label_smoothing",
    "freeze_bn",
    "tta_hflip",
    "hidden",
    "dropout",
    "probe_interpolation",
)


class StaleRunError(ConfigError):
    """Existing artefacts were made from other inputs than this run's; the message names the fields and what to do."""


def dataset_fingerprint(ds) -> str:
    """sha256 over what a model consumes from a Dataset: class list, sample names, decoded pixels, labels, regions."""
    h = hashlib.sha256()
    h.update(json.dumps([ds.name, list(ds.classes), bool(ds.has_regions)]).encode())
    for s in ds.samples:
        h.update(
            json.dumps(
                [
                    s.name,
                    s.label,
                    sorted(s.acceptable),
                    list(s.image.shape),
                    [[r.label, list(r.bbox), [list(p) for p in r.polygon]] for r in s.regions],
                ]
            ).encode()
        )
        h.update(s.image.contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprints(datasets: Mapping[str, Any]) -> dict[str, str]:
    """{split: fingerprint} for loaded test sets."""
    return {split: dataset_fingerprint(ds) for split, ds in datasets.items()}


def profile_train_fields(profile: Mapping[str, Any] | Profile, init: str) -> dict[str, Any]:
    """The recorded-profile subset that matters for training one init (its own phases only)."""
    d = profile.to_dict() if isinstance(profile, Profile) else dict(profile)
    out = {k: d.get(k) for k in TRAIN_FIELDS}
    out["phases"] = (d.get("phases") or {}).get(init)
    if not any(isinstance(p, Mapping) and p.get("optimizer") == "probe" for p in out["phases"] or []):
        out.pop("probe_interpolation")  # it averages towards a probed model: an init without a probe phase ignores it
    return json.loads(json.dumps(out, default=list))  # tuples -> lists, so recorded and fresh compare equal


def train_inputs(
    profile: Profile, variant: str, seed: int, train_fingerprint: str, weights: str | None, precision: str
) -> dict:
    """What one model is trained from; `precision` is the resolved one ("fp32" | "bf16", harness.precision), so a
    model trained in another precision is stale whatever the profile asked for ("auto" resolves per machine)."""
    init, level = split_variant(variant)
    return {
        "backbone": profile.backbone,
        "variant": variant,
        "seed": int(seed),
        "init": init,
        "level": level,
        "profile": profile_train_fields(profile, init),
        "train_data": train_fingerprint,
        "weights": weights if init == "imagenet" else None,
        "precision": precision,
    }


def weights_identity(backbone: str, init: str, weights_file: Path | None) -> str | None:
    """Where ImageNet weights come from, as recorded: file name and size (not the path, which may move)."""
    if init != "imagenet":
        return None
    if weights_file is not None:
        p = Path(weights_file)
        return f"{p.name} ({p.stat().st_size} bytes)" if p.is_file() else str(p.name)
    return get_backbone(backbone).weights_source


def versions() -> dict[str, str]:
    """The versions of Python, the harness and the libraries that shape a model and its exported file."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "harness": __version__,
        "numpy": np.__version__,
    }


@functools.lru_cache(maxsize=1)
def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (/proc/cpuinfo; else platform.processor(); else "unknown"): figures of the same seed can
    differ by a photo between CPUs, so every run records which one it ran on."""
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_info(device: torch.device) -> dict[str, Any]:
    """The machine a step ran on: device type, platform, CPU model and its bfloat16 flags, torch's CPU threads and the
    GPU's name."""
    info = {
        "type": device.type,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_bf16_flags": list(cpu_bf16_flags()),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def diff(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values: ['image_size: 64 -> 96', ...]."""
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        out: list[str] = []
        for k in sorted(set(recorded) | set(current), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in recorded:
                out.append(f"{key}: (not recorded) -> {_short(current[k])}")
            elif k not in current:
                out.append(f"{key}: {_short(recorded[k])} -> (absent)")
            else:
                out += diff(recorded[k], current[k], key)
        return out
    if recorded != current:
        return [f"{prefix or 'value'}: {_short(recorded)} -> {_short(current)}"]
    return []


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:28] + "..." + s[-28:]


def describe(diffs: Iterable[str], limit: int = 6) -> str:
    diffs = list(diffs)
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more
