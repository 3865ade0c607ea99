"""Resume by default: Ctrl-C mid-matrix, then the same `harness run` (no --out) picks the interrupted run up without
retraining what was done; `--new` and a complete run start fresh; find_resumable's rules; ETA and summary lines.

The end-to-end case is the smoke profile shrunk to VGG16 at 32 px, 2 epochs on 15 generated images, 2 variants.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import artifacts, runlock
from harness.cli import main
from harness.cli_commands import _print_verdicts
from harness.config import load_profile
from harness.run import matrix_eta
from harness.rundir import STEP_OUTPUTS, find_resumable, latest_run, matrix_progress, run_identity
from harness.timing import clock
from tests.conftest import COLORS, write_image

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "image_size=32",
    "batch_size=4",
    "val_fraction=0.4",
    "device=cpu",
    "tta_hflip=false",
    "test_sets=['test_plain']",
    "inits=['scratch']",
    "levels=['none', 'usual']",
    'phases.scratch=[{name="all", epochs=2}]',
    "thresholds.gated=[]",
    "thresholds.accuracy={}",
    "thresholds.cam={}",
]
ARGS = ["run", "--profile", "smoke", *[x for s in TINY for x in ("--set", s)], "--data", "data"]
FIRST, SECOND = "vgg16-scratch-none-s0", "vgg16-scratch-usual-s0"

# the real CLI in a subprocess whose fit() delivers a real SIGINT to itself when the variant named by KILL_IN
# starts training (deterministic: no race with a timer), after leaving a half-written temporary behind
KILLER = """
import os, signal, sys, time
from pathlib import Path
import harness.train as t
real = t.fit
def fit(model, data, level, profile, phases, device, seed, label="", *a, **k):
    if label == os.environ["KILL_IN"]:
        tmp = Path("reports/runs").glob("*/" + label)
        (next(tmp) / ".model.pt.half.tmp").write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # the KeyboardInterrupt arrives first
    return real(model, data, level, profile, phases, device, seed, label, *a, **k)
