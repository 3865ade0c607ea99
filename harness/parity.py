"""PyTorch / onnxruntime parity of an exported model, on every test image of every test set of the profile.

Tiers:
- CPU provider: |ort - torch| <= 1e-4 + 1e-3 * |torch| elementwise, and identical top-1. Required.
- CUDA provider (only where a GPU is usable): |ort - torch| <= 1e-2 + 1e-2 * |torch| (cuDNN algorithm choice and TF32
  convolutions change rounding), and identical top-1 except where the reference's top-2 logit margin is below 2e-2
  (a near tie that such rounding may legitimately flip). Required when run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import runtime

PARITY_BATCH = 8

CPU_ATOL, CPU_RTOL = 1e-4, 1e-3
GPU_ATOL, GPU_RTOL = 1e-2, 1e-2
GPU_TIE_MARGIN = 2 * GPU_ATOL


@torch.no_grad()
def torch_logits(module: nn.Module, x: np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    outs = [module(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs, 0)


def compare(
    ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, tie_margin: float = 0.0, names: Sequence[str] = ()
) -> dict[str, Any]:
    """Elementwise |got - ref| <= atol + rtol * |ref| and identical top-1 (except where the reference's top-2 margin
    is below tie_margin). max_rel is over elements with |ref| > atol (relative error of a logit near 0 is noise), so it
    may exceed rtol on a passing comparison whose absolute differences are below atol; max_tolerance_used is the
    single number to read against the criterion."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    if ref.shape != got.shape:
        return {"passed": False, "error": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    diff = np.abs(got - ref)
    big = np.abs(ref) > atol
    within = bool(np.all(diff <= atol + rtol * np.abs(ref)))
    top_ref, top_got = ref.argmax(1), got.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    flips = np.nonzero((top_ref != top_got) & (margin >= tie_margin))[0]
    ties = np.nonzero((top_ref != top_got) & (margin < tie_margin))[0]
    return {
        "images": int(len(ref)),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0,
        # largest |got - ref| / (atol + rtol * |ref|): the share of the allowed difference used; <= 1 passes
        "max_tolerance_used": float((diff / (atol + rtol * np.abs(ref))).max()) if diff.size else 0.0,
        "within_tolerance": within,
        "top1_mismatches": [names[int(i)] if i < len(names) else int(i) for i in flips],
        "top1_near_tie_flips": [names[int(i)] if i < len(names) else int(i) for i in ties],
        "passed": within and len(flips) == 0,
    }


def parity(
    onnx_path: Path,
    module: nn.Module,
    inputs: Mapping[str, tuple[Any, np.ndarray]],
    providers: Sequence[str],
    atol: float,
    rtol: float,
    tie_margin: float = 0.0,
    references: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """PyTorch (CPU, float32) vs onnxruntime on `providers`, per test set, with batches of 8 and one of 1."""
    session = runtime.create_session(onnx_path, providers)
    per_set, worst_abs, worst_rel, worst_used, passed = {}, 0.0, 0.0, 0.0, True
    for split, (ds, x) in inputs.items():
        ref = references[split] if references else torch_logits(module, x)
        got = runtime.run_batches(session, x, PARITY_BATCH)
        res = compare(ref, got, atol, rtol, tie_margin, [s.name for s in ds.samples])
        single = runtime.run_batches(session, x[:1], 1)  # the batch of one a deployment sees
        one = compare(ref[:1], single, atol, rtol, tie_margin)
        res["batch1_max_abs"], res["passed"] = one.get("max_abs"), res["passed"] and one["passed"]
        per_set[split] = res
        worst_abs, worst_rel = max(worst_abs, res.get("max_abs", np.inf)), max(worst_rel, res.get("max_rel", np.inf))
        worst_used = max(worst_used, res.get("max_tolerance_used", np.inf))
        passed &= res["passed"]
    return {
        "providers": session.get_providers(),
        "atol": atol,
        "rtol": rtol,
        "top1_tie_margin": tie_margin,
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "max_tolerance_used": worst_used,
        "passed": bool(passed),
        "test_sets": per_set,
    }
