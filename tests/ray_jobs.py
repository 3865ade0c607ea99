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
