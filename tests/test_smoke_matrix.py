"""End to end: the smoke profile runs all 8 VGG16 variants through train, export, evaluate, cam and the reports.

VGG16's ImageNet weights cannot be downloaded here, so the imagenet variants load a *generated* checkpoint through
the real loading path (--weights-file). This proves the paths, not the quality of any model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "small-book-images"


@pytest.mark.slow
def test_smoke_profile_all_eight_vgg16_variants(tmp_path, capsys, monkeypatch):
    from torchvision.models import vgg16

    monkeypatch.chdir(tmp_path)  # `latest` is only ever written under the project's reports/ (here: tmp_path's)
    weights = tmp_path / "generated-vgg16.pth"
    torch.manual_seed(0)
    torch.save(vgg16().state_dict(), weights)
    out = tmp_path / "reports" / "runs" / "smoke"
    code = main(["run", "--profile", "smoke", "--data", str(DATA), "--weights-file", str(weights), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed  # smoke gates nothing: UNGATED is not a failure
    folders = sorted(p.name for p in out.iterdir() if (p / "config.json").is_file())  # model folders (not audit/)
    expected = sorted(f"vgg16-{i}-{l}-s0" for i in ("scratch", "imagenet") for l in ("none", "usual", "mixup", "all"))
    assert folders == expected
    for name in folders:
        for f in ("config.json", "history.csv", "model.pt", "model.onnx", "export.json", "metrics.json", "cam.json"):
            assert (out / name / f).is_file(), f"{name}/{f} missing"
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "UNGATED" and set(report["matrix"]) == {n[:-3] for n in folders}
    assert (out / "report.html").stat().st_size > 10_000
    assert (tmp_path / "reports" / "latest").resolve() == out.resolve()
    # rerun resumes: nothing is retrained
    mtimes = {n: (out / n / "model.pt").stat().st_mtime_ns for n in folders}
    assert (
        main(["run", "--profile", "smoke", "--data", str(DATA), "--weights-file", str(weights), "--out", str(out)]) == 0
    )
    assert mtimes == {n: (out / n / "model.pt").stat().st_mtime_ns for n in folders}
