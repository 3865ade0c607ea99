"""One job of the matrix: a (variant, seed) through train -> export -> evaluate -> Grad-CAM -> black-box saliency.

The same function runs in the driver (serial executor) and in a Ray worker; what it needs travels in a small frozen
JobContext (paths, the profile, fingerprints), what it returns is a small JobResult. A job that raises is a FAILED
result naming the error (the traceback kept for jobs.json), never an exception that stops the other jobs; Ctrl-C
(KeyboardInterrupt) still stops the run.
"""

from __future__ import annotations

import os
import socket
import time
import traceback as _traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from harness import artifacts, provenance, runtime
from harness.config import Profile
from harness.data import Dataset, load_train, working_short_side
from harness.evaluate import evaluate_variant
from harness.export import export_variant
from harness.robustness.step import variant_robustness
from harness.rundir import ModelId, is_current, read_variant_config
from harness.saliency.blackbox_step import variant_blackbox
from harness.saliency.gradcam_step import cam_variant
from harness.testsets import load_test_sets
from harness.train import train_variant

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


@dataclass(frozen=True)
class Job:
    variant: str
    seed: int


@dataclass(frozen=True)
class JobContext:
    """Everything a job needs, as paths every node must see at the same place (resolved by the driver)."""

    run_dir: Path
    profile: Profile
    data_root: Path
    weights_file: Path | None
    train_fingerprint: str
    run_json_sha256: str  # what run.json held when the driver submitted: a node that sees another (or none) fails
    force: bool = False
    black_box: tuple[str, ...] = ()  # the profile's black-box saliency methods...
    black_box_variants: tuple[str, ...] | None = None  # ...computed for these variants (None: every variant)
    progress: bool = False
    threads: int | None = None  # torch + onnxruntime threads; None: leave the process defaults
    gpus: float | None = None  # the GPU share a Ray task was given (0: none, so it must not touch a GPU); None: serial

    def black_box_for(self, variant: str) -> tuple[str, ...]:
        """The black-box saliency methods `variant`'s job computes (saliency.black_box_scope)."""
        return self.black_box if self.black_box_variants is None or variant in self.black_box_variants else ()

    def saliency_for(self, variant: str) -> tuple[str, ...]:
        """Every saliency method whose maps `variant`'s job stores (Grad-CAM and black_box_for)."""
        black_box = self.black_box_for(variant)
        return tuple(m for m in self.profile.saliency.methods if m not in self.black_box or m in black_box)

    def job_id(self, job: Job) -> str:
        return ModelId.of(self.profile.backbone, job.variant, job.seed).folder


@dataclass(frozen=True)
class JobResult:
    variant: str
    seed: int
    id: str
    status: str  # DONE | FAILED | SKIPPED (found complete, every step current)
    seconds: float
    host: str = ""
    pid: int = 0
    error: str | None = None
    traceback: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "variant": self.variant,
            "seed": self.seed,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "host": self.host,
            "pid": self.pid,
            "error": self.error,
            "traceback": self.traceback,
            **self.extra,
        }


class JobsStillRunning(KeyboardInterrupt):
    """Ctrl-C, and some cancelled jobs were not confirmed stopped (a remote cluster that did not answer in time): their
    workers may still write into their variant folders, so those folders' temporaries are not theirs to remove."""

    def __init__(self, job_ids) -> None:
        self.job_ids = tuple(job_ids)
        super().__init__(", ".join(self.job_ids))


class SharedStorageError(RuntimeError):
    """A node cannot see the run directory or the dataset the driver sees (a multi-node run needs shared storage)."""


def set_threads(n: int | None) -> None:
    """torch's and onnxruntime's thread pools sized to this job's CPU share (oversubscribed pools on shared cores
    run several times slower than one pool alone)."""
    if not n:
        return
    n = max(1, int(n))
    torch.set_num_threads(n)
    runtime.set_default_threads(n)


def check_storage(ctx: JobContext) -> None:
    """Fail fast on a node that does not see the driver's run directory (run.json as submitted) or dataset."""
    host = socket.gethostname()
    proto = Path(ctx.run_dir) / "run.json"
    remedy = (
        "every node must mount the run directory and the dataset at the same path (NFS or another shared "
        "volume); pass --out DIR and --data DIR on such storage"
    )
    if not proto.is_file():
        raise SharedStorageError(
            f"node {host} cannot see the run directory {ctx.run_dir} (no run.json there); {remedy}"
        )
    if artifacts.sha256_file(proto) != ctx.run_json_sha256:
        raise SharedStorageError(
            f"node {host} sees another {proto} than the driver wrote (a local folder of the same "
            f"name, not the shared one); {remedy}"
        )
    if not Path(ctx.data_root).is_dir():
        raise SharedStorageError(f"node {host} cannot see the dataset {ctx.data_root}; {remedy}")


