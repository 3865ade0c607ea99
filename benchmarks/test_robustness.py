"""The robustness step's cost per model on the bundled dataset (test_easy + test_difficult, 26 photos): one round =
harness.robustness.step.robustness_step from scratch (every corruption at its mild severity, object masking with 8
random placements, flip thumbnails written), through one onnxruntime session on a small conv net exported from torch
at 224 px; and, separately, the faithfulness curves of two stored maps per photo (Grad-CAM and occlusion, random
maps standing in). Goal: the default suite under 60 s per model on 2 cores (asserted, under --benchmark-disable too).

The forward passes are the part that grows with the model: `extra_info` records them, so a real backbone's cost is
about passes x its per-image onnxruntime time (test_inference.py) plus the perturbation overhead measured here.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

GOAL_S = 60.0
SIZE = 224
DATA = Path(__file__).resolve().parents[1] / "data" / "small-book-images"


class SmallNet(nn.Module):
    """Two strided convolutions and a linear head: milliseconds per 224 px image, like nothing a user deploys."""

    def __init__(self, classes: int):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 5, stride=4)
        self.b = nn.Conv2d(16, 32, 3, stride=2)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def case(tmp_path_factory, train_set):
    import onnx

    from harness import runtime
    from harness.data import load_test, working_short_side
    from harness.export import to_onnx
    from harness.preprocess import make_forward
    from harness.spec import resolve_spec

    classes = list(train_set.classes)
    torch.manual_seed(0)
    net = SmallNet(len(classes)).eval()
    path = tmp_path_factory.mktemp("robustness") / "small.onnx"
    onnx.save_model(to_onnx(net, SIZE, "torchscript", 17), str(path))
    session = runtime.create_session(path, [runtime.CPU])
    spec = resolve_spec(path, {"classes": classes}, classes, session=session)
    short = working_short_side(SIZE)
    tests = {s: load_test(DATA, s, classes, max_short_side=short) for s in ("test_easy", "test_difficult")}
    return make_forward(session, spec, classes), spec, tests, classes, path


def _run(case, folder, settings, methods=()):
    from harness.robustness.step import robustness_step

    forward, spec, tests, classes, path = case
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if methods:
        from harness.robustness.maps import MapStore, maps_file

        rng = np.random.default_rng(0)
        for m in methods:
            store = MapStore(spec.size)
            for split, ds in tests.items():
                for s in ds.samples:
                    store.add(split, s.name, {c: rng.random((14, 14)) for c in classes})
            store.save(folder / maps_file(m))
    return robustness_step(
        folder, forward, spec, tests, classes, settings, "bench", "small", methods, log=lambda m: None
    )


def test_robustness_default_suite(benchmark, timer, case, tmp_path):
    from harness.robustness.settings import RobustnessSettings

    settings = RobustnessSettings(faithfulness=False)
    out: dict = {}

    def one():
        out["ev"] = _run(case, tmp_path / "m", settings)["robustness.json"]

    t0 = time.perf_counter()
    median = timer(benchmark, one, warmup=0)
    seconds = median if median is not None else time.perf_counter() - t0
    ev = out["ev"]
    benchmark.group = "robustness step per model"
    benchmark.extra_info.update(
        images=sum(len(r) for r in ev["images"].values()),
        corruptions=len(ev["corruptions"]),
        passes=ev["passes"],
        seconds_corruptions=ev["seconds"]["corruptions"],
        seconds_masking=ev["seconds"]["masking"],
        seconds=seconds,
    )
    assert seconds < GOAL_S, f"default robustness suite took {seconds:.1f} s per model (goal {GOAL_S:.0f} s)"


def test_faithfulness_two_methods(benchmark, timer, case, tmp_path):
    from harness.robustness.settings import RobustnessSettings

    settings = RobustnessSettings(corruptions=("jpeg",), masking=False)
    out: dict = {}

    def one():
        out["ev"] = _run(case, tmp_path / "f", settings, ("cam", "occlusion"))["faithfulness.json"]

    median = timer(benchmark, one, warmup=0)
    benchmark.group = "robustness step per model"
    benchmark.extra_info.update(passes=out["ev"]["passes"], seconds=median or out["ev"]["seconds"])
