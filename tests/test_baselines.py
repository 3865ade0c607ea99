"""The baseline ladder (harness.baselines): known answers of the probe and kNN, the step on a tiny generated dataset,
beats_probe judged from per-image evidence (PASS, FAIL, ERROR; a stored summary never read), and the ladder's lines
in report.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness import stats
from harness.baselines import fit
from harness.baselines.evidence import pair
from harness.baselines.files import BASELINES_FILE
from harness.baselines.step import baselines_step, feature_choice
from harness.data.types import Dataset, Sample
from harness.evaluate import split_metrics
from harness.report.build import build_report
from harness.report.html import render_html
from harness.report.markdown import run_summary
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import ERROR, FAIL, PASS, judge
from tests.tiny_run import EVIDENCE_GATE, EVIDENCE_MODEL, evidence_run


def blobs(n_per_class: int, classes: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dim) * 10.0
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, dim)) for c in centres])
    return x.astype(np.float32), [f"c{i}" for i in range(classes) for _ in range(n_per_class)]


def accuracy(fitted: fit.Fitted, x: np.ndarray, labels: list[str], classes: list[str]) -> float:
    p = fit.probabilities(fitted, x, classes)
    return float(np.mean([classes[i] == y for i, y in zip(p.argmax(1), labels)]))


def test_on_separable_features_the_probe_and_knn_are_perfect() -> None:
    x, y = blobs(12, 3, 16, 0.5, seed=0)
    xt, yt = blobs(10, 3, 16, 0.5, seed=1)
    classes = ["c0", "c1", "c2"]
    probe, knn = fit.fit_probe(x, y), fit.fit_knn(x, y)
    assert accuracy(probe, xt, yt, classes) == 1.0 and accuracy(knn, xt, yt, classes) == 1.0
    assert probe.folds == 5 and probe.value in fit.CS and knn.value in fit.KS
    assert probe.cv_accuracy and max(probe.cv_accuracy.values()) == 1.0


def test_when_the_label_is_noise_the_probe_is_near_chance() -> None:
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((150, 20)), rng.standard_normal((300, 20))
    classes = ["a", "b", "c"]
    y, yt = list(rng.choice(classes, 150)), list(rng.choice(classes, 300))
    acc = accuracy(fit.fit_probe(x, y), xt, yt, classes)
    assert 0.2 < acc < 0.45  # chance is 1/3; 300 test points: +-0.09 at 3 sigma


def test_folds_are_capped_by_the_smallest_class_and_a_singleton_class_is_not_cross_validated() -> None:
    assert fit.folds_for(["a"] * 9 + ["b"] * 3) == 3 and fit.folds_for(["a"] * 20 + ["b"] * 20) == 5
    x, y = blobs(4, 2, 8, 0.1, seed=0)
    f = fit.fit_probe(x[:5], y[:5])  # class c1 has one image
    assert f.folds == 0 and f.value == fit.DEFAULT_C and "not cross-validated" in f.notes[0]
    with pytest.raises(fit.CannotFit, match="single class"):
        fit.fit_knn(x[:4], y[:4])


def test_mcnemar_known_values_and_pairing_by_image() -> None:
    assert stats.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert stats.mcnemar_exact(0, 8) == pytest.approx(2 * 0.5**8)
    rows = [{"image": f"i{i}", "primary": "a", "acceptable": ["a"], "predicted": "ab"[i >= 3]} for i in range(8)]
    probe = [r | {"predicted": "a"} for r in reversed(rows)]  # another order: paired by name
    paired, why = pair(rows, probe)
    assert why == "" and paired is not None and (paired["a_only"], paired["b_only"], paired["both"]) == (0, 5, 3)
    assert paired["p"] == pytest.approx(stats.mcnemar_exact(0, 5))
    assert pair(rows[:-1], probe)[0] is None


# --- the step on a tiny generated dataset (frozen Lite0 features at 32 px) -------------------------------------------


def _dataset(name: str, colours: dict[str, tuple[int, int, int]], per_class: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    samples = []
    for label, rgb in colours.items():
        for i in range(per_class):
            img = np.clip(np.array(rgb)[:, None, None] + rng.integers(-20, 20, (3, 32, 32)), 0, 255).astype(np.uint8)
            samples.append(Sample(f"{name}/{label}_{i}.png", torch.from_numpy(img), label, frozenset({label})))
    return Dataset(name, tuple(colours), tuple(samples), has_regions=False)


def test_the_step_fits_on_the_training_split_scores_every_test_set_and_is_reused(tmp_path: Path) -> None:
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    train = _dataset("train", colours, 6, 0)
    tests = {"test_easy": _dataset("test_easy", colours, 3, 1)}
    said: list[str] = []
    features = feature_choice("efficientnet_lite0", 32)
    rec = baselines_step(tmp_path, train, tests, ("red", "blue"), features=features, log=said.append)
    assert rec["features"]["backbone"] == "efficientnet_lite0" and rec["features"]["size"] == 32
    assert rec["inputs"]["sklearn"] and rec["probe"]["C"] in fit.CS and rec["knn"]["k"] in fit.KS
    for name in ("probe", "knn"):
        entry = rec["test_sets"]["test_easy"][name]
        assert entry["soft"]["value"] == 1.0 and entry["n"] == 6 and len(entry["predictions"]) == 6
    assert (tmp_path / "baselines" / "embeddings.npz").is_file()  # not the audit's settings: its own cache
    baselines_step(tmp_path, train, tests, ("red", "blue"), features=features, log=said.append)
    assert "is current" in said[-1]


def test_the_probe_rule_is_validated_at_the_edge() -> None:
    assert parse_thresholds({"probe": {"gated": True, "soft_margin": 0.05}}, "t.toml").probe.soft_margin == 0.05
    with pytest.raises(ConfigError, match=r"thresholds\.probe"):
        parse_thresholds({"probe": {"gatd": True}}, "t.toml")
    with pytest.raises(ConfigError, match="mcnemar_p"):
        parse_thresholds({"probe": {"mcnemar_p": 2}}, "t.toml")


def test_a_run_whose_backbone_has_no_weights_offline_uses_the_shipped_lite0(tmp_path: Path) -> None:
    settings, weights, why = feature_choice("vgg16", 64, tmp_path / "absent.pth")
    assert settings.backbone == "efficientnet_lite0" and weights is None and "not available offline" in why


# --- beats_probe from hand-made per-image evidence -------------------------------------------------------------------


def _probe_file(run: Path, right: set[int], promise: bool = True) -> None:
    """baselines.json whose probe is right (soft) on the images `right` of the model's test_difficult (kNN: all)."""
    model = json.loads((run / EVIDENCE_MODEL / "metrics.json").read_text())["test_sets"]["test_difficult"]
    samples = [
        SimpleNamespace(name=p["image"], label=p["primary"], acceptable=set(p["acceptable"]))
        for p in model["predictions"]
    ]
    classes = model["classes"]

    def entry(ok: set[int]) -> dict:
        probs = np.zeros((len(samples), len(classes)))
        for i, s in enumerate(samples):
            probs[i, classes.index(s.label if i in ok else "w")] = 1.0
        return split_metrics(SimpleNamespace(samples=samples), None, classes, probabilities=probs)

    everything = set(range(len(samples)))
    ev = {
        "inputs": {"train": None, "test": {}},
        "features": {"backbone": "efficientnet_lite0", "size": 224},
        "probe": {"C": 1.0},
        "knn": {"k": 3},
        "test_sets": {"test_difficult": {"probe": entry(right), "knn": entry(everything)}},
    }
    (run / BASELINES_FILE).write_text(json.dumps(ev))
    if promise:
        proto = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps(proto | {"baselines": {"file": BASELINES_FILE}}))