t.fit = fit
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder holding its data (train/ 3 classes x 5 images, test_plain/ 3 images) and nothing else."""
    proj = tmp_path / "proj"
    for cls, color in COLORS.items():
        for i in range(5):
            write_image(proj / "data" / "train" / cls / f"{cls}_{i}.jpg", color, seed=i)
        write_image(proj / "data" / "test_plain" / cls / f"t_{cls}.jpg", color, seed=99)
    return proj


def _runs(proj: Path) -> list[str]:
    return sorted(p.name for p in (proj / "reports" / "runs").iterdir() if p.is_dir())


def _interrupt_at_once(monkeypatch) -> None:
    def fit(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.train.fit", fit)


@pytest.mark.slow
def test_ctrl_c_mid_matrix_then_the_same_command_resumes_without_retraining(project, monkeypatch, capsys):
    env = {**os.environ, "KILL_IN": SECOND, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, *ARGS], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    err = proc.stderr.strip().splitlines()
    (run_id,) = _runs(project)
    run = project / "reports" / "runs" / run_id
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert err[-1] == f"interrupted: rerun the same command to resume (reports/runs/{run_id})"
    assert "Traceback" not in proc.stderr
    # the current step's temporary is gone, the lock released, the finished variant complete, the other not
    assert not list(run.rglob("*.tmp")) and any("removed 1 leftover temporary" in line for line in err)
    assert not (run / runlock.LOCK_NAME).exists()
    assert all((run / FIRST / f).is_file() for f in STEP_OUTPUTS)
    assert (run / SECOND / "config.json").is_file() and not (run / SECOND / "history.json").exists()
    assert not (run / "report.json").exists()
    assert (project / "reports" / "latest").resolve() == run.resolve()
    # ETA: the per-epoch line (epochs counted over the variant) and the matrix line once a variant was measured
    assert re.search(
        rf"^\[{FIRST}\] epoch 1/2 \(all 1/2\) loss .* \d+\.\ds \| variant \d+:\d\d elapsed, "
        rf"~\d+:\d\d left$",
        proc.stderr,
        re.M,
    ), proc.stderr[-3000:]
    assert re.search(rf"^\[{FIRST}\] epoch 2/2 \(all 2/2\) .* \| variant \d+:\d\d elapsed$", proc.stderr, re.M)
    assert re.search(r"^== \[1/2\] scratch-none seed 0 \(0:00 elapsed\)$", proc.stderr, re.M)
    assert re.search(
        r"^== \[2/2\] scratch-usual seed 0 \(\d+:\d\d elapsed, ~\d+:\d\d left for the matrix\)$", proc.stderr, re.M
    )
    done = {f: (run / FIRST / f).stat().st_mtime_ns for f in STEP_OUTPUTS}
    history = (run / FIRST / "history.json").read_bytes()

    # the same command, no --out: resumes that run, says so, retrains nothing that was done
    monkeypatch.chdir(project)
    code = main(list(ARGS))
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]  # smoke gates nothing: UNGATED
    assert f"resuming reports/runs/{run_id} (1 of 2 variants done); --new starts a fresh run" in err.splitlines()
    assert _runs(project) == [run_id]
    assert {f: (run / FIRST / f).stat().st_mtime_ns for f in STEP_OUTPUTS} == done
    assert (run / FIRST / "history.json").read_bytes() == history
    assert all((run / SECOND / f).is_file() for f in STEP_OUTPUTS) and (run / "report.json").is_file()
    assert re.search(r"^== \[1/2\] scratch-none seed 0 \(\d+:\d\d elapsed; already complete\)$", err, re.M)
    # the end of the run: no gated verdicts here, one line counting the rest, the verdict, where the report is
    lines = out.strip().splitlines()
    assert re.fullmatch(r"ablations: \d+ verdicts \(.*\); details in report\.html", lines[-4]), lines
    assert lines[-3:] == [
        "verdict: UNGATED",
        f"report: reports/runs/{run_id}/report.html",
        f"summary: reports/runs/{run_id}/summary.md",
    ]

    # a complete run is not resumed: the same command starts a fresh one (interrupted at once here, for speed)
    _interrupt_at_once(monkeypatch)
    assert main(list(ARGS)) == 130
    err = capsys.readouterr().err
    assert "resuming" not in err
    fresh = [r for r in _runs(project) if r != run_id]
    assert (
        len(fresh) == 1
        and err.strip().splitlines()[-1] == f"interrupted: rerun the same command to resume (reports/runs/{fresh[0]})"
    )
    # that one is resumable now, but --new starts yet another (a name of its own even within the same second)
    assert (
        find_resumable(Path("reports"), artifacts.read_json(Path("reports/runs") / fresh[0] / "run.json"))
        == Path("reports/runs") / fresh[0]
    )
    # the same command still running elsewhere holds it: refused, naming --new as the way out
    lock = Path("reports/runs") / fresh[0] / runlock.LOCK_NAME
    lock.write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "command": "harness run", "started": "now"})
    )
    assert main(list(ARGS)) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getppid()}" in err and "--new" in err
    lock.unlink()
    assert main([*ARGS, "--new"]) == 130
    err = capsys.readouterr().err
    assert "resuming" not in err and len(_runs(project)) == 3
    assert {f: (run / FIRST / f).stat().st_mtime_ns for f in STEP_OUTPUTS} == done  # the first run untouched
    # --new names no folder: combined with --out it is an error, before anything is written
    assert main([*ARGS, "--new", "--out", "elsewhere"]) == 2
    assert "--new" in capsys.readouterr().err and not (project / "elsewhere").exists()


# --- find_resumable ------------------------------------------------------------------------------------------------


def _proto(**changes) -> dict:
    """A protocol as run_matrix records it (tuples and all, before the JSON round trip)."""
    profile = load_profile("smoke", TINY + changes.pop("sets", []))
    proto = {
        "profile": profile.to_dict(),
        "variants": list(profile.variants),
        "seeds": list(profile.seeds),
        "data_root": "/data/books",
        "weights_file": None,
        "data": {"train": "sha-train", "test": {"test_plain": "sha-test"}, "classes": ["a", "b"]},
        "thresholds": {"gated": (), "source": "smoke.toml"},
        "device": {"type": "cpu"},
        "argv": ["harness"],
    }
    proto.update(changes)
    return proto


def _recorded(reports: Path, name: str, proto: dict, done: int = 0, report: bool = False) -> Path:
    """reports/runs/<name>/run.json, with the first `done` (variant, seed) folders holding every step's output."""
    run = reports / "runs" / name
    artifacts.write_json(run / "run.json", proto)
    for variant in proto["variants"][:done]:
        for f in STEP_OUTPUTS:
            artifacts.write_text(run / f"vgg16-{variant}-s0" / f, "{}")
    if report:
        artifacts.write_json(run / "report.json", {})
    return run


