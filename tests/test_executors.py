"""Executors: options at the edge, the cluster plan, failed jobs in jobs.json and the report, and the Ray executor
on a local 2-CPU Ray started here (same figures as serial, an injected failure, a worker killed mid-job, Ctrl-C).
A Ray initialised by the test is used as it is and not shut down by the run, as a remote cluster would be."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness import runtime
from harness.cli import main
from harness.config import load_profile
from harness.executors import ExecutorOptions, executor_options
from harness.executors.job import set_threads
from harness.executors.ray import RayUnavailable, plan
from harness.run import MatrixInterrupted, run_matrix
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "small-book-images"
TINY = [
    "backbone=vgg16",
    "image_size=32",
    "batch_size=4",
    "val_fraction=0.4",
    "device=cpu",
    "tta_hflip=false",
    "test_sets=['test_plain']",
    "inits=['scratch']",
    "levels=['none', 'usual']",
    'phases.scratch=[{name="all", epochs=0}]',
    "thresholds.gated=[]",
    "thresholds.accuracy={}",
    "thresholds.cam={}",
]
# the smoke matrix of two variants on the bundled photos, 32 px: one real epoch each
SMOKE = ["image_size=32", "inits=['scratch']", "levels=['none', 'mixup']"]


def _run(profile_sets, data, out, **kw):
    prof = load_profile("smoke", profile_sets)
    return run_matrix(prof, parse_thresholds(prof.thresholds, prof.source), data, out, progress=False, **kw)


def _metrics(run_dir: Path) -> dict:
    """Every variant's metrics.json figures that depend on the model (not on the clock or the machine)."""
    out = {}
    for m in sorted(run_dir.glob("*/metrics.json")):
        rec = json.loads(m.read_text())
        hist = json.loads((m.parent / "history.json").read_text())["epochs"]
        out[m.parent.name] = {
            "test_sets": rec["test_sets"],
            "history": [{k: v for k, v in e.items() if k != "seconds"} for e in hist],
        }
    return out


# --- options, plan: no Ray needed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"name": "dask"}, "--executor 'dask' is not an executor"),
        ({"name": "serial", "job_gpus": "0.5"}, "--job-gpus only apply with --executor ray"),
        ({"name": "ray", "job_cpus": "0"}, r"--job-cpus '0': give a whole number of CPUs >= 1"),
        ({"name": "ray", "job_cpus": "1.5"}, "--job-cpus '1.5'"),
        ({"name": "ray", "job_cpus": "many"}, "--job-cpus 'many' is not a number"),
        ({"name": "ray", "job_gpus": "-0.25"}, "--job-gpus '-0.25': give a fraction"),
        ({"name": "ray", "job_gpus": "1.5"}, "--job-gpus '1.5'"),
        ({"name": "ray", "job_gpus": "nan"}, "not a finite number"),
        ({"name": "ray", "max_retries": "-1"}, "--max-retries '-1'"),
        ({"name": "ray", "address": " "}, "--ray-address is empty"),
    ],
)
def test_executor_options_name_the_option_at_fault(kw, match):
    with pytest.raises(ConfigError, match=match):
        executor_options(**kw)


def test_executor_options_defaults_and_values():
    assert executor_options() == ExecutorOptions("serial", None, 1, None, 3)
    assert executor_options("ray", "auto", "2", "0.125", "0") == ExecutorOptions("ray", "auto", 2, 0.125, 0)