def _beats(run: Path, rule: dict | None = None):
    thresholds = parse_thresholds(EVIDENCE_GATE | ({"probe": rule} if rule else {}), "test")
    return [
        v for v in judge(run, thresholds, ["test_difficult"], ["imagenet-all"], "vgg16") if v.criterion == "beats_probe"
    ]


def test_a_model_better_than_the_probe_passes_and_one_significantly_worse_fails(tmp_path: Path) -> None:
    good = tmp_path / "good"
    evidence_run(good, soft_k=15, strict_k=12, report=False)  # right on images 0..14 of 16
    _probe_file(good, set(range(14)))
    (v,) = _beats(good)
    assert v.status == PASS and v.value == pytest.approx(1 / 16) and v.chance == pytest.approx(14 / 16)
    assert not v.gated and "exact McNemar p = 1" in v.detail  # an ablation by default
    bad = tmp_path / "bad"
    evidence_run(bad, soft_k=8, strict_k=8, report=False)  # right on 0..7; the probe on all 16
    _probe_file(bad, set(range(16)))
    (v,) = _beats(bad, {"gated": True, "soft_margin": 0.5})
    assert v.status == FAIL and v.gated and v.value == pytest.approx(-0.5)  # within the margin, but McNemar says worse
    assert "wrong where it is right 8" in v.detail and "significantly worse" in v.detail


