"""Job functions for the executor tests: shipped to Ray workers by value (cloudpickle.register_pickle_by_value), since
a worker cannot import this tests folder."""

from __future__ import annotations

from harness.executors import run_job

FAILING_VARIANT = "scratch-usual"


def fail_one(ctx, job, ds=None, complete=False):
    """run_job, except that FAILING_VARIANT's job raises before doing anything (an injected bug)."""
    if job.variant == FAILING_VARIANT:
        raise RuntimeError(f"injected failure in {job.variant} seed {job.seed}")
    return run_job(ctx, job, ds, complete)


def beat(ctx, job, ds=None, complete=False):
    """A job that never ends by itself: it leaves a temporary (as a step's atomic write does) and rewrites a heartbeat
    file in its folder ten times a second, so a test can tell whether its worker still runs."""
    import os
    import time
    from pathlib import Path

    vdir = Path(ctx.run_dir) / ctx.job_id(job)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / f".beat.{os.getpid()}.tmp").write_text("")
    for i in range(3000):
        (vdir / "beat").write_text(str(i))
        time.sleep(0.1)
    raise RuntimeError("beat was not cancelled within 5 minutes")


def gpu_probe(ctx, job, ds=None, complete=False):
    """A job that trains nothing: it says what it was given (CUDA_VISIBLE_DEVICES, torch threads, its pid) and waits
    until as many jobs as <run_dir>/at_once says have started (60 s at most), so a test can tell they ran together,
    then holds on half a second; it returns when it started and ended."""
    import os
    import time
    from pathlib import Path

    import torch

    from harness.executors import DONE, JobResult

    run_dir = Path(ctx.run_dir)
    started = time.time()
    (run_dir / f"{ctx.job_id(job)}.started").write_text(str(os.getpid()))
    want = int((run_dir / "at_once").read_text())
    deadline = time.time() + 60
    while len(list(run_dir.glob("*.started"))) < want and time.time() < deadline:
        time.sleep(0.05)
    together = len(list(run_dir.glob("*.started"))) >= want
    time.sleep(0.5)  # still holding its share: a job that may not run beside it has not started yet
    return JobResult(
        job.variant,
        job.seed,
        ctx.job_id(job),
        DONE,
        0.0,
        pid=os.getpid(),
        extra={
            "seen_cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": torch.get_num_threads(),
            "together": together,
            "started": started,
            "ended": time.time(),
        },
    )