def test_plan_packs_fractional_gpus_and_refuses_a_job_no_node_can_run():
    h200 = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}]
    gpus, line = plan(h200, 2, 0.125)
    assert gpus == 0.125 and "up to 8 job(s) at once" in line  # 8 eighths of the GPU, 8 x 2 of the 16 CPUs
    assert plan(h200, 1, None)[0] == 1.0  # default: a whole GPU per job where the cluster has GPUs
    gpus, line = plan([{"Alive": True, "Resources": {"CPU": 2.0}}], 1, None)
    assert gpus == 0.0 and "up to 2 job(s) at once" in line  # no GPU in the cluster: CPU-only jobs
    two = h200 + [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": False, "Resources": {"CPU": 64.0}}]
    assert "up to 5 job(s) at once" in plan(two, 4, 0)[1]  # 16//4 + 4//4; the dead node counts for nothing
    with pytest.raises(RayUnavailable, match=r"--job-cpus 32 .*largest node: 16 CPUs"):
        plan(two, 32, 0)
    with pytest.raises(RayUnavailable, match="--job-gpus 1"):
        plan([{"Alive": True, "Resources": {"CPU": 8.0}}], 1, 1.0)


def test_cli_rejects_ray_options_without_ray_executor(tiny_root, tmp_path, capsys):
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            *[x for s in TINY for x in ("--set", s)],
            "--data",
            str(tiny_root),
            "--out",
            str(tmp_path / "o"),
            "--job-gpus",
            "0.5",
        ]
    )
    assert code == 2 and "--job-gpus only apply with --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_not_installed_is_one_clear_line(tiny_root, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            *[x for s in TINY for x in ("--set", s)],
            "--data",
            str(tiny_root),
            "--out",
            str(tmp_path / "o"),
            "--executor",
            "ray",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'harness[ray]'" in err and "Traceback" not in err


# --- failures, serial --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serial_failed_job_is_reported_while_the_other_finishes_and_a_rerun_retries_it(tiny_root, tmp_path):
    from tests.ray_jobs import fail_one

    out = tmp_path / "run"
    report = _run(TINY, tiny_root, out, run_one=fail_one)
    failed = report["failed_jobs"]
    assert [(j["variant"], j["seed"]) for j in failed] == [("scratch-usual", 0)]
    assert "RuntimeError: injected failure in scratch-usual seed 0" == failed[0]["error"]
    assert (out / "vgg16-scratch-none-s0" / "cam.json").is_file()
    log = json.loads((out / "jobs.json").read_text())["jobs"]
    assert (
        log["vgg16-scratch-usual-s0"]["status"] == "failed"
        and "Traceback" in log["vgg16-scratch-usual-s0"]["traceback"]
    )
    assert log["vgg16-scratch-none-s0"]["status"] == "done"
    html = (out / "report.html").read_text()
    assert 'data-job="vgg16-scratch-usual-s0"' in html and "injected failure" in html
    # the same command again (no injected failure) runs the failed job only; the report no longer lists it
    before = (out / "vgg16-scratch-none-s0" / "model.pt").stat().st_mtime_ns
    report = _run(TINY, tiny_root, out)
    assert report["failed_jobs"] == [] and (out / "vgg16-scratch-usual-s0" / "cam.json").is_file()
    assert (out / "vgg16-scratch-none-s0" / "model.pt").stat().st_mtime_ns == before
    log = json.loads((out / "jobs.json").read_text())["jobs"]
    assert log["vgg16-scratch-none-s0"]["status"] == "skipped" and log["vgg16-scratch-usual-s0"]["status"] == "done"
    assert 'id="failed-jobs"' not in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_failed_gated_variant_is_an_error(tiny_root, tmp_path):
    from tests import ray_jobs

    out = tmp_path / "run"
    prof_sets = TINY[:-3] + ["thresholds.gated=['scratch-usual']", "thresholds.accuracy={}", "thresholds.cam={}"]
    report = _run(prof_sets, tiny_root, out, run_one=ray_jobs.fail_one)
    assert report["verdict"] == "ERROR"  # a gated variant that has no results never passes by absence
    gated = [v for v in report["verdicts"] if v["gated"]]
    assert gated and all(v["status"] == "ERROR" for v in gated)