def load_training_set(ctx: JobContext) -> Dataset:
    """The training set as the driver fingerprinted it; another one at the same path is a SharedStorageError."""
    ds = load_train(ctx.data_root, max_short_side=working_short_side(ctx.profile.image_size))
    if provenance.dataset_fingerprint(ds) != ctx.train_fingerprint:
        raise SharedStorageError(
            f"node {socket.gethostname()} reads another training set at {ctx.data_root} than "
            f"the driver did (fingerprint differs): every node must see the same dataset"
        )
    return ds


def job_tests(vdir: Path, data_root: Path) -> dict[str, Dataset]:
    """The test sets every step of a trained model folder runs on, decoded once: its recorded profile's test sets,
    over its classes, at the working size of its image size (as each step would load them by itself)."""
    config, profile = read_variant_config(vdir, data_root)
    return load_test_sets(config["data_root"], profile.test_sets, config["classes"], profile.image_size)


def run_steps(ctx: JobContext, job: Job, ds: Dataset | None = None) -> None:
    """The steps of one job; each skips itself when its output is current (so a rerun resumes). The test sets are
    decoded once, after training, and handed to every step."""
    if ds is None:
        check_storage(ctx)
        ds = load_training_set(ctx)
    vdir = train_variant(
        ctx.run_dir,
        ctx.profile,
        ds,
        ctx.data_root,
        job.variant,
        job.seed,
        ctx.weights_file,
        ctx.force,
        progress=ctx.progress,
        train_fingerprint=ctx.train_fingerprint,
    )
    tests = job_tests(vdir, ctx.data_root)
    record = export_variant(vdir, force=ctx.force, data_root=ctx.data_root, tests=tests)
    # metrics.json is current when made from the model file export.json vouches for and from the same test images
    made_from = {"onnx_sha256": record.get("sha256"), "test_data": (record.get("inputs") or {}).get("test_data")}
    if ctx.force or not is_current(vdir / "metrics.json", made_from, keys=("onnx_sha256", "test_data")):
        evaluate_variant(vdir, data_root=ctx.data_root, tests=tests)
    cam_variant(vdir, force=ctx.force, data_root=ctx.data_root, tests=tests)  # redoes itself when stale
    for method in ctx.black_box_for(job.variant):
        variant_blackbox(vdir, method, force=ctx.force, data_root=ctx.data_root, tests=tests)
    # corruptions, masking, and the faithfulness curves of the maps this job stored
    methods = ctx.saliency_for(job.variant)
    variant_robustness(vdir, force=ctx.force, data_root=ctx.data_root, tests=tests, methods=methods)


def run_job(ctx: JobContext, job: Job, ds: Dataset | None = None, complete: bool = False) -> JobResult:
    """Run one job's steps and say how it went. `ds`: the training set already loaded (the driver's); None in a
    worker, which then checks it sees the run directory and loads the dataset itself. `complete`: the job's folder
    was found complete before the run (its result is SKIPPED unless a step found something to redo)."""
    t0 = time.perf_counter()
    try:
        run_steps(ctx, job, ds)
    except Exception as exc:  # a job's failure is reported with the others' results, not raised over them
        return failed_result(ctx, job, exc, time.perf_counter() - t0)
    return JobResult(
        job.variant,
        job.seed,
        ctx.job_id(job),
        SKIPPED if complete else DONE,
        time.perf_counter() - t0,
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def failed_result(ctx: JobContext, job: Job, exc: BaseException, seconds: float, error: str | None = None) -> JobResult:
    """A FAILED JobResult: `error` (default: the exception's type and first line), the traceback for jobs.json."""
    if error is None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return JobResult(
        job.variant,
        job.seed,
        ctx.job_id(job),
        FAILED,
        seconds,
        host=socket.gethostname(),
        pid=os.getpid(),
        error=error,
        traceback="".join(_traceback.format_exception(exc)),
    )


def in_worker(ctx: JobContext, threads: int | None, gpus: float | None = None) -> JobContext:
    """The context as a worker uses it: no per-epoch progress bars, its CPU share as thread count, its GPU share."""
    return replace(ctx, progress=False, threads=threads, gpus=gpus)


def hide_gpus_unless_given(gpus: float | None) -> None:
    """A job given no GPU share sees no GPU. Ray sets CUDA_VISIBLE_DEVICES only for a task that asks for GPUs, so a
    `--job-gpus 0` job on a GPU node would otherwise see every GPU and train there (device and provider 'auto'),
    uncounted by Ray's scheduler, beside the jobs that were given those GPUs. Called before anything touches CUDA."""
    if gpus is not None and gpus <= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
