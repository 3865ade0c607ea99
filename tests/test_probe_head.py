"""LP-FT's first step (harness.probe_head): the probe's solution folded into a linear head gives the probe's own
decision function; a probe phase validates at the edge; fine-tuning can only replace the probed model by one with a
lower validation loss."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from harness.backbones import Classifier
from harness.baselines.fit import fit_probe
from harness.config import load_profile
from harness.data import load_train
from harness.probe_head import fit_head_probe, fold_probe, pooled_features
from harness.train import interpolate_weights, load_checkpoint, train_variant
from harness.validate import ConfigError

PROBE = '{name="probe",epochs=1,optimizer="probe",train_from="head"}'
TINY = ["image_size=32", "batch_size=4", "val_fraction=0.4", "device=cpu", "hidden=0"]


def blobs(n_classes: int, per_class: int, dim: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = 5 * np.eye(n_classes, dim) + rng.normal(0, 0.1, size=(n_classes, dim))  # 5 apart, spread 0.3: separable
    x = np.concatenate([c + rng.normal(0, spread, size=(per_class, dim)) for c in centres])
    y = [f"c{k}" for k in range(n_classes) for _ in range(per_class)]
    return x, y


@settings(max_examples=15, deadline=None)
@given(n_classes=st.integers(2, 5), dim=st.integers(5, 12), seed=st.integers(0, 10_000))
def test_folded_head_is_the_probes_decision_function(n_classes, dim, seed):
    x, y = blobs(n_classes, 6, dim, seed)
    fitted = fit_probe(x, y)
    classes = [f"c{k}" for k in range(n_classes)]
    weight, bias = fold_probe(fitted.estimator, classes)
    logits = x @ weight.T + bias
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    # the same class probabilities as the fitted pipeline (binary: softmax of (0, s) is the sigmoid of s)
    np.testing.assert_allclose(proba, fitted.estimator.predict_proba(x), rtol=1e-6, atol=1e-9)
    # separable generated features: the probe is perfect, and so is the head it became
    assert [classes[i] for i in logits.argmax(1)] == y


def test_a_class_the_probe_never_saw_is_never_predicted():
    x, y = blobs(3, 6, 4, seed=1)
    fitted = fit_probe(x, y)
    weight, bias = fold_probe(fitted.estimator, ["c0", "c1", "missing", "c2"])
    logits = x @ weight.T + bias
    assert not np.any(weight[2]) and (logits.argmax(1) != 2).all()


class Colour(nn.Module):
    """A fixed 'backbone': the per-channel mean, three channels of 1x1 features (solid colours are separable)."""

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


def test_fit_head_probe_writes_a_perfect_probe_into_the_model():
    gen = torch.Generator().manual_seed(0)
    colours = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250]], dtype=torch.float32)
    labels = torch.arange(3).repeat_interleave(6)
    images = colours[labels].view(-1, 3, 1, 1) + torch.randint(-8, 8, (18, 3, 8, 8), generator=gen)
    images = images.clamp(0, 255).to(torch.uint8)
    model = Classifier(Colour(), 3, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), hidden=0)
    record = fit_head_probe(model, images, labels, ("red", "green", "blue"), torch.device("cpu"))
    assert record["train_accuracy"] == 1.0 and record["folds"] == 5 and record["C"] > 0
    with torch.no_grad():
        model.eval()
        assert (model(images.float() / 255).argmax(1) == labels).all()
    feats = pooled_features(model, images, torch.device("cpu"))
    assert feats.shape == (18, 3)


def test_fit_head_probe_refuses_a_hidden_layer():
    model = Classifier(Colour(), 3, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), hidden=4)
    with pytest.raises(ValueError, match="hidden = 0"):
        images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
        fit_head_probe(model, images, torch.tensor([0, 1]), "ab", torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hidden=16"], r"hidden = 16 must be 0 \(phases.scratch\[0\].optimizer = 'probe'"),
        (['phases.scratch=[{name="probe",epochs=1,optimizer="probe",train_from="all"}]'], r"train_from = 'all'"),
        (['phases.scratch=[{name="probe",epochs=3,optimizer="probe",train_from="head"}]'], r"epochs = 3 must be 1"),
        (
            ['phases.scratch=[{name="a",epochs=1}, ' + PROBE + "]"],
            r"phases.scratch\[1\].optimizer = 'probe'.*must come first",
        ),
    ],
)
def test_a_probe_phase_is_checked_at_the_edge(overrides, message):
    base = ["hidden=0", f"phases.scratch=[{PROBE}]"]
    with pytest.raises(ConfigError, match=message):
        load_profile("smoke", base + overrides)


def test_the_cpu_profile_trains_imagenet_variants_by_lp_ft():
    profile = load_profile("cpu")
    probe, finetune = profile.phases["imagenet"]
    assert profile.hidden == 0 and probe.optimizer == "probe" and probe.train_from == "head"
    assert finetune.train_from == "all" and 0 < profile.probe_interpolation < 1
    full = load_profile("full")
    assert "probe" not in [p.optimizer for p in full.phases["imagenet"]]  # the published recipe stays as it was


@pytest.mark.slow
def test_fine_tuning_starts_from_the_probe_and_keeps_its_best_epoch(tiny_root, tmp_path):
    """The probe phase's row comes first; fine-tuning then picks its own best-validation epoch (a wrecking learning
    rate still leaves one of its epochs, never the probed model: WiSE-FT is how the probe is mixed back in)."""
    ft = '{name="ft",epochs=2,optimizer="adam",lr=1e-3,train_from="all"}'
    profile = load_profile("smoke", TINY + [f"phases.scratch=[{PROBE}, {ft}]"])
    vdir = train_variant(tmp_path, profile, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    history = json.loads((vdir / "history.json").read_text())["epochs"]
    assert [r["phase"] for r in history] == ["probe", "ft", "ft"]
    assert history[0]["probe_C"] > 0 and history[0]["accuracy"] == 1.0  # solid colours: a perfect probe
    assert (vdir / "history.csv").read_text().splitlines()[0].endswith("probe_C,probe_folds")


def test_interpolate_weights_is_the_weight_space_average():
    tuned = {"w": torch.tensor([0.0, 2.0, -4.0]), "steps": torch.tensor(7)}
    probed = {"w": torch.tensor([4.0, 2.0, 4.0]), "steps": torch.tensor(1)}
    out = interpolate_weights(tuned, probed, 0.25)
    assert torch.allclose(out["w"], torch.tensor([1.0, 2.0, -2.0])) and out["steps"].item() == 7
    assert torch.equal(interpolate_weights(tuned, probed, 0.0)["w"], tuned["w"])


def test_probe_interpolation_is_a_weight_below_one():
    load_profile("cpu", ['phases.imagenet=[{name="head",epochs=1,train_from="head"}]'])  # no probe: it is ignored
    with pytest.raises(ConfigError, match=r"probe_interpolation = 1 must be a number in \[0, 1\)"):
        load_profile("cpu", ["probe_interpolation=1"])


@pytest.mark.slow
def test_wise_ft_averages_the_best_fine_tuned_model_with_the_probed_one(tiny_root, tmp_path):
    ft = '{name="ft",epochs=2,optimizer="adam",lr=1e-2,train_from="all"}'
    runs = {}
    for name, extra in (("probe", [f"phases.scratch=[{PROBE}]"]), ("ft", [f"phases.scratch=[{PROBE}, {ft}]"])):
        for alpha in (0.0, 0.5) if name == "ft" else (0.0,):
            profile = load_profile("smoke", TINY + extra + [f"probe_interpolation={alpha}"] * (alpha > 0))
            out = tmp_path / f"{name}{alpha}"
            runs[name, alpha] = train_variant(
                out, profile, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False
            )
    history = json.loads((runs["ft", 0.5] / "history.json").read_text())["epochs"]
    assert [r["phase"] for r in history] == ["probe", "ft", "ft", "interpolate"]
    assert history[-1]["loss"] is None and history[-1]["val_loss"] > 0
    probed = load_checkpoint(runs["probe", 0.0] / "model.pt")[0].state_dict()
    tuned = load_checkpoint(runs["ft", 0.0] / "model.pt")[0].state_dict()
    wise = load_checkpoint(runs["ft", 0.5] / "model.pt")[0].state_dict()
    for k, v in wise.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (tuned[k] + probed[k]) / 2)


def test_probe_interpolation_is_a_training_input_only_of_inits_with_a_probe_phase():
    from harness.provenance import profile_train_fields

    a, b = load_profile("cpu"), load_profile("cpu", ["probe_interpolation=0.75"])
    assert profile_train_fields(a, "scratch") == profile_train_fields(b, "scratch")  # scratch models stay current
    assert profile_train_fields(a, "imagenet") != profile_train_fields(b, "imagenet")  # imagenet ones go stale


def test_every_run_records_the_cpu_it_ran_on(tmp_path):
    from harness.provenance import cpu_model, device_info

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000 @ 1.0GHz\nflags\t\t: fpu avx512_bf16\n")
    assert cpu_model(str(info)) == "Test CPU 9000 @ 1.0GHz"
    recorded = device_info(torch.device("cpu"))
    assert recorded["cpu"] and isinstance(recorded["cpu_bf16_flags"], list)
