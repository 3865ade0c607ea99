"""The matrix: train -> export -> evaluate -> cam for every (variant, seed), then verdicts and reports; resumable.

The run directory itself (layout, `latest`, resume, jobs.json) is harness.rundir."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from harness import artifacts, provenance, runlock, verify
from harness.audit.step import audit_step
from harness.backbones import check_weights_available
from harness.baselines.step import baselines_step, feature_choice, promise
from harness.config import Profile, with_test_sets
from harness.data import MIN_TRAIN_PER_CLASS, Dataset, ignored_note, load_test, load_train, working_short_side
from harness.executors import FAILED, SKIPPED, ExecutorOptions, Job, JobContext, JobResult, get_executor, run_job
from harness.export import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS
from harness.precision import Precision
from harness.precision import resolve as resolve_precision
from harness.report.build import build_report, write_reports
from harness.rundir import (
    JOBS_FILE,
    REPORTS,
    STALE,
    JobsLog,
    ModelId,
    complete_jobs,
    default_run_dir,
    find_resumable,
    matrix_progress,
    point_latest,
    protocol_black_box,
    shown,
    training_state,
)
from harness.runtime import select_providers
from harness.seal import make_seal
from harness.thresholds import Thresholds, check_applies, check_user_file, fit_to_run
from harness.timing import clock
from harness.train import pick_device, stale_message
from harness.variants import split_variant
from harness.weights import check_weights_file


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class MatrixInterrupted(KeyboardInterrupt):
    """Ctrl-C during the matrix, after its temporaries were removed; names the run directory to resume, and the jobs
    a remote Ray cluster did not confirm stopped (their folders are left as they are)."""

    def __init__(self, run_dir: Path, still_running: tuple[str, ...] = ()) -> None:
        super().__init__(str(run_dir))
        self.run_dir = Path(run_dir)
        self.still_running = tuple(still_running)


def protocol(
    profile: Profile,
    thresholds: Thresholds,
    data_root: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    weights_file: Path | None,
    data: dict | None = None,
    notes: Sequence[str] = (),
) -> dict:
    """What run.json records: the run's identity (run_identity), what it ran with and on."""
    return {
        "profile": profile.to_dict(),
        "variants": list(variants),
        "seeds": list(seeds),
        "data_root": str(Path(data_root).resolve()),
        "weights_file": str(weights_file) if weights_file else None,
        "data": data or {},
        "thresholds": thresholds.to_dict(),
        "thresholds_notes": list(notes),
        "exporter": {"default": DEFAULT_EXPORTER, "available": list(EXPORTERS), "opset": DEFAULT_OPSET},
        "onnxruntime_providers": select_providers("auto"),
        "device": provenance.device_info(pick_device(profile.device)),
        "precision": training_precision(profile).to_dict(),  # what training runs in here, and why
        "versions": provenance.versions(),
        "argv": sys.argv,
    }


def training_precision(profile: Profile) -> Precision:
    """The profile's precision resolved for this machine's training device and the profile's backbone."""
    return resolve_precision(profile.precision, profile.backbone, pick_device(profile.device), profile.image_size)


def fit_profile(
    profile: Profile, thresholds: Thresholds, data_root: Path, thresholds_file: Path | None = None
) -> tuple[Profile, Thresholds, list[str]]:
    """A profile that names no test sets gets the dataset's (discovered), and its thresholds are fitted to them:
    the profile's rules for test sets this dataset does not have are set aside, with a note saying so (run.json, the
    report); a rule of the user's `thresholds_file` naming a test set the run does not have is a ConfigError."""
    if profile.test_sets:
        check_user_file(thresholds_file, profile.test_sets)
        return profile, thresholds, []
    profile = with_test_sets(profile, data_root)
    check_user_file(thresholds_file, profile.test_sets)
    thresholds, notes = fit_to_run(thresholds, profile.test_sets)
    return profile, thresholds, notes


