"""The gate must fail deliberately broken models (a random-weight checkpoint, a model that always answers 'bayes'),
through the real pipeline and the cpu profile's thresholds; the profile is shrunk (VGG16 at 32 px, no training)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import artifacts
from harness.artifacts import sha256_file
from harness.config import load_profile
from harness.data import load_train
from harness.run import run_matrix
from harness.thresholds import parse_thresholds
from harness.train import train_variant

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "small-book-images"
SHRINK = [
    "backbone=vgg16",
    "image_size=32",
    "tta_hflip=false",
    "inits=['scratch']",
    "levels=['all']",
    'phases.scratch=[{name="all", epochs=0}]',
    "thresholds.gated=['scratch-all']",
]


@pytest.fixture(scope="module")
def cpu_gate():
    profile = load_profile("cpu", SHRINK)
    return profile, parse_thresholds(profile.thresholds, profile.source)


def _by_id(report: dict) -> dict[str, dict]:
    return {f"{v['criterion']}[{v['id']}]": v for v in report["verdicts"]}


def test_random_weights_fail_the_gate(cpu_gate, tmp_path):
    profile, thresholds = cpu_gate
    report = run_matrix(profile, thresholds, DATA, tmp_path / "random", progress=False)
    verdicts = _by_id(report)
    assert report["verdict"] in ("FAIL", "ERROR")  # ERROR too where its saliency maps fail their sanity check
    assert verdicts["accuracy[vgg16-scratch-all-test_easy]"]["status"] == "FAIL"
    assert (
        verdicts["onnx_parity[vgg16-scratch-all]"]["status"] == "PASS"
    )  # the pipeline worked; the model is what failed
    # and the pytest gate itself exits non-zero, naming the failing criteria
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "suites" / "test_gate.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--run-dir",
            str(tmp_path / "random"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED" in proc.stdout and "test_accuracy[vgg16-scratch-all-test_easy]" in proc.stdout


def test_constant_answer_fails_the_gate(cpu_gate, tmp_path):
    profile, thresholds = cpu_gate
    run_dir = tmp_path / "constant"
    ds = load_train(DATA)
    vdir = train_variant(run_dir, profile, ds, DATA, "scratch-all", 0, progress=False)
    ckpt = torch.load(vdir / "model.pt", weights_only=True)
    bayes = ckpt["classes"].index("bayes")
    # the head's last layer, whatever the profile's head (cpu: hidden = 0, one linear layer: head.2)
    last = max(
        (k[: -len(".weight")] for k in ckpt["state_dict"] if k.startswith("head.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    ckpt["state_dict"][f"{last}.weight"].zero_()
    ckpt["state_dict"][f"{last}.bias"].copy_(
        torch.nn.functional.one_hot(torch.tensor(bayes), len(ckpt["classes"])) * 10.0
    )
    artifacts.save_torch(vdir / "model.pt", ckpt)
    # as if training had produced it: history.json vouches for the checkpoint that the later steps must use
    history = artifacts.read_json(vdir / "history.json")
    artifacts.write_json(vdir / "history.json", history | {"model_sha256": sha256_file(vdir / "model.pt")})
    report = run_matrix(profile, thresholds, DATA, run_dir, progress=False)  # resumes: keeps the broken checkpoint
    difficult = report["variants"][vdir.name]["test_sets"]["test_difficult"]
    assert {p["predicted"] for p in difficult["predictions"]} == {"bayes"}
    assert difficult["soft"]["value"] == pytest.approx(0.70)  # the constant answer's well-known score
    verdicts = _by_id(report)
    assert report["verdict"] in ("FAIL", "ERROR")
    # a model that ignores its input has occlusion maps that ignore it too: never a localization PASS
    assert verdicts["occlusion_sanity[vgg16-scratch-all]"]["value"] == 1.0
    assert verdicts["occlusion_energy[vgg16-scratch-all-test_difficult]"]["status"] == "ERROR"
    assert verdicts["soft_above_constant[vgg16-scratch-all-test_difficult]"]["status"] == "FAIL"
    assert verdicts["strict_above_constant[vgg16-scratch-all-test_difficult]"]["status"] == "FAIL"
    assert verdicts["accuracy[vgg16-scratch-all-test_difficult]"]["status"] == "FAIL"