def test_same_command_incomplete_run_is_resumable(tmp_path):
    reports = tmp_path / "reports"
    run = _recorded(reports, "a", _proto(), done=1)
    assert find_resumable(reports, _proto()) == run
    assert matrix_progress(run, _proto()) == (1, 2)
    # where the profile or thresholds were read from is not what they say: still the same command
    other_source = _proto()
    other_source["profile"]["source"] = "/elsewhere/smoke.toml"
    assert find_resumable(reports, other_source | {"device": {"type": "cuda"}, "argv": ["x"]}) == run


@pytest.mark.parametrize(
    "change",
    [
        {"seeds": [0, 1]},
        {"seeds": [1]},
        {"variants": ["scratch-none"]},
        {"data_root": "/data/other"},
        {"weights_file": "/w/vgg16.pth"},
        {"sets": ["image_size=48"]},
        {"sets": ["backbone=efficientnet_lite0"]},
        {"sets": ["augment.rotation=10.0"]},
        {"thresholds": {"gated": ["scratch-none"], "source": "smoke.toml"}},
        {"data": {"train": "sha-other", "test": {"test_plain": "sha-test"}, "classes": ["a", "b"]}},
    ],
    ids=lambda c: next(iter(c.values())) if "sets" in c else next(iter(c)),
)
def test_another_command_is_not_resumed(tmp_path, change):
    reports = tmp_path / "reports"
    _recorded(reports, "a", _proto(), done=1)
    assert find_resumable(reports, _proto(**change)) is None


def test_a_complete_run_is_not_resumed_and_completeness_needs_every_output(tmp_path):
    reports = tmp_path / "reports"
    run = _recorded(reports, "a", _proto(), done=2, report=True)
    assert find_resumable(reports, _proto()) is None
    (run / "report.json").unlink()  # killed while writing the report
    assert find_resumable(reports, _proto()) == run
    artifacts.write_json(run / "report.json", {})
    (run / "vgg16-scratch-usual-s0" / "cam.json").unlink()  # --force redo interrupted: an old report.json stays
    assert find_resumable(reports, _proto()) == run and matrix_progress(run, _proto()) == (1, 2)


def test_black_box_saliency_outputs_count_towards_completeness(tmp_path):
    reports = tmp_path / "reports"
    proto = _proto(sets=["saliency.methods=['gradcam', 'occlusion']"])
    run = _recorded(reports, "a", proto, done=2, report=True)
    assert matrix_progress(run, proto) == (0, 2)
    for v in proto["variants"]:
        artifacts.write_text(run / f"vgg16-{v}-s0" / "occlusion.json", "{}")
    assert matrix_progress(run, proto) == (2, 2) and find_resumable(reports, proto) is None


def test_only_the_latest_run_is_considered(tmp_path):
    reports = tmp_path / "reports"
    mine = _recorded(reports, "mine", _proto(), done=1)
    other = _recorded(reports, "other", _proto(seeds=[1]))
    os.utime(mine / "run.json", ns=(1_000_000_000, 1_000_000_000))
    # no `latest`: the run whose run.json is newest, here another command's -> nothing to resume
    assert latest_run(reports) == reports / "runs" / "other" and find_resumable(reports, _proto()) is None
    (reports / "latest").symlink_to(Path("runs") / "mine")
    assert latest_run(reports) == reports / "runs" / "mine" and find_resumable(reports, _proto()) == mine
    (reports / "latest").unlink()
    (reports / "latest").symlink_to(Path("runs") / "gone")  # dangling: back to the newest run.json
    assert latest_run(reports) == reports / "runs" / "other"
    assert other.is_dir()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'"a string"'])
def test_unreadable_or_foreign_run_json_is_not_resumed(tmp_path, content):
    reports = tmp_path / "reports"
    run = _recorded(reports, "a", _proto(), done=1)
    (run / "run.json").write_bytes(content)
    assert find_resumable(reports, _proto()) is None