# --- the Ray executor on a local 2-CPU Ray -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray  # the test extra installs it: CI tests the Ray executor

    import tests.ray_jobs

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(tests.ray_jobs)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_serial_figures_at_the_same_thread_count(local_ray, tmp_path):
    """The same seed, the same per-job thread count (1): identical metrics.json figures and training curves, with
    the two Ray jobs running at once on the two CPUs."""
    threads = torch.get_num_threads()
    set_threads(1)
    try:
        _run(SMOKE, BUNDLED, tmp_path / "serial")
    finally:
        torch.set_num_threads(threads)
        runtime.set_default_threads(None)
    report = _run(SMOKE, BUNDLED, tmp_path / "ray", executor=executor_options("ray", job_cpus=1))
    serial, on_ray = _metrics(tmp_path / "serial"), _metrics(tmp_path / "ray")
    assert sorted(on_ray) == ["vgg16-scratch-mixup-s0", "vgg16-scratch-none-s0"]
    assert on_ray == serial
    assert report["failed_jobs"] == []
    cfg = json.loads((tmp_path / "ray" / "vgg16-scratch-none-s0" / "config.json").read_text())
    assert cfg["device"]["cpu_threads"] == 1  # the task set torch's threads to its CPU share
    log = json.loads((tmp_path / "ray" / "jobs.json").read_text())
    assert log["executor"]["name"] == "ray" and {j["status"] for j in log["jobs"].values()} == {"done"}
    assert all(j["pid"] != os.getpid() for j in log["jobs"].values())  # ran in workers, not here
    proto = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert proto["executor"] == {"name": "ray", "address": None, "job_cpus": 1, "job_gpus": None, "max_retries": 3}


@pytest.mark.slow
def test_ray_injected_failure_leaves_the_other_job_complete(local_ray, tiny_root, tmp_path, capsys):
    from tests.ray_jobs import fail_one

    out = tmp_path / "run"
    report = _run(TINY, tiny_root, out, executor=executor_options("ray"), run_one=fail_one)
    err = capsys.readouterr().err
    assert [j["id"] for j in report["failed_jobs"]] == ["vgg16-scratch-usual-s0"]
    assert report["failed_jobs"][0]["error"] == "RuntimeError: injected failure in scratch-usual seed 0"
    assert "FAILED [" in err and "done [" in err and "vgg16-scratch-none-s0" in err
    assert (out / "vgg16-scratch-none-s0" / "cam.json").is_file()
    assert 'data-job="vgg16-scratch-usual-s0"' in (out / "report.html").read_text()
    # rerun on Ray: the complete job is checked in the driver, the failed one runs in a worker
    report = _run(TINY, tiny_root, out, executor=executor_options("ray"))
    log = json.loads((out / "jobs.json").read_text())["jobs"]
    assert report["failed_jobs"] == [] and log["vgg16-scratch-none-s0"]["status"] == "skipped"
    assert log["vgg16-scratch-usual-s0"]["status"] == "done"


def _kill_first_worker_once(run_dir: Path, job_id: str, killed: list) -> None:
    """Wait for the job's training to start (its config.json), then SIGKILL the Ray worker running it."""
    import psutil

    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / job_id / "config.json").is_file():
        time.sleep(0.05)
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and ("harness:" in cmd or "_task" in cmd):
            killed.append(p.pid)
            os.kill(p.pid, signal.SIGKILL)
            return


@pytest.mark.slow
def test_ray_worker_killed_mid_job_is_retried_and_the_run_ends_complete(local_ray, tmp_path):
    out = tmp_path / "run"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_worker_once, args=(out, "vgg16-scratch-none-s0", killed))
    killer.start()
    report = _run(
        SMOKE[:-1] + ["levels=['none']"], BUNDLED, out, executor=executor_options("ray", job_cpus=2, max_retries=1)
    )
    killer.join()
    assert len(killed) == 1, "no Ray worker was found to kill"
    job = json.loads((out / "jobs.json").read_text())["jobs"]["vgg16-scratch-none-s0"]
    assert job["status"] == "done" and job["pid"] not in killed  # a second worker did it
    assert report["failed_jobs"] == [] and (out / "vgg16-scratch-none-s0" / "cam.json").is_file()
    assert not list(out.rglob(".*.tmp"))  # the killed attempt's temporaries were removed


