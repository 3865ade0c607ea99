"""The gate cannot be made to lie: stale resume, identity (backbone, variant, seed), thresholds that do not apply,
nothing to judge, concurrent runs, preflight before any work, the CLI's last line of defence, housekeeping.

Each case builds its hostile input in the test (tiny images, VGG16 at 32 px, zero or one epoch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import artifacts, runlock
from harness.cli import main
from harness.config import load_profile
from harness.data import load_train
from harness.provenance import StaleRunError
from harness.thresholds import parse_thresholds
from harness.train import train_variant
from harness.verdicts import ERROR, FAIL, PASS, judge, overall
from tests.conftest import write_image
from tests.split_evidence import split_entry

TINY = [
    "backbone=vgg16",
    "image_size=32",
    "batch_size=4",
    "val_fraction=0.4",
    "device=cpu",
    "tta_hflip=false",
    "test_sets=['test_plain']",
    "inits=['scratch']",
    "levels=['none']",
    'phases.scratch=[{name="all", epochs=0}]',
    "thresholds.gated=[]",
    "thresholds.accuracy={}",
    "thresholds.cam={}",
]


def _profile(*extra: str):
    return load_profile("smoke", TINY + list(extra))


def _sets(*extra: str) -> list[str]:
    return [x for item in TINY + list(extra) for x in ("--set", item)]


# --- stale resume --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rerun_with_other_settings_refuses_to_reuse_old_models(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    ds = load_train(tiny_root)
    vdir = train_variant(out, _profile(), ds, tiny_root, "scratch-none", 0, progress=False)
    mtime = (vdir / "model.pt").stat().st_mtime_ns
    # another image size: the old model must not be reused under the new protocol
    with pytest.raises(StaleRunError, match=r"image_size: 32 -> 48"):
        train_variant(out, _profile("image_size=48"), ds, tiny_root, "scratch-none", 0, progress=False)
    # the CLI says so in one line, exit 2, and touches nothing
    code = main(
        [
            "train",
            "--profile",
            "smoke",
            *_sets("image_size=48"),
            "--data",
            str(tiny_root),
            "--variant",
            "scratch-none",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "image_size: 32 -> 48" in err and "--force" in err and "Traceback" not in err
    assert (vdir / "model.pt").stat().st_mtime_ns == mtime
    # --force retrains, and records the new inputs
    train_variant(out, _profile("image_size=48"), ds, tiny_root, "scratch-none", 0, force=True, progress=False)
    config = json.loads((vdir / "config.json").read_text())
    assert config["inputs"]["profile"]["image_size"] == 48


@pytest.mark.slow
def test_changed_training_data_is_stale(tiny_root, tmp_path):
    out = tmp_path / "run"
    train_variant(out, _profile(), load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    write_image(tiny_root / "train" / "red" / "red_extra.jpg", (200, 40, 40), seed=7)
    with pytest.raises(StaleRunError, match="train_data"):
        train_variant(out, _profile(), load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)


@pytest.mark.slow
def test_same_inputs_resume_and_other_dataset_location_with_same_content_is_current(tiny_root, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    train_variant(out, _profile(), load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_root, moved)
    train_variant(out, _profile(), load_train(moved), moved, "scratch-none", 0, progress=False)
    assert "already trained from the same inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_run_matrix_stale_check_happens_before_any_training(tiny_root, tmp_path, monkeypatch):
    """A stale folder anywhere in the run dir stops the run before the first (other) variant trains."""
    from harness import run as run_mod

    out = tmp_path / "run"
    prof = _profile()
    train_variant(out, prof, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    trained = []
    monkeypatch.setattr("harness.train.fit", lambda *a, **k: trained.append(1) or [])
    other = _profile("image_size=40", "levels=['usual', 'none']")
    thr = parse_thresholds(other.thresholds, other.source)
    with pytest.raises(StaleRunError, match="vgg16-scratch-none-s0"):
        run_mod.run_matrix(other, thr, tiny_root, out, progress=False)
    assert not trained and not (out / "vgg16-scratch-usual-s0").exists()


@pytest.mark.slow
def test_report_marks_a_folder_trained_with_other_settings(tiny_root, tmp_path):
    """A folder slipped into a run dir by hand is never judged under run.json's protocol."""
    from harness.report.build import build_report

    out = tmp_path / "run"
    ds = load_train(tiny_root)
    train_variant(out, _profile(), ds, tiny_root, "scratch-none", 0, progress=False)
    prof = _profile("image_size=48", "thresholds.gated=['scratch-none']")
    artifacts.write_json(
        out / "run.json",
        {
            "profile": prof.to_dict(),
            "variants": ["scratch-none"],
            "thresholds": parse_thresholds(prof.thresholds, "t").to_dict(),
        },
    )
    report = build_report(out)
    v = {f"{x['criterion']}[{x['id']}]": x for x in report["verdicts"]}
    assert report["verdict"] == ERROR
    assert "stale" in v["soft_above_constant[vgg16-scratch-none-test_plain]"]["detail"]


