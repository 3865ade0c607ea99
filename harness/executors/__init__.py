"""Executors: how the matrix's (variant, seed) jobs are run. A registry, because executors are data.

`serial` (the default) runs the jobs one after another in this process; `ray` sends each job to a Ray cluster (a
local one started for the run, or `--ray-address`), as one task that does train -> export -> evaluate -> saliency
into the run directory. Both take the same `JobContext`, run the same `run_job` steps and return one `JobResult`
per job; the driver (harness.run) records them in `jobs.json` and builds the report when all have finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from harness.executors import ray as ray_executor
from harness.executors import serial as serial_executor
from harness.executors.job import DONE, FAILED, SKIPPED, Job, JobContext, JobResult, run_job
from harness.validate import ConfigError

__all__ = [
    "DONE",
    "FAILED",
    "SKIPPED",
    "EXECUTORS",
    "ExecutorOptions",
    "Job",
    "JobContext",
    "JobResult",
    "executor_options",
    "get_executor",
    "run_job",
]

DEFAULT_MAX_RETRIES = 3  # Ray's default for system failures (a worker process that died), never for an exception


@dataclass(frozen=True)
class ExecutorOptions:
    """What `harness run --executor ... --ray-address ... --job-cpus ... --job-gpus ...` asked for.

    job_gpus None: one whole GPU per job when the cluster has GPUs, none otherwise (decided by the executor)."""

    name: str = "serial"
    address: str | None = None
    job_cpus: int = 1
    job_gpus: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "address": self.address,
            "job_cpus": self.job_cpus,
            "job_gpus": self.job_gpus,
            "max_retries": self.max_retries,
        }


# name -> execute(jobs, ctx, options, on_start(n, job), on_done(result), run_one(ctx, job) -> JobResult) -> results;
# the Ray executor imports ray only when it runs (an optional extra)
Execute = Callable[..., list[JobResult]]
EXECUTORS: dict[str, Execute] = {"serial": serial_executor.execute, "ray": ray_executor.execute}


def get_executor(name: str) -> Execute:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ConfigError(f"--executor {name!r} is not an executor; choose one of {sorted(EXECUTORS)}") from None


def _number(option: str, value, integral: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{option} {value!r} is not a finite number")
    if integral and number != int(number):
        raise ConfigError(f"{option} {value!r} is not a whole number")
    return number


def executor_options(
    name: str = "serial", address: str | None = None, job_cpus=None, job_gpus=None, max_retries=None
) -> ExecutorOptions:
    """Validated ExecutorOptions; a ConfigError names the option and the value at fault."""
    get_executor(name)
    ray_only = [
        opt
        for opt, given in (
            ("--ray-address", address),
            ("--job-gpus", job_gpus),
            ("--job-cpus", job_cpus),
            ("--max-retries", max_retries),
        )
        if given is not None
    ]
    if name != "ray" and ray_only:
        raise ConfigError(
            f"{', '.join(ray_only)} only apply with --executor ray (the serial executor runs one job at "
            f"a time in this process)"
        )
    cpus = 1.0 if job_cpus is None else _number("--job-cpus", job_cpus)
    if cpus < 1 or cpus != int(cpus):
        raise ConfigError(
            f"--job-cpus {job_cpus!r}: give a whole number of CPUs >= 1 (each job sets its torch and "
            f"onnxruntime threads to it)"
        )
    gpus = None if job_gpus is None else _number("--job-gpus", job_gpus)
    if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
        raise ConfigError(
            f"--job-gpus {job_gpus!r}: give a fraction of one GPU (0.25: four jobs share a GPU), a whole "
            f"number of GPUs, or 0 for CPU-only jobs"
        )
    retries = DEFAULT_MAX_RETRIES if max_retries is None else _number("--max-retries", max_retries, integral=True)
    if retries < 0:
        raise ConfigError(f"--max-retries {max_retries!r}: give 0 or more")
    if address is not None and not str(address).strip():
        raise ConfigError("--ray-address is empty; give the head node's address (HOST:6379) or 'auto'")
    return ExecutorOptions(name, address, int(cpus), gpus, int(retries))
