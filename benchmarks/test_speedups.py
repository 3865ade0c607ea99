"""Issue 25's training speed-ups, each against the path without it, measured in ONE process with the paths alternated
(A, B, C, A, B, C, ...) so that a busy machine slows every path alike: the ratio of medians is the per-step ratio,
which is the per-epoch ratio of training without augmentation (an epoch is len(train) / batch such steps).

Per backbone, one step of harness.train.train_step (forward, backward, AdamW over every parameter, `loss.item()`) in:
- efficientnet_lite0: contiguous fp32 (reference) vs channels_last fp32 vs channels_last + bf16 autocast;
- vgg16: channels_last fp32 (reference: the harness's CPU path before `precision`) vs contiguous fp32 vs
  channels_last + bf16 autocast.
The table printed at the end also names the precision `precision = "auto"` resolves to on this machine
(harness.precision) and the registry's memory format (Backbone.channels_last): the decisions these ratios support.

Image and batch size: the backbone's benchmark profile (conftest: VGG16 smoke 64 px batch 8, Lite0 cpu 224 px
batch 16; --bench-image-size forces one). Under --benchmark-disable (CI) every path runs one step at 64 px and
nothing is timed.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

# (label, channels_last, bf16 autocast); the first is the reference the others' ratios are taken against
PATHS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "efficientnet_lite0": (
        ("contiguous fp32", False, False),
        ("channels_last fp32", True, False),
        ("channels_last bf16", True, True),
    ),
    "vgg16": (
        ("channels_last fp32", True, False),
        ("contiguous fp32", False, False),
        ("channels_last bf16", True, True),
    ),
}
MIN_ROUNDS = 3


def _step_fn(make_model, backbone: str, profile, size: int, bs: int, channels_last: bool, bf16: bool, device: str):
    import torch
    import torch.nn.functional as F

    from harness.config import Phase
    from harness.precision import BF16, FP32, Precision
    from harness.train import _optimizer, train_step

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = make_model(backbone, profile).to(device).to(memory_format=fmt).train()
    opt = _optimizer(Phase("all", 1, "adamw", 1e-3, 0.05), list(model.parameters()))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    target = F.one_hot(torch.randint(0, 6, (bs,), generator=g), 6).float().to(device)
    precision = Precision("bench", BF16 if bf16 else FP32, "benchmark")
    dev = torch.device(device)

    def step() -> float:
        value = train_step(model, opt, x, target, dev, 0.0, precision)[0].item()
        if device == "cuda":
            torch.cuda.synchronize()
        return value

    return step


def test_speedups(benchmark, pytestconfig, make_model, model_case, device, speedups: list[dict[str, Any]]):
    import torch

    from harness.backbones import get_backbone
    from harness.precision import resolve

    backbone, profile = model_case
    size, bs = (profile.image_size, profile.batch_size) if benchmark.enabled else (64, 4)
    paths = PATHS[backbone]
    steps = {label: _step_fn(make_model, backbone, profile, size, bs, cl, bf, device) for label, cl, bf in paths}
    benchmark.group = f"speedups {backbone} {size}px batch {bs}"
    auto = resolve("auto", backbone, torch.device(device), size)
    benchmark.extra_info.update(
        backbone=backbone, image_size=size, batch=bs, device=device, auto_precision=auto.resolved, why=auto.reason
    )
    if not benchmark.enabled:
        benchmark.pedantic(lambda: [fn() for fn in steps.values()], rounds=1)  # every path runs; nothing timed
        return
    times: dict[str, list[float]] = {label: [] for label in steps}

    def timed(label: str) -> float:
        t0 = time.perf_counter()
        steps[label]()
        return time.perf_counter() - t0

    one = sum(timed(label) for label in steps)  # warm-up (allocations, oneDNN primitives), also sizes the rounds
    budget = pytestconfig.getoption("bench_budget")  # seconds of timed rounds (every path once per round)
    rounds = min(max(math.ceil(budget / max(one, 1e-6)), MIN_ROUNDS), pytestconfig.getoption("bench_max_rounds"))

    def alternate() -> None:
        for _ in range(rounds):
            for label in steps:
                times[label].append(timed(label))

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    ref = paths[0][0]
    medians = {label: statistics.median(v) for label, v in times.items()}
    for label, median in medians.items():
        row = {
            "backbone": backbone,
            "device": device,
            "size": size,
            "batch": bs,
            "path": label,
            "reference": ref,
            "median_s": median,
            "images_per_s": bs / median,
            "ratio": medians[ref] / median,
            "rounds": rounds,
            "auto": auto.resolved,
            "channels_last": get_backbone(backbone).channels_last,
            "bf16_from": get_backbone(backbone).cpu_bf16_min_size,
        }
        speedups.append(row)
        benchmark.extra_info[f"{label} images_per_s"] = row["images_per_s"]
        benchmark.extra_info[f"{label} ratio_vs_{ref}"] = row["ratio"]
    assert all(math.isfinite(m) and m > 0 for m in medians.values())