def test_nothing_to_resume_without_a_reports_folder(tmp_path):
    assert latest_run(tmp_path / "reports") is None and find_resumable(tmp_path / "reports", _proto()) is None


def test_identity_is_the_json_form_without_sources():
    ident = run_identity(_proto())
    assert set(ident) == {"profile", "variants", "seeds", "data_root", "weights_file", "data", "thresholds"}
    assert "source" not in ident["profile"] and "source" not in ident["thresholds"]
    assert ident == json.loads(json.dumps(ident))  # tuples became lists: compares equal to run.json read back


# --- ETA and the end-of-run summary --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0:00"),
        (0.4, "0:00"),
        (59.6, "1:00"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (36061, "10:01:01"),
        (-5, "0:00"),
        (float("nan"), "0:00"),
    ],
)
def test_clock(seconds, text):
    assert clock(seconds) == text


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_clock_reads_back_as_the_rounded_seconds(seconds):
    parts = [int(p) for p in clock(seconds).split(":")]
    assert len(parts) in (2, 3) and all(0 <= p < 60 for p in parts[1:])
    assert (len(parts) == 3) == (round(seconds) >= 3600) and (len(parts) == 2 or parts[0] > 0)
    assert sum(p * 60**i for i, p in enumerate(reversed(parts))) == round(seconds)


def test_matrix_eta_is_the_mean_measured_variant_time_times_what_is_left():
    assert matrix_eta(312, [], 8) == "5:12 elapsed"  # nothing measured yet: no guess
    assert matrix_eta(312, [100, 200], 0) == "5:12 elapsed"
    assert matrix_eta(312, [100, 200], 6) == "5:12 elapsed, ~15:00 left for the matrix"


def _v(status: str, gated: bool, crit: str = "accuracy", vid: str = "m-test") -> dict:
    return {
        "status": status,
        "gated": gated,
        "criterion": crit,
        "id": vid,
        "value": 0.5,
        "threshold": 0.6,
        "comparison": ">=",
        "detail": "d",
    }


def test_summary_prints_gated_verdicts_and_counts_the_ablations(capsys):
    report = {
        "verdict": "FAIL",
        "verdicts": [
            _v("FAIL", True),
            _v("PASS", True, "onnx_parity", "m"),
            *[_v("SKIP", False)] * 2,
            *[_v("FAIL", False)] * 3,
            _v("PASS", False),
            _v("ERROR", False),
        ],
    }
    _print_verdicts(report)
    assert capsys.readouterr().out.splitlines() == [
        "FAIL  GATE accuracy[m-test] 0.5 >= 0.6  d",
        "PASS  GATE onnx_parity[m] 0.5 >= 0.6  d",
        "ablations: 7 verdicts (1 PASS, 3 FAIL, 1 ERROR, 2 SKIP); details in report.html",
        "verdict: FAIL",
    ]
    _print_verdicts({"verdict": "PASS", "verdicts": [_v("PASS", True), _v("SKIP", False)]})
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "ablations: 1 verdict (1 SKIP); details in report.html",
        "verdict: PASS",
    ]
    _print_verdicts({"verdict": "PASS", "verdicts": [_v("PASS", True)]})
    assert capsys.readouterr().out.splitlines() == ["PASS  GATE accuracy[m-test] 0.5 >= 0.6  d", "verdict: PASS"]


def test_the_gate_run_has_a_folder_of_its_own(tmp_path, monkeypatch):
    """The pytest gate's plan for `pytest --harness-profile P` (suites: --profile P) without --out: a folder under
    reports/gate/, so point_latest leaves `latest` (the user's main run) alone."""
    from harness.gate import make_plan
    from harness.pytest_plugin import GateOptions
    from harness.rundir import default_run_dir, point_latest

    monkeypatch.chdir(tmp_path)
    gate = Path(make_plan(GateOptions(profile="smoke", sets=tuple(TINY), data=tmp_path / "data")).run_dir)
    assert gate.parent == Path("reports") / "gate" and gate.name.endswith("-smoke-vgg16")
    gate.mkdir(parents=True)
    assert point_latest(gate) is None and not Path("reports/latest").exists()
    # and two runs made within the same second get folders of their own
    profile = load_profile("smoke", TINY)
    first = default_run_dir(profile)
    first.mkdir(parents=True)
    assert default_run_dir(profile) != first
