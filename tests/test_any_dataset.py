"""Any dataset, any test split: `harness run --profile cpu --data DIR` on a plain ImageFolder dataset (train/ and
test/, no boxes) needs no extra option, is judged by accuracy criteria, skips localization and speaks of no books."""

from __future__ import annotations

import re

import pytest

from harness import artifacts
from harness.cli import main
from tests.conftest import write_image

CLOTHES = {
    "coat": (200, 40, 40),
    "dress": (40, 200, 40),
    "shirt": (40, 40, 200),
    "shoe": (200, 200, 40),
    "trouser": (40, 200, 200),
}
CHEAP = [
    "--variants",
    "imagenet-all",
    "--set",
    "image_size=32",
    "--set",
    "batch_size=4",
    "--set",
    'phases.imagenet=[{name="head", epochs=2, lr=0.01, train_from="head"}]',
    "--set",
    "saliency.sanity_images=2",
    "--set",
    "saliency.occlusion.window=16",
    "--set",
    "saliency.occlusion.stride=16",
]


@pytest.mark.slow
def test_the_cpu_profile_on_an_imagefolder_dataset_needs_no_extra_option(tmp_path, capsys):
    root = tmp_path / "clothes"
    for k, (cls, color) in enumerate(CLOTHES.items()):
        for i in range(4):
            write_image(root / "train" / cls / f"{cls}_{i}.jpg", color, seed=10 * k + i)
        for i in range(2):
            write_image(root / "test" / cls / f"t_{cls}_{i}.jpg", color, seed=100 + 10 * k + i)
    out = tmp_path / "run"
    code = main(["run", "--profile", "cpu", "--data", str(root), "--out", str(out), *CHEAP])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err[-2000:]
    report = artifacts.read_json(out / "report.json")
    assert report["verdict"] in ("PASS", "FAIL")
    assert artifacts.read_json(out / "run.json")["profile"]["test_sets"] == ["test"]
    by = {f"{v['criterion']}[{v['id']}]": v for v in report["verdicts"]}
    model = "efficientnet_lite0-imagenet-all"
    # the default rule judges the discovered test set: above the best constant answer (0.2) by a margin
    acc = by[f"accuracy[{model}-test]"]
    assert acc["status"] in ("PASS", "FAIL") and acc["chance"] == 0.2 and acc["threshold"] == 0.2 + 0.1
    assert by[f"test_sets_judged[{model}]"]["status"] == "PASS"
    # the profile's rules for the book dataset's test sets are set aside, and say so
    assert any("test_easy" in n for n in report["thresholds_notes"])
    # localization: no test set has regions -> SKIP with the reason, for both methods, never ERROR
    loc = [v for k, v in by.items() if re.match(r"(cam|occlusion)_(energy|pointing)", k)]
    assert loc and all(v["status"] == "SKIP" for v in loc), [(v["id"], v["status"], v["detail"]) for v in loc]
    assert not [v for v in report["verdicts"] if v["status"] == "ERROR"]
    html = re.sub(r"data:image/png;base64,[a-z0-9+/=]+", "", (out / "report.html").read_text(encoding="utf-8").lower())
    assert "book" not in html and not re.search(r"\bcovers?\b", html)
    assert "2018:" not in html and "keras vgg16" not in html  # the reference experiment's table
