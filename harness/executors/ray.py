"""The Ray executor: each (variant, seed) is one Ray task doing its whole job into the shared run directory.

- Connects to `--ray-address` (a running cluster; `auto` finds the one this machine is part of) or, without one,
  starts a local Ray for the run (every CPU and GPU of this machine) and shuts it down at the end; a Ray already
  initialised in this process (a test's `ray.init(num_cpus=2)`) is used as it is.
- Resources per task: `--job-cpus` CPUs (the job's torch and onnxruntime thread count) and `--job-gpus` GPUs, a
  fraction packing several jobs onto one GPU (Ray sets CUDA_VISIBLE_DEVICES); `max_calls=1` makes the worker process
  exit after each job, so its GPU memory is freed before the next job starts there. A job given no GPU share sees
  no GPU (Ray leaves CUDA_VISIBLE_DEVICES unset for it); each result records the share and the GPU ids it got.
- Faults: an exception inside a job comes back as a FAILED result (run_job catches it) and is not retried (it would
  fail again); a worker that died (killed, out of memory, node lost) is a system failure that Ray retries up to
  `--max-retries` times, after which the job is FAILED with what Ray said.
- Small payloads: a task receives a JobContext (paths and the profile) and returns a JobResult; models, metrics and
  maps are files in the run directory, which every node must see at the same path (checked first in each task).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from harness import runlock
from harness.executors.job import (
    Job,
    JobContext,
    JobResult,
    JobsStillRunning,
    failed_result,
    hide_gpus_unless_given,
    in_worker,
    set_threads,
)
from harness.validate import ConfigError

INSTALL_HINT = "pip install 'harness[ray]' (or pip install 'ray>=2.40,<3')"
CANCEL_WAIT_S = 30.0  # after Ctrl-C, how long to wait for Ray to confirm the cancelled jobs' workers have stopped


class RayUnavailable(ConfigError):
    """Ray is not installed, or the cluster cannot be reached or cannot run a job of the asked size."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"--executor ray needs Ray, which is not installed ({exc}); {INSTALL_HINT}") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Use the Ray of this process, else connect to `address`, else start a local one; True when this call
    started or connected it (and the executor must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"the Ray cluster at --ray-address {address}" if address else "a local Ray instance"
        raise RayUnavailable(
            f"cannot start or reach {where} ({first}); on the head node run `ray start --head "
            f"--port=6379`, then pass --ray-address HEAD_IP:6379 (or auto on a cluster node)"
        ) from None
    return True


def plan(nodes: Sequence[dict], job_cpus: int, job_gpus: float | None) -> tuple[float, str]:
    """(GPUs per job, one line describing the cluster and how many jobs fit at once), from ray.nodes().

    Raises RayUnavailable when no alive node can ever run a job of this size (the task would wait forever)."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive", n.get("alive", True))]
    cpus = sum(r.get("CPU", 0) for r in alive)
    gpus = sum(r.get("GPU", 0) for r in alive)
    if job_gpus is None:
        job_gpus = 1.0 if gpus else 0.0
    fits = [r for r in alive if r.get("CPU", 0) >= job_cpus and r.get("GPU", 0) >= job_gpus]
    if not fits:
        largest = max(alive, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        raise RayUnavailable(
            f"no node of the Ray cluster can run a job of --job-cpus {job_cpus} --job-gpus {job_gpus:g} (largest node: "
            f"{largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs; cluster: {len(alive)} node(s)); "
            f"ask for less, or add a node with `ray start --address HEAD_IP:6379`"
        )
    at_once = sum(
        min(int(r.get("CPU", 0) // job_cpus), int(r.get("GPU", 0) // job_gpus) if job_gpus else 10**9) for r in fits
    )
    line = (
        f"ray: {len(alive)} node(s), {cpus:g} CPUs, {gpus:g} GPUs; each job {job_cpus} CPU(s) and "
        f"{job_gpus:g} GPU: up to {at_once} job(s) at once"
    )
    return job_gpus, line


def _task(ctx: JobContext, job: Job, run_one: Callable[[JobContext, Job], JobResult]) -> JobResult:
    """One job in a Ray worker: no GPU unless given a share, its CPU share as thread count, what a killed attempt
    left removed, then the job; its result says which GPU(s) it was given (jobs.json)."""
    import ray  # an optional extra: only a Ray worker runs this

    hide_gpus_unless_given(ctx.gpus)
    set_threads(ctx.threads)
    vdir = Path(ctx.run_dir) / ctx.job_id(job)
    if vdir.is_dir():  # Ray never runs two attempts of one task at once: temporaries here are a dead attempt's
        runlock.remove_temporaries(vdir)
    result = run_one(ctx, job)
    placed = {
        "gpu_share": ctx.gpus,
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    return replace(result, extra={**result.extra, **placed})


def _failed(ray, ctx: JobContext, job: Job, exc: BaseException, retries: int, seconds: float) -> JobResult:
    if isinstance(exc, ray.exceptions.RayTaskError):  # the job function itself raised (run_job reports its own)
        cause = getattr(exc, "cause", None) or exc
        result = failed_result(ctx, job, cause, seconds)
    else:  # a worker or node that died, out of memory, cancelled: Ray's own words
        text = str(exc).strip().splitlines()
        error = (
            f"{type(exc).__name__} (the worker running it died; tried {retries + 1} time(s)): {text[0] if text else ''}"
        ).rstrip(": ")
        result = failed_result(ctx, job, exc, seconds, error)
    return replace(result, host="", pid=0)  # not where it ran: the driver


def cancel(ray, refs: list, wait_s: float = CANCEL_WAIT_S) -> list:
    """Cancel the tasks of `refs` (force: a running one's worker is killed; a queued one never starts) and wait up
    to `wait_s` for each to end: Ray's cancel is asynchronous, and on a remote cluster a worker could otherwise still
    be writing into the run directory after the driver has gone. Returns the refs not confirmed ended."""
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished, or its node is gone: waiting below tells which
            pass
    if not refs:
        return []
    try:
        _, left = ray.wait(refs, num_returns=len(refs), timeout=wait_s, fetch_local=False)
    except KeyboardInterrupt:  # Ctrl-C again: stop waiting, none confirmed
        return list(refs)
    return list(left)


def execute(
    jobs: Sequence[Job],
    ctx: JobContext,
    options,
    on_start,
    on_done: Callable[[JobResult], None],
    run_one: Callable[[JobContext, Job], JobResult],
) -> list[JobResult]:
    """Submit every job, report each as it finishes (in finishing order), return all results. Ctrl-C cancels the
    jobs still running (their workers are killed), waits for Ray to confirm they stopped and re-raises; jobs not
    confirmed stopped within CANCEL_WAIT_S raise JobsStillRunning naming them."""
    ray = import_ray()
    started = connect(ray, options.address)
    pending: dict = {}
    try:
        job_gpus, line = plan(ray.nodes(), options.job_cpus, options.job_gpus)
        print(line, file=sys.stderr)
        task = ray.remote(
            num_cpus=options.job_cpus,
            num_gpus=job_gpus,
            max_calls=1,
            max_retries=options.max_retries,
            retry_exceptions=False,
        )(_task)
        worker_ctx = in_worker(ctx, options.job_cpus, job_gpus)
        t0 = time.perf_counter()
        for job in jobs:
            ref = task.options(name=f"harness:{ctx.job_id(job)}").remote(worker_ctx, job, run_one)
            pending[ref] = job
        results = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    result = _failed(ray, ctx, job, exc, options.max_retries, time.perf_counter() - t0)
                results.append(result)
                on_done(result)
        return results
    except KeyboardInterrupt:
        if pending:
            print(
                f"interrupted: cancelling {len(pending)} job(s) on Ray and waiting for their workers to stop "
                f"(up to {CANCEL_WAIT_S:g} s; Ctrl-C again to stop waiting)",
                file=sys.stderr,
            )
            left = cancel(ray, list(pending))
            if left and not (started and not options.address):  # a Ray started here: its shutdown kills them
                raise JobsStillRunning(sorted(ctx.job_id(pending[ref]) for ref in left)) from None
            print(f"cancelled {len(pending)} job(s); their workers have stopped", file=sys.stderr)
        raise
    finally:
        if started:
            ray.shutdown()