def test_the_soft_margin_lets_a_model_just_below_the_probe_pass(tmp_path: Path) -> None:
    evidence_run(tmp_path, soft_k=15, strict_k=12, report=False)
    _probe_file(tmp_path, set(range(16)))
    assert _beats(tmp_path)[0].status == FAIL  # 15/16 < 16/16
    assert _beats(tmp_path, {"soft_margin": 0.1})[0].status == PASS  # -1/16 >= -0.1, McNemar p = 1


def test_an_edited_summary_is_never_read(tmp_path: Path) -> None:
    evidence_run(tmp_path, soft_k=8, strict_k=8, report=False)
    _probe_file(tmp_path, set(range(16)))
    ev = json.loads((tmp_path / BASELINES_FILE).read_text())
    ev["test_sets"]["test_difficult"]["probe"]["soft"] = {"k": 0, "value": 0.0, "wilson": [0.0, 0.2]}
    (tmp_path / BASELINES_FILE).write_text(json.dumps(ev))
    (v,) = _beats(tmp_path)
    assert v.status == FAIL and v.chance == 1.0  # the probe's 16/16 from its per-image predictions


def test_missing_or_unreadable_baselines_is_an_error_where_the_criterion_applies(tmp_path: Path) -> None:
    evidence_run(tmp_path, report=False)
    assert _beats(tmp_path) == []  # a run made before the step: no such criterion
    assert [v.status for v in _beats(tmp_path, {"gated": True})] == [ERROR]  # gated: never passes by absence
    _probe_file(tmp_path, set(range(16)))
    (tmp_path / BASELINES_FILE).unlink()
    (v,) = _beats(tmp_path)  # run.json promises the ladder
    assert v.status == ERROR and "baselines.json missing" in v.detail
    (tmp_path / BASELINES_FILE).write_text("{not json")
    assert _beats(tmp_path)[0].status == ERROR


def test_the_ladder_lines_are_in_report_json(tmp_path: Path) -> None:
    evidence_run(tmp_path, soft_k=15, strict_k=12, report=False)
    _probe_file(tmp_path, set(range(14)))
    report = build_report(tmp_path)
    entry = report["ladder"]["test_sets"]["test_difficult"]
    names = [line["name"] for line in entry["lines"]]
    assert names == ["constant", "knn", "probe", "vgg16-imagenet-all"] and entry["n"] == 16
    constant, knn, probe, model = entry["lines"]
    assert constant["soft"]["value"] == pytest.approx(6 / 16) and constant["strict"]["value"] == pytest.approx(4 / 16)
    assert knn["soft"]["value"] == 1.0 and probe["soft"]["k"] == 14 and "mcnemar_vs_probe" not in probe
    assert model["soft"]["k"] == 15 and model["mcnemar_vs_probe"] == {"model_only": 1, "probe_only": 0, "p": 1.0}
    assert model["soft"]["wilson"][0] < 15 / 16 < model["soft"]["wilson"][1]
    assert BASELINES_FILE in report["protocol"]["baselines"]["file"]
    html = render_html(report, tmp_path)  # the accuracy section shows the ladder in its order
    rungs = ["best constant answer", "k-nearest-neighbours (k = 3)", "linear probe (C = 1", "vgg16-imagenet-all seed 0"]
    at = [html.index(r, html.index('id="ladder"')) for r in rungs]
    assert at == sorted(at) and "+1 / -0, p = 1" in html
    assert "test_difficult: linear probe soft 0.875, kNN soft 1" in run_summary(report, tmp_path)