# --- identity: (backbone, variant, seed) ---------------------------------------------------------------------------


def _evidence(
    run: Path,
    backbone: str,
    variant: str,
    seed: int,
    soft: float,
    split: str = "test_difficult",
    n: int = 20,
    constant: float = 0.70,
) -> None:
    d = run / f"{backbone}-{variant}-s{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"variant": variant, "seed": seed, "backbone": backbone}))
    k = round(soft * n)
    s = split_entry(n, k, k, constant_soft_k=round(constant * n), constant_strict_k=round(0.3 * n))
    (d / "metrics.json").write_text(json.dumps({"test_sets": {split: s}}))


def test_two_backbones_in_one_run_are_two_models(tmp_path):
    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=1.0)
    _evidence(tmp_path, "efficientnet_lite0", "imagenet-all", 0, soft=0.40)  # would vanish if merged by name
    t = parse_thresholds({"gated": ["imagenet-all"], "accuracy": {"test_difficult": {"soft_min": 0.85}}}, "t")
    verdicts = judge(tmp_path, t, ["test_difficult"])
    acc = {v.id: v for v in verdicts if v.criterion == "accuracy"}
    assert set(acc) == {"vgg16-imagenet-all-test_difficult", "efficientnet_lite0-imagenet-all-test_difficult"}
    assert acc["vgg16-imagenet-all-test_difficult"].status == PASS
    assert acc["efficientnet_lite0-imagenet-all-test_difficult"].status == FAIL
    assert all(len(v.per_seed) == 1 for v in acc.values())
    # a backbone-qualified gated entry gates that model only
    t2 = parse_thresholds({"gated": ["vgg16-imagenet-all"], "accuracy": {"test_difficult": {"soft_min": 0.85}}}, "t")
    v2 = judge(tmp_path, t2, ["test_difficult"])
    assert {v.model for v in v2 if v.gated} == {"vgg16-imagenet-all"}
    assert all(v.status == PASS for v in v2 if v.gated and v.criterion in ("accuracy", "test_sets_judged"))


# --- thresholds that do not apply, and a gate with nothing to judge ------------------------------------------------