def preflight(
    profile: Profile, thresholds: Thresholds, data_root: Path, variants: Sequence[str], weights_file: Path | None
) -> tuple[Dataset, dict[str, Dataset]]:
    """Everything that can be known wrong before the first variant trains, checked before anything is written:
    variant names, thresholds against the run's test sets and matrix, device, ImageNet weights, the dataset.
    `profile` must name its test sets (see fit_profile). Returns (train Dataset, {split: test Dataset})."""
    for v in variants:
        split_variant(v)
    check_applies(
        thresholds, profile.test_sets, variants, thresholds.source or profile.source, backbones=[profile.backbone]
    )
    training_precision(profile)  # a GPU asked for bf16 without it fails here, before anything is written
    if any(split_variant(v)[0] == "imagenet" for v in variants):
        check_weights_available(profile.backbone, weights_file)
        check_weights_file(profile.backbone, weights_file)  # its keys and shapes: a foreign file never trains
    size = working_short_side(profile.image_size)
    ds = load_train(data_root, max_short_side=size, min_per_class=MIN_TRAIN_PER_CLASS)
    tests = {split: load_test(data_root, split, ds.classes, max_short_side=size) for split in profile.test_sets}
    return ds, tests


def check_not_stale(
    run_dir: Path,
    profile: Profile,
    jobs: Sequence[tuple[str, int]],
    train_fp: str,
    weights_file: Path | None,
    force: bool,
) -> None:
    """Refuse, before any training, a run directory holding models trained from other inputs than this run's.

    The matrix's own folders may be retrained with --force; another folder of the run dir (other variant or
    backbone) must have been trained with the same settings, or the report would mix protocols."""
    mine = {ModelId.of(profile.backbone, v, s).folder: (v, s) for v, s in jobs}
    problems = []
    for cfg in sorted(Path(run_dir).glob("*/config.json")):
        vdir = cfg.parent
        try:
            config = artifacts.read_json(cfg)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if not isinstance(config, dict) or "variant" not in config:
            problems.append(f"{cfg}: not a harness config.json; remove {vdir}")
            continue
        if vdir.name in mine:
            variant, seed = mine[vdir.name]
            init = split_variant(variant)[0]
            inputs = provenance.train_inputs(
                profile,
                variant,
                seed,
                train_fp,
                provenance.weights_identity(profile.backbone, init, weights_file),
                training_precision(profile).resolved,
            )
            state, why = training_state(vdir, inputs)
            if state == STALE and not force:
                problems.append(stale_message(vdir, why))
            continue
        recorded = config.get("inputs")
        if not isinstance(recorded, dict):
            problems.append(
                f"{vdir}: trained by an older harness (no recorded inputs); it cannot be shown beside "
                f"this run's models. Remove it, or use another --out"
            )
            continue
        ours = provenance.profile_train_fields(profile, str(recorded.get("init")))
        theirs = dict(recorded.get("profile") or {})
        changes = provenance.diff(
            {k: v for k, v in theirs.items() if k != "backbone"}, {k: v for k, v in ours.items() if k != "backbone"}
        )
        if recorded.get("train_data") != train_fp:
            changes.append("train_data: another training set")
        precision = training_precision(profile).resolved
        if recorded.get("precision", precision) != precision:
            changes.append(f"precision: {recorded.get('precision')} -> {precision}")
        if changes:
            problems.append(
                f"{vdir} (not in this matrix) was trained with other settings "
                f"({provenance.describe(changes, 4)}); the report would mix protocols. Remove it, or use "
                f"another --out"
            )
    if problems:
        raise provenance.StaleRunError(
            "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        )


def run_matrix(
    profile: Profile,
    thresholds: Thresholds,
    data_root: Path,
    run_dir: Path | None,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    weights_file: Path | None = None,
    force: bool = False,
    progress: bool | None = None,
    reports: Path = REPORTS,
    new: bool = False,
    executor=None,
    run_one=None,
    thresholds_file: Path | None = None,
) -> dict:
    """Run every (variant, seed) through all steps on an executor; completed, current steps are skipped, so a rerun
    resumes.

    run_dir None: the latest run under <reports>/runs/ when it was made by the same command and is incomplete
    (find_resumable; said in one line), unless `new`; else a fresh default_run_dir. Nothing is written (no run
    directory, no run.json, no `latest`) before every input has been validated. `executor`: ExecutorOptions
    (default serial); `run_one(ctx, job, ds=None, complete=False) -> JobResult`: one job's work (default
    harness.executors.run_job; a test passes one that fails). A job that fails is recorded in jobs.json and the
    report while the other jobs run on. Ctrl-C removes the current step's temporaries, releases the lock and raises
    MatrixInterrupted naming the run directory. `thresholds_file`: the user's file `thresholds` was read with (its
    rules are checked against the run's test sets, never set aside).
    Returns the report (also written as report.json and report.html in run_dir; report["run_dir"] is where).
    """
    executor = executor or ExecutorOptions()
    get_executor(executor.name)
    variants = list(variants or profile.variants)
    seeds = list(seeds if seeds is not None else profile.seeds)
    profile, thresholds, notes = fit_profile(profile, thresholds, data_root, thresholds_file)
    ds, tests = preflight(profile, thresholds, data_root, variants, weights_file)
    for note in filter(None, map(ignored_note, (ds, *tests.values()))):  # hidden files: skipped, and said so
        tqdm.write(f"note: {note}", file=sys.stderr)
    train_fp = provenance.dataset_fingerprint(ds)
    data = {"train": train_fp, "test": provenance.fingerprints(tests), "classes": list(ds.classes)}
    jobs = [(v, s) for s in seeds for v in variants]
    proto = protocol(profile, thresholds, data_root, variants, seeds, weights_file, data, notes)
    resumed = False
    if run_dir is None:
        run_dir = None if new else find_resumable(reports, proto)
        if run_dir is not None:
            resumed = True
            done, total = matrix_progress(run_dir, proto)
            what = "variants" if len(seeds) == 1 else "(variant, seed) runs"
            tqdm.write(
                f"resuming {shown(run_dir)} ({done} of {total} {what} done); --new starts a fresh run", file=sys.stderr
            )
        else:
            run_dir = default_run_dir(profile, reports)
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(runlock.hold(run_dir))
        except runlock.RunLocked as exc:  # e.g. the same command still running in another terminal
            if not resumed:
                raise
            raise runlock.RunLocked(f"{exc}; or start a fresh run with --new") from None
        try:
            check_not_stale(run_dir, profile, jobs, train_fp, weights_file, force)
            with verify.recording(run_dir):  # what this run writes goes into the ledger of harness's writes
                features = feature_choice(profile.backbone, profile.image_size, weights_file)  # the probe's
                made = proto | {"executor": executor.to_dict(), "baselines": promise(features)}
                artifacts.write_json(run_dir / "run.json", made | {"seal": make_seal(made, run_dir / "run.json")})
                for note in notes:
                    tqdm.write(f"note: {note}", file=sys.stderr)
                point_latest(run_dir, reports)
                audit_step(run_dir, ds, tests, data_root, data, force=force, log=_say)  # first: can the data be trusted
                baselines_step(run_dir, ds, tests, ds.classes, data, features, force, _say)  # the ladder: probe, kNN
                show = sys.stderr.isatty() if progress is None else progress
                execute_matrix(
                    run_dir, profile, ds, data_root, jobs, weights_file, train_fp, force, show, executor, run_one
                )
            verify.refuse_unvouched(run_dir)  # a file of another folder edited by hand is never judged
            report = build_report(run_dir, thresholds)
            write_reports(run_dir, report)
        except KeyboardInterrupt as exc:
            still = tuple(getattr(exc, "job_ids", ()))  # JobsStillRunning: remote workers that may still write
            # the lock is still held: no live writer owns the temporaries, except in the folders of those jobs
            runlock.remove_temporaries(run_dir, keep=[run_dir / job_id for job_id in still])
            raise MatrixInterrupted(run_dir, still) from exc
    return report


def execute_matrix(
    run_dir: Path,
    profile: Profile,
    ds: Dataset,
    data_root: Path,
    jobs: Sequence[tuple[str, int]],
    weights_file: Path | None,
    train_fp: str,
    force: bool,
    show: bool,
    executor: ExecutorOptions,
    run_one=None,
) -> list[JobResult]:
    """The jobs of the matrix on `executor`, each finished job recorded in <run_dir>/jobs.json as it finishes.

    Jobs found complete are checked here, in the driver (every step finds itself current: seconds); the others go to
    the executor. Serial: one after another with the ETA line and the matrix bar. Ray: one line per finished job and
    a bar of finished jobs."""
    run_one = run_one or run_job
    run_dir = Path(run_dir).resolve()
    black_box = profile.saliency.black_box if profile.saliency else ()
    # which variants get them, as run.json records the run (saliency.black_box_scope, thresholds.gated)
    per_variant = protocol_black_box(artifacts.read_json(run_dir / "run.json"))
    done_before = set() if force else complete_jobs(run_dir, profile.backbone, jobs, per_variant)
    ctx = JobContext(
        run_dir=run_dir,
        profile=profile,
        data_root=Path(data_root).resolve(),
        weights_file=Path(weights_file).resolve() if weights_file else None,
        train_fingerprint=train_fp,
        run_json_sha256=artifacts.sha256_file(run_dir / "run.json"),
        force=force,
        black_box=tuple(black_box),
        black_box_variants=tuple(sorted({v for v, _ in jobs if per_variant(v)})),
        progress=show,
    )
    log = JobsLog(run_dir, executor.to_dict())
    todo = [Job(v, s) for v, s in jobs]
    t0 = time.perf_counter()
    measured: list[float] = []  # seconds of each job that did work here (not one found done)
    results: list[JobResult] = []

    def record(result: JobResult) -> None:
        results.append(result)
        log.add(result)
        if result.status not in (FAILED, SKIPPED):
            measured.append(result.seconds)

    if executor.name == "serial":
        bar = tqdm(
            todo,
            desc="matrix",
            unit="variant",
            disable=not show,
            bar_format="matrix {n_fmt}/{total_fmt} |{bar}| {desc}",
        )

        def on_start(n: int, job: Job) -> None:
            # the bar's own remaining time would count variants found complete as fast ones: ours instead
            when = matrix_eta(time.perf_counter() - t0, measured, sum(1 for j in jobs[n - 1 :] if j not in done_before))
            bar.set_description_str(f"{job.variant} s{job.seed}: {when}")
            done = "; already complete" if (job.variant, job.seed) in done_before else ""
            tqdm.write(f"== [{n}/{len(jobs)}] {job.variant} seed {job.seed} ({when}{done})", file=sys.stderr)

        def on_done(result) -> None:
            record(result)
            bar.update(1)
            if result.status == FAILED:
                tqdm.write(
                    f"FAILED {result.id}: {result.error} (traceback in {JOBS_FILE}); the other jobs go on",
                    file=sys.stderr,
                )

        def one(ctx, job):
            return run_one(ctx, job, ds=ds, complete=(job.variant, job.seed) in done_before)

        get_executor("serial")(todo, ctx, executor, on_start, on_done, one)
        bar.close()
    else:
        complete = [j for j in todo if (j.variant, j.seed) in done_before]
        pending = [j for j in todo if (j.variant, j.seed) not in done_before]
        bar = tqdm(
            total=len(todo),
            disable=not show,
            unit="job",
            bar_format="jobs {n_fmt}/{total_fmt} finished |{bar}| {elapsed} elapsed",
        )

        def on_done(result) -> None:
            record(result)
            bar.update(1)
            where = f" on {result.host}" if result.host else ""
            n = len(results)
            if result.status == FAILED:
                tqdm.write(
                    f"FAILED [{n}/{len(todo)}] {result.id} after {clock(result.seconds)}{where}: {result.error}"
                    f" (traceback in {JOBS_FILE}); the other jobs go on",
                    file=sys.stderr,
                )
            elif result.status == SKIPPED:
                tqdm.write(f"done [{n}/{len(todo)}] {result.id}: already complete", file=sys.stderr)
            else:
                left = len(todo) - n
                tqdm.write(
                    f"done [{n}/{len(todo)}] {result.id} in {clock(result.seconds)}{where} "
                    f"({clock(time.perf_counter() - t0)} elapsed, {left} job(s) left)",
                    file=sys.stderr,
                )

        for job in complete:  # cheap checks, in the driver: no worker start for a job with nothing to do
            on_done(run_one(ctx, job, ds=ds, complete=True))
        if pending:
            tqdm.write(
                f"== {len(pending)} job(s) to {executor.name}"
                + (f" ({len(complete)} already complete)" if complete else ""),
                file=sys.stderr,
            )
            get_executor(executor.name)(pending, ctx, executor, None, on_done, run_one)
        bar.close()
    if jobs:
        failed = sum(1 for r in results if r.status == FAILED)
        tail = f"; {failed} job(s) FAILED, rerun the same command to retry them" if failed else ""
        tqdm.write(f"== matrix done in {clock(time.perf_counter() - t0)}{tail}", file=sys.stderr)
    return results


def matrix_eta(elapsed: float, measured: Sequence[float], left: int) -> str:
    """'5:12 elapsed, ~15:40 left for the matrix' from the mean of the measured variant times and the number of
    variants left to do (the current one included); '5:12 elapsed' while nothing was measured or nothing is left."""
    text = f"{clock(elapsed)} elapsed"
    if measured and left > 0:
        text += f", ~{clock(sum(measured) / len(measured) * left)} left for the matrix"
    return text
