"""The serial executor: every job in this process, one after another, with the driver's dataset and progress bars."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from harness.executors.job import Job, JobContext, JobResult, failed_result


def execute(
    jobs: Sequence[Job],
    ctx: JobContext,
    options,
    on_start: Callable[[int, Job], None],
    on_done: Callable[[JobResult], None],
    run_one: Callable[[JobContext, Job], JobResult],
) -> list[JobResult]:
    """Run the jobs in order; `run_one(ctx, job)` does one (harness.executors.job.run_job with the driver's dataset
    bound). A failed job is reported and the next one starts."""
    results = []
    for n, job in enumerate(jobs, 1):
        on_start(n, job)
        t0 = time.perf_counter()
        try:
            result = run_one(ctx, job)
        except Exception as exc:  # run_job reports its own failures; this catches a job function's own bug
            result = failed_result(ctx, job, exc, time.perf_counter() - t0)
        results.append(result)
        on_done(result)
    return results
