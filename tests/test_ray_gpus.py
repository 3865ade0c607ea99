"""GPU placement by the Ray executor, tested without a GPU: a local Ray declaring one logical GPU (Ray schedules and
sets CUDA_VISIBLE_DEVICES by its own count; torch still sees no device here, so the jobs compute on the CPU).

- `--job-gpus 0.5`: two jobs share GPU 0 at the same time, each told CUDA_VISIBLE_DEVICES=0, each in its own worker
  process, which exits after the job (max_calls=1: its GPU memory is freed before the next job starts there);
- `--job-gpus 0`: a CPU-only job sees no GPU (Ray leaves CUDA_VISIBLE_DEVICES unset for a task that asks for none,
  so without the executor's help it would see, and train on, every GPU of the node);
- `--job-gpus 1` on one GPU: one job at a time;
- jobs.json records each job's GPU share and the GPU ids Ray gave it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.config import load_profile
from harness.executors import Job, JobContext, executor_options
from harness.run import run_matrix
from harness.thresholds import parse_thresholds
from tests.test_executors import TINY

JOBS = [Job("scratch-none", 0), Job("scratch-usual", 0)]


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    import ray

    import tests.ray_jobs

    if ray.is_initialized():  # another module's Ray: this one must declare a GPU
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(tests.ray_jobs)
    yield ray
    ray.shutdown()


def _probe(tmp_path: Path, tiny_root: Path, job_gpus: float, at_once: int, capsys) -> tuple[dict, str]:
    from harness.executors.ray import execute
    from tests.ray_jobs import gpu_probe

    run_dir = tmp_path / f"run-{job_gpus:g}"
    run_dir.mkdir()
    (run_dir / "at_once").write_text(str(at_once))
    ctx = JobContext(
        run_dir=run_dir,
        profile=load_profile("smoke", TINY),
        data_root=tiny_root,
        weights_file=None,
        train_fingerprint="fp",
        run_json_sha256="0" * 64,
    )
    results = execute(
        JOBS,
        ctx,
        executor_options("ray", job_cpus=1, job_gpus=job_gpus),
        lambda n, job: None,
        lambda result: None,
        gpu_probe,
    )
    return {r.variant: r for r in results}, capsys.readouterr().err


def _gone(pids, within_s: float = 20.0) -> bool:
    import psutil

    deadline = time.time() + within_s
    while time.time() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_a_fractional_gpu_share_packs_jobs_onto_one_gpu_each_in_a_worker_that_exits(
    ray_with_a_gpu, tmp_path, tiny_root, capsys
):
    results, err = _probe(tmp_path, tiny_root, 0.5, at_once=2, capsys=capsys)
    assert "1 GPUs; each job 1 CPU(s) and 0.5 GPU: up to 2 job(s) at once" in err
    for r in results.values():
        assert r.status == "done" and r.extra["together"], r  # both held GPU 0 at the same time
        assert r.extra["gpu_share"] == 0.5 and r.extra["gpu_ids"] == ["0"]
        assert r.extra["seen_cuda"] == r.extra["cuda_visible_devices"] == "0"
        assert r.extra["threads"] == 1  # --job-cpus: the job's torch threads
    pids = {r.pid for r in results.values()}
    assert len(pids) == 2 and _gone(pids), "a worker process outlived its job (max_calls=1 frees its GPU memory)"


@pytest.mark.slow
def test_a_job_given_no_gpu_sees_none(ray_with_a_gpu, tmp_path, tiny_root, capsys):
    results, err = _probe(tmp_path, tiny_root, 0.0, at_once=2, capsys=capsys)
    assert "each job 1 CPU(s) and 0 GPU: up to 2 job(s) at once" in err
    for r in results.values():
        assert r.extra["gpu_ids"] == [] and r.extra["seen_cuda"] == ""  # hidden, not every GPU of the node


@pytest.mark.slow
def test_a_whole_gpu_per_job_runs_them_one_at_a_time(ray_with_a_gpu, tmp_path, tiny_root, capsys):
    results, err = _probe(tmp_path, tiny_root, 1.0, at_once=1, capsys=capsys)
    assert "each job 1 CPU(s) and 1 GPU: up to 1 job(s) at once" in err
    for r in results.values():
        assert r.extra["gpu_ids"] == ["0"] and r.extra["seen_cuda"] == "0"
    first, second = sorted(results.values(), key=lambda r: r.extra["started"])
    assert first.extra["ended"] <= second.extra["started"]  # the second waited for the GPU


@pytest.mark.slow
def test_jobs_json_records_each_jobs_gpu_share_and_ids(ray_with_a_gpu, tmp_path, tiny_root):
    """The real job (train with 0 epochs -> export -> evaluate -> Grad-CAM) at a quarter of the GPU each."""
    prof = load_profile("smoke", TINY)
    out = tmp_path / "run"
    report = run_matrix(
        prof,
        parse_thresholds(prof.thresholds, prof.source),
        tiny_root,
        out,
        progress=False,
        executor=executor_options("ray", job_gpus=0.25),
    )
    assert report["failed_jobs"] == []
    jobs = json.loads((out / "jobs.json").read_text())["jobs"]
    assert sorted(jobs) == ["vgg16-scratch-none-s0", "vgg16-scratch-usual-s0"]
    for job in jobs.values():
        assert job["status"] == "done" and job["gpu_share"] == 0.25 and job["gpu_ids"] == ["0"]
        assert job["cuda_visible_devices"] == "0"