@pytest.mark.slow
def test_ray_worker_killed_without_retries_is_a_failed_job(local_ray, tiny_root, tmp_path):
    out = tmp_path / "run"
    killed: list[int] = []
    sets = TINY[:-5] + [
        "levels=['none']",
        'phases.scratch=[{name="all", epochs=3}]',
        "thresholds.gated=[]",
        "thresholds.accuracy={}",
        "thresholds.cam={}",
    ]
    killer = threading.Thread(target=_kill_first_worker_once, args=(out, "vgg16-scratch-none-s0", killed))
    killer.start()
    report = _run(sets, tiny_root, out, executor=executor_options("ray", max_retries=0))
    killer.join()
    assert killed
    [failed] = report["failed_jobs"]
    assert failed["id"] == "vgg16-scratch-none-s0" and "the worker running it died; tried 1 time(s)" in failed["error"]


def _interrupt_when(paths_ready: Callable[[], bool]) -> threading.Thread:
    """A thread that sends this process SIGINT (Ctrl-C) once paths_ready() is true (within two minutes)."""

    def interrupt():
        deadline = time.time() + 120
        while time.time() < deadline and not paths_ready():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    return thread


@pytest.mark.slow
def test_ray_ctrl_c_cancels_the_running_jobs_and_waits_until_their_workers_stopped(
    local_ray, tiny_root, tmp_path, capsys
):
    from tests.ray_jobs import beat

    out = tmp_path / "run"
    interrupter = _interrupt_when(lambda: len(list(out.glob("*/beat"))) == 2)  # both jobs running in workers
    with pytest.raises(MatrixInterrupted) as info:
        _run(TINY, tiny_root, out, executor=executor_options("ray"), run_one=beat)
    interrupter.join()
    err = capsys.readouterr().err
    assert "interrupted: cancelling 2 job(s) on Ray" in err and "cancelled 2 job(s); their workers have stopped" in err
    assert info.value.still_running == ()
    beats = {p.parent.name: p.read_text() for p in out.glob("*/beat")}
    assert sorted(beats) == ["vgg16-scratch-none-s0", "vgg16-scratch-usual-s0"]
    time.sleep(1.0)  # a live worker rewrites its heartbeat ten times a second
    assert {p.parent.name: p.read_text() for p in out.glob("*/beat")} == beats
    assert not list(out.rglob(".*.tmp"))  # removed once the workers were confirmed stopped


