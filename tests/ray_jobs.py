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