def test_threshold_for_a_test_set_the_run_does_not_have_is_an_error_before_any_work(tiny_root, tmp_path, capsys):
    thr = tmp_path / "t.toml"
    thr.write_text("[thresholds.accuracy.test_plian]\nsoft_min = 0.9\n")
    out = tmp_path / "never"
    code = main(
        ["run", "--profile", "smoke", *_sets(), "--data", str(tiny_root), "--thresholds", str(thr), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "test_plian" in err and "test_plain" in err
    assert not out.exists()


def test_gated_variant_not_in_the_matrix_is_an_error(tiny_root, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            *_sets("thresholds.gated=['imagenet-all']"),
            "--data",
            str(tiny_root),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "imagenet-all" in err and not out.exists()


def test_a_test_set_without_a_named_rule_is_still_judged_against_chance(tmp_path):
    """ImageFolder `test/`, thresholds only for CAM there: a below-chance model must not PASS."""
    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=0.125, split="test", n=8, constant=0.25)
    t = parse_thresholds(
        {"gated": ["imagenet-all"], "accuracy": {}, "cam": {"split": "test", "energy_share_min": 0.1}}, "t"
    )
    verdicts = judge(tmp_path, t, ["test"])
    by = {f"{v.criterion}[{v.id}]": v for v in verdicts}
    assert by["soft_above_constant[vgg16-imagenet-all-test]"].status == FAIL
    assert overall(verdicts) != PASS
    cov = by["test_sets_judged[vgg16-imagenet-all]"]
    assert cov.value == 1 and cov.threshold == 1 and "test by " in cov.detail and "soft_above_constant" in cov.detail
    # the default rule: above the constant answer by its margin, Wilson lower bound above it
    assert by["accuracy[vgg16-imagenet-all-test]"].threshold == 0.25 + 0.1
    assert by["accuracy[vgg16-imagenet-all-test]"].chance == 0.25
    assert by["wilson_above_constant[vgg16-imagenet-all-test]"].status == FAIL


def test_a_gated_variant_judged_on_no_test_set_is_an_error(tmp_path):
    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=1.0, split="test")
    t = parse_thresholds({"gated": ["imagenet-all"]}, "t")
    verdicts = judge(tmp_path, t, [])
    cov = [v for v in verdicts if v.criterion == "test_sets_judged"][0]
    assert cov.status == ERROR and overall(verdicts) == ERROR


def test_invalid_evidence_json_says_invalid_not_missing(tmp_path):
    _evidence(tmp_path, "vgg16", "imagenet-all", 0, soft=1.0)
    (tmp_path / "vgg16-imagenet-all-s0" / "metrics.json").write_text("{not json")
    t = parse_thresholds({"gated": ["imagenet-all"], "accuracy": {"test_difficult": {"soft_min": 0.85}}}, "t")
    v = [x for x in judge(tmp_path, t, ["test_difficult"]) if x.criterion == "accuracy"][0]
    assert v.status == ERROR and "invalid JSON" in v.detail and "missing" not in v.detail


# --- one writer per run directory ----------------------------------------------------------------------------------


def test_a_live_holder_keeps_the_lock_and_a_dead_one_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from harness import runlock; runlock.acquire(sys.argv[1], 'harness run --out X'); "
                "print('held', flush=True); time.sleep(60)"
            ),
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunLocked, match=rf"pid {holder.pid}.*harness run --out X"):
            runlock.acquire(run)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    lock = runlock.acquire(run)  # the holder is dead: its lock is taken over
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    runlock.release(lock)
    assert not lock.exists()


