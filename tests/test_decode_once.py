"""A job decodes each image once: the training set when it loads it, the test sets once after training, handed to
every step (export, evaluate, Grad-CAM, black-box saliency) instead of each step decoding them again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness import artifacts
from harness.config import Profile, load_profile
from harness.data import images, load_train, working_short_side
from harness.executors import DONE, Job, JobContext, run_job
from harness.provenance import dataset_fingerprint
from tests.test_trust import TINY  # one tiny profile (vgg16, 32 px, no epochs) for the tests that run a job


def tiny_job_context(tiny_root: Path, tmp_path: Path, profile: Profile, **fields) -> JobContext:
    """A job context as the driver makes it, over a run directory tmp_path/run with its run.json."""
    run_dir = (tmp_path / "run").resolve()
    artifacts.write_json(run_dir / "run.json", {"written by": "the driver"})
    train = load_train(tiny_root, max_short_side=working_short_side(profile.image_size))
    return JobContext(
        run_dir=run_dir,
        profile=profile,
        data_root=tiny_root.resolve(),
        weights_file=None,
        train_fingerprint=dataset_fingerprint(train),
        run_json_sha256=artifacts.sha256_file(run_dir / "run.json"),
        **fields,
    )


@pytest.mark.slow
def test_one_job_decodes_every_image_once(tiny_root, tmp_path, monkeypatch):
    ctx = tiny_job_context(tiny_root, tmp_path, load_profile("smoke", TINY), black_box=("occlusion",))
    run_dir = ctx.run_dir
    decoded: Counter[str] = Counter()
    real = images.decode_image

    def counting(path, *args, **kwargs):
        decoded[Path(path).resolve().relative_to(tiny_root.resolve()).as_posix()] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(images, "decode_image", counting)
    result = run_job(ctx, Job("scratch-none", 0))  # no dataset given: as in a Ray worker, the job loads it
    assert result.status == DONE, result.traceback
    vdir = run_dir / "vgg16-scratch-none-s0"
    assert all((vdir / f).is_file() for f in ("model.pt", "model.onnx", "metrics.json", "cam.json", "occlusion.json"))
    photos = sorted(p.relative_to(tiny_root).as_posix() for p in tiny_root.rglob("*.jpg"))
    assert len(photos) == 18 and sorted(decoded) == photos  # 15 training images, 3 test images
    assert set(decoded.values()) == {1}, {name: n for name, n in decoded.items() if n != 1}
