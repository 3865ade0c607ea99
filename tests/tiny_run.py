"""A tiny dataset and a tiny trained-looking variant, laid out as harness.data and harness.train do, and a run
directory of one model's evidence as harness run leaves it (for tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import artifacts
from harness.backbones import build_classifier
from harness.config import load_profile
from harness.report.build import build_report, write_reports
from harness.seal import make_seal
from tests.split_evidence import split_entry

CLASSES = ("background", "bayes", "geeks")
SIZE = 32


# the data audit of a run made without a training set or a label probe (harness.audit): its verdicts are SKIP
AUDIT = {"inputs": {"test": {}}, "has_train": False, "labels": {"skipped": "not probed in this hand-made run"}}


def make_dataset(root: Path, splits=("test_easy", "test_difficult")) -> Path:
    """test_easy as ImageFolder (4 images), test_difficult as COCO with acceptable labels (5 images); 40x30 px."""
    rng = np.random.default_rng(0)

    def img(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)

    if "test_easy" in splits:
        for c in ("bayes", "geeks"):
            for i in range(2):
                img(root / "test_easy" / c / f"{c}_{i}.png")
    if "test_difficult" in splits:
        images = []
        labels = [
            ("bayes", ["bayes", "geeks"], False),
            ("geeks", ["geeks"], False),
            ("background", [], True),
            ("bayes", ["bayes"], False),
            ("geeks", ["bayes", "geeks"], False),
        ]
        for i, (primary, acc, bg) in enumerate(labels):
            name = f"test_difficult/img_{i}.png"
            img(root / name)
            images.append(
                {
                    "id": i,
                    "file_name": name,
                    "width": 40,
                    "height": 30,
                    "primary_label": primary,
                    "acceptable_labels": acc,
                    "background_acceptable": bg,
                }
            )
        cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "test_difficult.json").write_text(
            json.dumps({"images": images, "annotations": [], "categories": cats})
        )
    return root


def make_variant(run_dir: Path, data_root: Path, tta: bool = False, name: str = "vgg16-scratch-none-s0") -> Path:
    """config.json + model.pt exactly as train_variant writes them, for a random VGG16 at 32 px."""
    profile = load_profile(
        "smoke", [f"image_size={SIZE}", f"tta_hflip={str(tta).lower()}", 'test_sets=["test_easy", "test_difficult"]']
    )
    torch.manual_seed(0)
    model = build_classifier("vgg16", "scratch", len(CLASSES), profile.hidden, profile.dropout)
    with torch.no_grad():
        model.head[-1].weight.mul_(20)  # spread the logits: random heads give near-ties that say nothing about parity
    vdir = run_dir / name
    artifacts.write_json(
        vdir / "config.json",
        {
            "variant": "scratch-none",
            "backbone": "vgg16",
            "classes": list(CLASSES),
            "data_root": str(data_root),
            "profile": profile.to_dict(),
        },
    )
    artifacts.save_torch(
        vdir / "model.pt",
        {
            "state_dict": model.state_dict(),
            "backbone": "vgg16",
            "classes": list(CLASSES),
            "image_size": SIZE,
            "hidden": profile.hidden,
            "dropout": profile.dropout,
            "variant": "scratch-none",
            "seed": 0,
            "tta_hflip": tta,
        },
    )
    return vdir


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


EVIDENCE_MODEL = "vgg16-imagenet-all-s0"
EVIDENCE_GATE = {"gated": ["imagenet-all"], "accuracy": {"test_difficult": {"soft_min": 0.9, "strict_min": 0.4}}}


def evidence_run(
    run: Path,
    soft_k: int = 15,
    strict_k: int = 12,
    thresholds: dict | None = None,
    sealed: bool = True,
    report: bool = True,
) -> Path:
    """A run directory with the evidence of one model as harness run leaves it, without training anything: run.json
    (sealed as harness run seals it, unless `sealed` is False: an older harness), vgg16-imagenet-all-s0/ holding
    config.json, a stand-in model.onnx, export.json and metrics.json that record its sha256 (16 images of
    test_difficult, soft_k / strict_k right, the best constant answer 6 / 4), and (`report`) report.json with its
    manifest. The thresholds gate imagenet-all with soft_min 0.9 unless given. Returns the model folder."""
    d = run / EVIDENCE_MODEL
    d.mkdir(parents=True)
    proto = {
        "profile": {"test_sets": ["test_difficult"], "backbone": "vgg16"},
        "variants": ["imagenet-all"],
        "seeds": [0],
        "thresholds": EVIDENCE_GATE if thresholds is None else thresholds,
    }
    (run / "run.json").write_text(json.dumps(proto | ({"seal": make_seal(proto)} if sealed else {})))
    (d / "config.json").write_text(json.dumps({"variant": "imagenet-all", "seed": 0, "backbone": "vgg16"}))
    (d / "model.onnx").write_bytes(b"the model that was evaluated" * 100)
    sha = artifacts.sha256_file(d / "model.onnx")
    export = {"sha256": sha, "inputs": {"model_sha256": "pt"}, "parity": {"cpu": {"max_abs": 1e-6}}}
    (d / "export.json").write_text(json.dumps(export))
    entry = split_entry(16, soft_k, strict_k, constant_soft_k=6, constant_strict_k=4)
    metrics = {"test_sets": {"test_difficult": entry}, "inputs": {"onnx_sha256": sha}, "model": {"sha256": sha}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    if report:
        write_reports(run, build_report(run))
    return d
