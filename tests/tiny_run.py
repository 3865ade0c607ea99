"""A tiny dataset and a tiny trained-looking variant, laid out as harness.data and harness.train do (for tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import artifacts
from harness.backbones import build_classifier
from harness.config import load_profile

CLASSES = ("background", "bayes", "geeks")
SIZE = 32


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