def test_second_harness_run_into_the_same_out_is_refused(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / runlock.LOCK_NAME).write_text(
        json.dumps(
            {"pid": os.getppid(), "host": os.uname().nodename, "command": "harness run (other)", "started": "now"}
        )
    )
    code = main(["run", "--profile", "smoke", *_sets(), "--data", str(tiny_root), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"pid {os.getppid()}" in err and "another --out" in err
    assert not (out / "run.json").exists()


def test_orphan_temporaries_are_removed_on_resume(tmp_path):
    run = tmp_path / "run"
    (run / "vgg16-scratch-none-s0").mkdir(parents=True)
    orphan = run / "vgg16-scratch-none-s0" / ".model.onnx.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    staging = run / "vgg16-scratch-none-s0" / ".cam-staging-999"
    (staging / "cam").mkdir(parents=True)
    keep = run / "vgg16-scratch-none-s0" / "model.onnx"
    keep.write_bytes(b"y")
    with runlock.hold(run):
        pass
    assert not orphan.exists() and not staging.exists() and keep.exists()


# --- preflight: found before the first variant trains, before anything is written ----------------------------------


@pytest.mark.parametrize(
    "extra, args, needle",
    [
        ([], ["--variants", "scratch-heavy"], "heavy"),
        (
            ["inits=['scratch', 'imagenet']", 'phases.imagenet=[{name="all", epochs=0}]'],
            ["--weights-file", "/nonexistent/vgg16.pth"],
            "/nonexistent/vgg16.pth",
        ),
        (["device=cuda"], [], "cuda"),
    ],
)
def test_preflight_errors_come_before_any_work(tiny_root, tmp_path, capsys, monkeypatch, extra, args, needle):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    trained = []
    monkeypatch.setattr("harness.train.fit", lambda *a, **k: trained.append(1) or [])
    out = tmp_path / "reports" / "runs" / "x"
    code = main(["run", "--profile", "smoke", *_sets(*extra), "--data", str(tiny_root), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not trained and not out.exists() and not (tmp_path / "reports" / "latest").exists()


def test_missing_imagenet_weights_found_before_the_scratch_variants_train(tiny_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    trained = []
    monkeypatch.setattr("harness.train.fit", lambda *a, **k: trained.append(1) or [])
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            *_sets("inits=['scratch', 'imagenet']", 'phases.imagenet=[{name="all", epochs=0}]'),
            "--data",
            str(tiny_root),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "VGG16 ImageNet weights" in err and not trained and not (tmp_path / "out").exists()


# --- the CLI's last line of defence --------------------------------------------------------------------------------


def test_unexpected_exception_is_one_line_with_a_log_file(tiny_root, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom inside")

    monkeypatch.setattr("harness.cli_commands.run_matrix", boom)
    out = tmp_path / "run"
    out.mkdir()
    code = main(["run", "--profile", "smoke", *_sets(), "--data", str(tiny_root), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "RuntimeError" in err[0] and "--debug" in err[0]
    logs = list(out.glob("harness-error-*.log"))
    assert len(logs) == 1 and "kaboom inside" in logs[0].read_text() and "Traceback" in logs[0].read_text()
    with pytest.raises(RuntimeError, match="kaboom"):
        main(["run", "--debug", "--profile", "smoke", *_sets(), "--data", str(tiny_root), "--out", str(out)])


def test_bad_seeds_option_is_a_clear_error(tiny_root, tmp_path, capsys):
    code = main(
        ["run", "--profile", "smoke", *_sets(), "--data", str(tiny_root), "--seeds", "a", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--seeds 'a'" in err and not (tmp_path / "o").exists()


def test_checkpoint_without_harness_keys_is_named(tmp_path):
    from harness.train import load_checkpoint

    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"model\.pt: not a harness checkpoint: keys \['state_dict'"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a harness checkpoint"):
        load_checkpoint(path)


# --- the full pipeline on a tiny run: latest, --data for a moved dataset, cam --force, path traversal -------------


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """`harness run` on a tiny ImageFolder dataset (VGG16 32 px, no training): a complete run directory."""
    from tests.conftest import COLORS

    root = tmp_path_factory.mktemp("tinydata")
    for cls, color in COLORS.items():
        for i in range(3):
            write_image(root / "train" / cls / f"{cls}_{i}.jpg", color, seed=i)
        write_image(root / "test_plain" / cls / f"t_{cls}.jpg", color, seed=99)
    base = tmp_path_factory.mktemp("elsewhere")
    out = base / "runs" / "tiny"  # a folder called runs outside the project's reports/
    assert main(["run", "--profile", "smoke", *_sets(), "--data", str(root), "--out", str(out)]) == 0
    return root, out, base


@pytest.mark.slow
def test_latest_is_only_written_under_the_projects_reports(tiny_pipeline):
    _, out, base = tiny_pipeline
    assert (out / "report.json").is_file()
    assert not (base / "latest").exists() and not (base / "latest").is_symlink()


@pytest.mark.slow
def test_steps_accept_data_for_a_moved_dataset(tiny_pipeline, tmp_path, capsys):
    import shutil

    root, out, _ = tiny_pipeline
    run = tmp_path / "run"
    shutil.copytree(out, run)
    moved = tmp_path / "moved-data"
    shutil.copytree(root, moved)
    config = run / "vgg16-scratch-none-s0" / "config.json"
    c = json.loads(config.read_text())
    c["data_root"] = str(tmp_path / "gone")
    config.write_text(json.dumps(c))
    assert main(["evaluate", str(run), "--repeats", "1"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["export", str(run), "--data", str(moved)]) == 0  # same content: still current
    assert "already exported" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--repeats", "1", "--data", str(moved)]) == 0
    assert main(["cam", str(run), "--data", str(moved)]) == 0


@pytest.mark.slow
def test_cam_force_keeps_the_valid_cam_json_when_the_checkpoint_does_not_load(tiny_pipeline, tmp_path, capsys):
    import shutil

    _, out, _ = tiny_pipeline
    run = tmp_path / "run"
    shutil.copytree(out, run)
    vdir = run / "vgg16-scratch-none-s0"
    before = (vdir / "cam.json").read_bytes()
    overlays = sorted(p.relative_to(vdir) for p in (vdir / "cam").rglob("*.png"))
    (vdir / "model.pt").write_bytes(b"garbage")
    assert main(["cam", str(run), "--force"]) == 2
    assert "model.pt" in capsys.readouterr().err
    assert (vdir / "cam.json").read_bytes() == before
    assert sorted(p.relative_to(vdir) for p in (vdir / "cam").rglob("*.png")) == overlays


@pytest.mark.slow
def test_retrained_model_makes_export_evaluate_and_cam_rerun(tiny_pipeline, tmp_path, capsys):
    """Downstream steps record what they were made from and redo themselves when it changed."""
    import shutil

    root, out, _ = tiny_pipeline
    run = tmp_path / "run"
    shutil.copytree(out, run)
    vdir = run / "vgg16-scratch-none-s0"
    old = {f: json.loads((vdir / f).read_text()) for f in ("export.json", "metrics.json", "cam.json")}
    capsys.readouterr()
    assert (
        main(["run", "--profile", "smoke", *_sets("seeds=[0]", "hidden=32"), "--data", str(root), "--out", str(run)])
        == 2
    )
    assert "hidden: 256 -> 32" in capsys.readouterr().err
    assert (
        main(["run", "--profile", "smoke", *_sets("hidden=32"), "--data", str(root), "--out", str(run), "--force"]) == 0
    )
    new = {f: json.loads((vdir / f).read_text()) for f in ("export.json", "metrics.json", "cam.json")}
    assert new["export.json"]["inputs"]["model_sha256"] != old["export.json"]["inputs"]["model_sha256"]
    assert new["metrics.json"]["inputs"]["onnx_sha256"] == new["export.json"]["sha256"]
    assert new["cam.json"]["inputs"]["model_sha256"] == new["export.json"]["inputs"]["model_sha256"]


@pytest.mark.slow
def test_path_traversal_writes_nothing_outside_the_run(tiny_pipeline, tmp_path, capsys):
    """An annotation pointing outside the dataset is refused before anything is read or written."""
    root, _, _ = tiny_pipeline
    import shutil

    data = tmp_path / "data"
    shutil.copytree(root, data)
    outside = tmp_path / "secret.png"
    write_image(outside, (1, 2, 3))
    (data / "annotations").mkdir()
    (data / "annotations" / "test_evil.json").write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "../secret.png", "primary_label": "red", "acceptable_labels": ["red"]}
                ],
                "annotations": [],
                "categories": [{"id": 1, "name": "red"}],
            }
        )
    )
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "run"
    code = main(
        ["run", "--profile", "smoke", *_sets("test_sets=['test_evil']"), "--data", str(data), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "test_evil.json" in err and "images[0]" in err
    assert {p for p in tmp_path.rglob("*")} == before  # no run dir, no overlay, nothing anywhere


@pytest.mark.slow
def test_train_lite0_imagenet_with_the_smoke_profile(tmp_path, bundled_root):
    """`harness train --backbone efficientnet_lite0 --variant imagenet-all --profile smoke` works: fine-tuning
    start points are named per backbone (smoke's "upper" is blocks.5 for lite0)."""
    t0 = time.perf_counter()
    code = main(
        [
            "train",
            "--backbone",
            "efficientnet_lite0",
            "--variant",
            "imagenet-all",
            "--profile",
            "smoke",
            "--data",
            str(bundled_root),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "image_size=32",
        ]
    )
    assert code == 0, time.perf_counter() - t0
    config = json.loads((tmp_path / "run" / "efficientnet_lite0-imagenet-all-s0" / "config.json").read_text())
    assert config["profile"]["phases"]["imagenet"][1]["train_from"] == "upper"