class _UnansweringRay:
    """Just enough of Ray's API for the executor, as a remote cluster that never confirms a cancel: the first wait
    for finished jobs is interrupted (Ctrl-C), and cancelled jobs stay running. Each job on submission leaves a
    temporary in its folder, as a running step would."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.cancelled = run_dir, []

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def remote(self, **options):
        ray = self

        class Task:
            def options(self, name):
                job_id = name.removeprefix("harness:")
                return types.SimpleNamespace(remote=lambda ctx, job, run_one: ray._start(job_id))

        return lambda function: Task()

    def _start(self, job_id):
        (self.run_dir / job_id).mkdir(parents=True, exist_ok=True)
        (self.run_dir / job_id / ".metrics.json.1.tmp").write_text("")
        return job_id

    def wait(self, refs, num_returns=1, timeout=None, fetch_local=True):
        if not self.cancelled:
            raise KeyboardInterrupt
        return [], list(refs)

    def cancel(self, ref, force=False):
        self.cancelled.append((ref, force))


def test_jobs_a_cluster_does_not_confirm_stopped_are_named_and_their_folders_left_alone(
    tiny_root, tmp_path, capsys, monkeypatch
):
    import harness.executors.ray as ray_executor

    out = tmp_path / "run"
    fake = _UnansweringRay(out)
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_executor, "CANCEL_WAIT_S", 0.01)
    (out / "vgg16-scratch-none-s0").mkdir(parents=True)
    sets = [s for s in TINY if not s.startswith("levels=")] + ["levels=['none', 'usual', 'mixup']"]
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            *[x for s in sets for x in ("--set", s)],
            "--data",
            str(tiny_root),
            "--out",
            str(out),
            "--executor",
            "ray",
        ]
    )
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert sorted(fake.cancelled) == [(f"vgg16-scratch-{v}-s0", True) for v in ("mixup", "none", "usual")]
    assert (
        "warning: Ray did not confirm that 3 cancelled job(s) stopped: vgg16-scratch-mixup-s0, "
        "vgg16-scratch-none-s0, vgg16-scratch-usual-s0; they may still write into their folders"
    ) in err
    assert "ray list tasks" in err and err.strip().splitlines()[-1].startswith("interrupted: rerun the same command")
    # a live worker's temporaries are its own: none removed
    assert len(list(out.glob("*/.metrics.json.1.tmp"))) == 3


def test_remove_temporaries_keeps_what_is_below_the_kept_folders(tmp_path, capsys):
    from harness import runlock

    for job_id in ("a", "b"):
        (tmp_path / job_id / ".cam-staging-1").mkdir(parents=True)
        (tmp_path / job_id / ".model.onnx.7.tmp").write_text("")
    (tmp_path / ".report.json.3.tmp").write_text("")
    removed = runlock.remove_temporaries(tmp_path, keep=[tmp_path / "b"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        ".report.json.3.tmp",
        "a/.cam-staging-1",
        "a/.model.onnx.7.tmp",
    ]
    assert (tmp_path / "b" / ".cam-staging-1").is_dir() and (tmp_path / "b" / ".model.onnx.7.tmp").is_file()
    assert "removed 3 leftover temporaries" in capsys.readouterr().err


# --- a node that does not see the shared run directory fails fast -------------------------------------------------


def _ctx(tmp_path, tiny_root, sha="0" * 64, **kw):
    from harness.executors import JobContext

    return JobContext(
        run_dir=tmp_path / "run",
        profile=load_profile("smoke", TINY),
        data_root=tiny_root,
        weights_file=None,
        train_fingerprint=kw.pop("fp", "fp"),
        run_json_sha256=sha,
        **kw,
    )


def test_a_worker_that_cannot_see_the_run_directory_fails_fast_saying_so(tiny_root, tmp_path):
    from harness import artifacts
    from harness.artifacts import sha256_file
    from harness.executors import FAILED, Job, run_job

    job = Job("scratch-none", 0)
    result = run_job(_ctx(tmp_path, tiny_root), job)  # ds=None: as in a worker
    assert result.status == FAILED and result.error.startswith("SharedStorageError: node ")
    assert "cannot see the run directory" in result.error and "same path" in result.error
    assert not (tmp_path / "run" / "vgg16-scratch-none-s0").exists()  # nothing trained, nothing written
    artifacts.write_json(tmp_path / "run" / "run.json", {"a": 1})  # a local run.json, not the driver's
    result = run_job(_ctx(tmp_path, tiny_root), job)
    assert "sees another" in result.error and "run.json" in result.error
    sha = sha256_file(tmp_path / "run" / "run.json")
    result = run_job(_ctx(tmp_path, tiny_root, sha=sha, fp="another"), job)  # same path, another dataset
    assert "reads another training set" in result.error
    result = run_job(_ctx(tmp_path, tmp_path / "nowhere", sha=sha), job)
    assert "cannot see the dataset" in result.error


def test_set_threads_sizes_torch_and_every_onnxruntime_session(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        session = runtime.create_session(path, [runtime.CPU])
        assert session.get_session_options().intra_op_num_threads == 1
        assert runtime.create_session(path, [runtime.CPU], threads=2).get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(before)
        runtime.set_default_threads(None)
    assert runtime.create_session(path, [runtime.CPU]).get_session_options().intra_op_num_threads == 0  # ORT default
