"""The matrix on the Ray executor: 1 job at a time (2 CPUs each) vs 2 jobs at once (1 CPU each) on a local Ray of
this machine's CPUs, and the serial executor beside them, for the smoke matrix of 4 scratch variants (one epoch each,
train + export + evaluate + Grad-CAM). One round each: a whole matrix is the unit. Reported in extra_info:
wall seconds per mode and `ratio_1_over_2_concurrent` (> 1: two concurrent jobs finish the matrix sooner).

On 2 cores the point is the mechanism (threads per job = its CPU share, so two jobs do not oversubscribe the cores),
not speed. Under --benchmark-disable (CI) it runs a 2-variant, 32 px matrix once so that it cannot rot.
"""

from __future__ import annotations

import os
import time

import pytest

from benchmarks.conftest import DATA

VARIANTS = ["scratch-none", "scratch-usual", "scratch-mixup", "scratch-all"]


def _matrix(out, sets, executor):
    from harness.config import load_profile
    from harness.run import run_matrix
    from harness.thresholds import parse_thresholds

    prof = load_profile("smoke", sets)
    t0 = time.perf_counter()
    report = run_matrix(
        prof, parse_thresholds(prof.thresholds, prof.source), DATA, out, progress=False, executor=executor
    )
    seconds = time.perf_counter() - t0
    assert not report["failed_jobs"], report["failed_jobs"]
    return seconds


def test_ray_one_vs_two_concurrent_jobs(benchmark, tmp_path, pytestconfig):
    ray = pytest.importorskip("ray")
    from harness.executors import executor_options

    cpus = min(2, os.cpu_count() or 1)
    quick = benchmark.disabled
    size = pytestconfig.getoption("--bench-image-size") or (32 if quick else 64)
    variants = VARIANTS[:2] if quick else VARIANTS
    sets = [
        f"image_size={size}",
        "inits=['scratch']",
        "levels=[" + ", ".join(repr(v.split("-", 1)[1]) for v in variants) + "]",
    ]
    ray.init(num_cpus=cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:

        def measure():
            times = {}
            if not quick:
                times["serial"] = _matrix(tmp_path / "serial", sets, executor_options())
            times["ray_1_at_a_time"] = _matrix(tmp_path / "ray1", sets, executor_options("ray", job_cpus=cpus))
            times["ray_2_at_once"] = _matrix(tmp_path / "ray2", sets, executor_options("ray", job_cpus=1))
            return times

        times = benchmark.pedantic(measure, rounds=1, iterations=1)  # under --benchmark-disable: once, untimed
    finally:
        ray.shutdown()
    ratio = times["ray_1_at_a_time"] / times["ray_2_at_once"]
    benchmark.group = f"executors smoke {len(variants)} variants {size}px"
    benchmark.extra_info.update({f"{k}_s": round(v, 1) for k, v in times.items()})
    benchmark.extra_info.update(
        variants=variants, image_size=size, cpus=cpus, ratio_1_over_2_concurrent=round(ratio, 3)
    )
    print(
        f"\nexecutors, smoke matrix of {len(variants)} variants at {size} px on {cpus} CPUs: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        + f"; 1 at a time / 2 at once = {ratio:.2f}"
    )
