"""Training: artifacts, resume, determinism on CPU, checkpoint round trip, atomicity on a crash."""

import json

import pytest
import torch

from harness import train as train_mod
from harness.config import load_profile
from harness.data import load_train
from harness.train import load_checkpoint, prepare_data, train_variant

TINY = [
    "image_size=32",
    "batch_size=4",
    "val_fraction=0.4",
    "device=cpu",
    'phases.scratch=[{name="all",epochs=2,optimizer="adam",lr=1e-3,train_from="all"}]',
]


@pytest.fixture()
def tiny_profile():
    return load_profile("smoke", TINY)


@pytest.mark.slow
def test_train_writes_artifacts_and_resumes(tiny_root, tiny_profile, tmp_path, capsys):
    ds = load_train(tiny_root)
    vdir = train_variant(tmp_path / "run", tiny_profile, ds, tiny_root, "scratch-all", 0, progress=False)
    assert vdir.name == "vgg16-scratch-all-s0"
    assert {p.name for p in vdir.iterdir()} == {"config.json", "history.csv", "history.json", "model.pt"}
    config = json.loads((vdir / "config.json").read_text())
    assert config["profile"]["image_size"] == 32 and config["classes"] == ["background", "green", "red"]
    history = json.loads((vdir / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1, 2] and all(r["images"] > 0 for r in history)
    assert (vdir / "history.csv").read_text().splitlines()[0].startswith("phase,epoch,loss,accuracy,val_loss")
    mtime = (vdir / "model.pt").stat().st_mtime_ns
    train_variant(tmp_path / "run", tiny_profile, ds, tiny_root, "scratch-all", 0, progress=False)
    assert (vdir / "model.pt").stat().st_mtime_ns == mtime  # resumed: not retrained
    assert "already trained" in capsys.readouterr().err


@pytest.mark.slow
def test_same_seed_same_weights_on_cpu(tiny_root, tiny_profile, tmp_path):
    ds = load_train(tiny_root)
    a = train_variant(tmp_path / "a", tiny_profile, ds, tiny_root, "scratch-all", 3, progress=False)
    b = train_variant(tmp_path / "b", tiny_profile, ds, tiny_root, "scratch-all", 3, progress=False)
    sa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ha = json.loads((a / "history.json").read_text())["epochs"]
    hb = json.loads((b / "history.json").read_text())["epochs"]
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]


@pytest.mark.slow
def test_checkpoint_round_trip(tiny_root, tiny_profile, tmp_path):
    ds = load_train(tiny_root)
    vdir = train_variant(tmp_path, tiny_profile, ds, tiny_root, "scratch-mixup", 0, progress=False)
    model, meta = load_checkpoint(vdir / "model.pt")
    assert meta["classes"] == list(ds.classes) and meta["image_size"] == 32
    data = prepare_data(ds, tiny_profile)
    x = data.val_x.float() / 255
    state = torch.load(vdir / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["head.4.weight"], state["head.4.weight"])
    with torch.no_grad():
        assert model(x).shape == (len(x), 3)


def test_crash_leaves_no_checkpoint(tiny_root, tiny_profile, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("power cut")

    monkeypatch.setattr(train_mod, "fit", boom)
    with pytest.raises(RuntimeError):
        train_variant(tmp_path, tiny_profile, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    vdir = tmp_path / "vgg16-scratch-none-s0"
    assert not (vdir / "model.pt").exists()
    assert not [p for p in vdir.iterdir() if p.name.endswith(".tmp")]


def test_truncated_checkpoint_is_named(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="model.pt: not a readable harness checkpoint"):
        load_checkpoint(bad)


@pytest.mark.slow
def test_training_learns_the_tiny_task(tiny_root, tmp_path):
    """Three solid colours are learnable: a few epochs from scratch must beat chance on the validation split."""
    profile = load_profile(
        "smoke", TINY[:-1] + ['phases.scratch=[{name="all",epochs=8,optimizer="adam",lr=3e-4,train_from="all"}]']
    )
    vdir = train_variant(tmp_path, profile, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    history = json.loads((vdir / "history.json").read_text())["epochs"]
    assert max(r["val_accuracy"] for r in history) > 0.5
