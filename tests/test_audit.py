"""The data audit (harness.audit) on generated images: known answers for hashes, similarity, the label probe and the
health checks; the audit step on a tiny dataset (mirrored copies found with their source, a disjoint set not, an
unseen class named), its reuse and cache; its verdicts (ERROR when audit.json is missing, malformed or stale); the
[thresholds.audit] table; `harness audit` on unreadable input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from harness import artifacts, embeddings
from harness.audit import hashes, health, labels, similarity
from harness.audit.command import audit_dataset
from harness.audit.readers import near_copies, read_independence
from harness.audit.statements import lines, summarize
from harness.audit.step import AUDIT_FILE, audit_step, load_for_audit
from harness.audit.verdicts import audit_verdicts
from harness.check import check_model
from harness.cli import main
from harness.thresholds import AuditRule, check_applies, fit_to_run, parse_thresholds
from harness.validate import ConfigError
from harness.verdicts.verdict import ERROR, FAIL, PASS, SKIP
from tests.onnx_wrappers import harness_like_model

SIZE = 64  # the frozen features at 64 px: cheap, and enough for these patterns


def pattern(seed: int, size: int = 64) -> Image.Image:
    """A smooth random colour field: every seed a different image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)


def stripes(seed: int, size: int = 64) -> Image.Image:
    """Two-colour stripes at a random angle: nothing like the patterns."""
    rng = np.random.default_rng(seed)
    f, angle = rng.uniform(0.2, 0.6), rng.uniform(0, np.pi)
    y, x = np.mgrid[0:size, 0:size]
    on = np.sin(f * (x * np.cos(angle) + y * np.sin(angle)))[..., None] > 0
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return Image.fromarray(np.where(on, a, b).astype(np.uint8))


def tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def make_dataset(root: Path) -> Path:
    """train: 3 classes x 4 patterns; copies: 2 per class, mirrored and 20% brighter; fresh: stripes; novel: one
    image of a class training does not have."""
    for k, c in enumerate(("a", "b", "c")):
        for i in range(4):
            seed = 4 * k + i
            (root / "train" / c).mkdir(parents=True, exist_ok=True)
            pattern(seed).save(root / "train" / c / f"{c}{i}.png")
            if i < 2:
                (root / "copies" / c).mkdir(parents=True, exist_ok=True)
                ImageEnhance.Brightness(ImageOps.mirror(pattern(seed))).enhance(1.2).save(
                    root / "copies" / c / f"{c}{i}.png"
                )
            (root / "fresh" / c).mkdir(parents=True, exist_ok=True)
            stripes(100 + seed).save(root / "fresh" / c / f"f{c}{i}.png")
    (root / "novel" / "d").mkdir(parents=True)
    pattern(500).save(root / "novel" / "d" / "d0.png")
    return root


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(dataset, audit folder, audit.json) of the generated dataset, computed once."""
    base = tmp_path_factory.mktemp("audit")
    root = make_dataset(base / "data")
    train, tests = load_for_audit(root)
    evidence = audit_step(base / "out", train, tests, root, size=SIZE, log=lambda _: None)
    return root, base / "out", evidence


# --- the pieces ----------------------------------------------------------------------------------------------------


def test_a_mirrored_copy_is_zero_bits_from_its_source_by_perceptual_hash() -> None:
    im = tensor(pattern(1))
    a, b = hashes.phash_pair(im), hashes.phash_pair(torch.flip(im, dims=[2]))
    other = hashes.phash_pair(tensor(pattern(2)))
    d = hashes.mirrored_distances([a, other], [b])
    assert d[0, 0] == 0 and d[1, 0] > 6
    assert (hashes.distances([a[0]], [a[0]]) == 0).all()
    assert hashes.groups_of_equal(["x", "y", "x", "z", "y"]) == [[0, 2], [1, 4]]


def test_leave_one_out_never_picks_the_image_itself_and_the_reference_is_a_quantile() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, sim = similarity.nearest(x, x, leave_one_out=True)
    assert (idx != np.arange(9)).all() and (sim < 1 - 1e-9).all()
    full = x @ x.T
    np.fill_diagonal(full, -2)
    assert np.allclose(sim, full.max(axis=1))
    assert similarity.reference_level([0.1, 0.2, 0.3, 0.4, 0.5], 0.5) == pytest.approx(0.3)
    assert similarity.reference_level([], 0.5) is None
    assert similarity.share_at_or_above([0.1, 0.5, 0.9], 0.5) == pytest.approx(2 / 3)


def test_the_label_probe_ranks_flipped_labels_first_on_separable_features() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(3, 8))
    y = [c for c in range(3) for _ in range(20)]
    x = centres[y] + rng.normal(size=(60, 8))
    given = [("p", "q", "r")[c] for c in y]
    flipped = [4, 27, 51]
    for i in flipped:
        given[i] = ("p", "q", "r")[(y[i] + 1) % 3]
    scores, probed = labels.score_labels(x, given)
    assert probed == ("p", "q", "r") and not scores.skipped
    top = set(np.argsort(scores.quality)[:5])
    assert set(flipped) <= top
    assert all(scores.issue[i] for i in flipped) and sum(scores.issue) <= 6
    assert all(scores.suggested[i] == ("p", "q", "r")[y[i]] for i in flipped)


def test_out_of_sample_probabilities_are_rows_of_one_and_never_see_the_image() -> None:
    x = np.array([[0.0], [0.1], [5.0], [5.1], [0.05], [5.05]])
    probs = labels.out_of_sample_probabilities(x, [0, 0, 1, 1, 0, 1], 2, folds=3)
    assert np.allclose(probs.sum(axis=1), 1) and (probs > 0).all()
    assert (probs.argmax(axis=1) == [0, 0, 1, 1, 0, 1]).all()
    folds = labels.fold_of([0, 0, 0, 1, 1, 1], 3, 0)
    assert sorted(folds[:3]) == [0, 1, 2] and len(set(folds[3:])) == 3  # each class spread over the folds
    one = labels.score_labels(x, ["a", "a", "a", "a", "a", "b"])[0]
    assert one.skipped and one.quality == (None,) * 6  # one class with 2+ images: nothing to probe


@pytest.mark.parametrize(
    ("image", "found"),
    [
        (np.zeros((40, 40, 3)), {"dark", "near-constant"}),  # dark images are never called blurry
        (np.full((40, 40, 3), 255), {"too bright", "near-constant"}),
        (np.random.default_rng(0).integers(0, 256, (40, 40, 3)), set()),
        (np.repeat(np.clip(200 - 6 * np.hypot(*np.mgrid[-32:32, -32:32] + 0.5), 0, 255)[..., None], 3, 2), {"blurry"}),
        (
            np.repeat(np.where(np.hypot(*np.mgrid[-32:32, -32:32] + 0.5) < 20, 200, 0)[..., None], 3, 2),
            {"near-constant"},
        ),
    ],
    ids=["black", "white", "noise", "soft-blob", "sharp-disc"],
)
def test_cleanvision_issues_known_answers(image: np.ndarray, found: set[str]) -> None:
    props = health.properties(tensor(Image.fromarray(image.astype(np.uint8))))
    assert set(health.issues(props)) == found


def test_health_lines_name_their_files() -> None:
    line = health.class_line("train", ["a"] * 6 + ["b"] * 2, ["a", "b", "c"], "images")
    assert line["imbalance"] == 3.0 and "no images of c" in line["text"] and "a 6, b 2" in line["text"]
    far = health.far_lines("t", ["x", "y", "z", "w"], [[100, 100], [110, 100], [900, 800], [100, 300]], "images")
    assert {(f["check"], tuple(f["files"])) for f in far} == {("far_size", ("z",)), ("far_aspect", ("w",))}
    unseen = health.unseen_line("t", [{"a"}, {"d", "a"}], ["a", "b"], ["t/1.jpg", "t/2.jpg"])
    assert unseen and unseen["classes"] == ["d"] and unseen["files"] == ["t/2.jpg"]
    assert health.unseen_line("t", [{"a"}], ["a"], ["t/1.jpg"]) is None


# --- the audit of a generated dataset ------------------------------------------------------------------------------


def test_mirrored_copies_are_named_with_their_source_and_a_disjoint_set_is_not(audited) -> None:
    _, _, evidence = audited
    rule = AuditRule()
    copies = near_copies(evidence, "copies", rule)
    assert len(copies) == 6
    assert all(c["source"] == "train/" + c["image"].split("/", 1)[1] for c in copies)
    assert near_copies(evidence, "fresh", rule) == []
    assert read_independence(evidence, "copies", rule) == (1.0, "")
    assert read_independence(evidence, "fresh", rule) == (0.0, "")
    # every training image's reference is its nearest OTHER training image
    assert all(r["nearest_train"]["image"] != r["image"] for r in evidence["sets"]["train"]["images"])
    summary = summarize(evidence, rule)
    assert summary["sets"]["copies"]["kind"] == "recall" and summary["sets"]["fresh"]["kind"] == "generalisation"
    assert "measures recall of seen images" in summary["sets"]["copies"]["statement"]


def test_a_test_class_missing_from_training_is_named(audited) -> None:
    _, _, evidence = audited
    unseen = [h for h in summarize(evidence, AuditRule())["health"] if h["check"] == "unseen_classes"]
    assert [(h["set"], h["classes"], h["files"]) for h in unseen] == [("novel", ["d"], ["novel/d/d0.png"])]
    assert any("never seen in training: d" in line for line in lines(summarize(evidence, AuditRule())))


def test_the_audit_is_reused_while_the_data_is_the_same_and_its_cache_keeps_the_features(audited, tmp_path) -> None:
    root, out, evidence = audited
    data = tmp_path / "data"
    shutil.copytree(root, data)
    work = tmp_path / "out"
    shutil.copytree(out, work)
    said: list[str] = []
    train, tests = load_for_audit(data)
    again = audit_step(work, train, tests, data, size=SIZE, log=said.append)
    assert again == evidence and "current" in said[-1]
    pattern(777).save(data / "fresh" / "a" / "fa0.png")  # one image changes: only it is embedded again
    embeddings._MEMORY.clear()
    train, tests = load_for_audit(data)
    redone = audit_step(work, train, tests, data, size=SIZE, log=said.append)
    assert redone["embedding"]["computed"] == 1 and redone["inputs"] != evidence["inputs"]
    assert all(
        (work / r["thumbnail"]).is_file() for s in redone["sets"].values() for r in s["images"] if r["thumbnail"]
    )


# --- verdicts -------------------------------------------------------------------------------------------------------


def _run(tmp_path: Path, evidence: dict | None, data: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"data": data or {}}), encoding="utf-8")
    if evidence is not None:
        artifacts.write_json(run / AUDIT_FILE, evidence)
    return run


def test_verdicts_are_about_the_data_and_judged_from_the_records(audited, tmp_path) -> None:
    _, _, evidence = audited
    thresholds = parse_thresholds({"audit": {"gated": ["copies"]}}, "test")
    verdicts = audit_verdicts(_run(tmp_path, evidence), thresholds, ["copies", "fresh"])
    by = {f"{v.criterion}[{v.id}]": v for v in verdicts}
    assert by["test_independence[copies]"].status == FAIL and by["test_independence[copies]"].gated
    assert by["test_independence[fresh]"].status == PASS and not by["test_independence[fresh]"].gated
    assert {"label_suspects[train]", "label_suspects[copies]", "label_suspects[fresh]"} <= set(by)
    assert all(v.model == "" and v.evidence == (AUDIT_FILE,) for v in verdicts)


def test_missing_malformed_or_stale_audit_is_error_never_a_pass(audited, tmp_path) -> None:
    _, _, evidence = audited
    thresholds = parse_thresholds({"audit": {"gated": ["*"]}}, "test")
    missing = audit_verdicts(_run(tmp_path / "m", None), thresholds, ["copies"])
    assert missing and all(v.status == ERROR and "audit.json missing" in v.detail for v in missing)
    broken = json.loads(json.dumps(evidence))
    broken["sets"]["copies"]["images"][0]["nearest_train"]["similarity"] = "high"
    bad = audit_verdicts(_run(tmp_path / "b", broken), thresholds, ["copies"])
    assert {v.status for v in bad if v.criterion == "test_independence"} == {ERROR}
    stale = audit_verdicts(_run(tmp_path / "s", evidence, {"test": {"copies": "0" * 64}}), thresholds, ["copies"])
    assert all(v.status == ERROR and "another copies" in v.detail for v in stale)


def test_no_threshold_reports_the_value_and_skips(audited, tmp_path) -> None:
    _, _, evidence = audited
    thresholds = replace(parse_thresholds({}, "test"), audit=AuditRule(near_copy_share_max=None))
    v = audit_verdicts(_run(tmp_path, evidence), thresholds, ["copies"])[0]
    assert v.status == SKIP and v.value == 1.0 and "no threshold" in v.detail


# --- thresholds and the command line --------------------------------------------------------------------------------


def test_thresholds_audit_is_validated_and_fitted() -> None:
    with pytest.raises(ConfigError, match=r"thresholds.audit.near_copy_quantile = 1.5 must be a number in \[0, 1\]"):
        parse_thresholds({"audit": {"near_copy_quantile": 1.5}}, "t")
    with pytest.raises(ConfigError, match="thresholds.audit.hash_distance_max"):
        parse_thresholds({"audit": {"hash_distance_max": 2.5}}, "t")
    t = parse_thresholds({"audit": {"gated": ["test_difficult"], "reason": "why"}}, "t")
    with pytest.raises(ConfigError, match=r"thresholds.audit.gated\[0\] = 'test_difficult'"):
        check_applies(t, ["test"], [], "t")
    fitted, notes = fit_to_run(t, ["test"])
    assert fitted.audit.gated == () and fitted.audit.reason == "" and "test_difficult" in notes[0]


def test_harness_audit_on_a_corrupt_image_gives_the_loaders_one_line_error(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        pattern(ord(c)).save(root / "train" / c / "x.png")
    (root / "test" / "a").mkdir(parents=True)
    (root / "test" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = main(["audit", "--data", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "broken.jpg" in err and "cannot decode image" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out" / AUDIT_FILE).exists()


@pytest.mark.slow
def test_harness_check_of_an_exported_model_shows_the_same_audit_as_harness_audit(audited, tmp_path) -> None:
    root, _, _ = audited
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("novel"))  # the model knows a, b and c
    model = harness_like_model(tmp_path / "model.onnx", ("a", "b", "c"), exporter="torchscript")
    small = ["saliency.occlusion.window=16", "saliency.occlusion.stride=16", "saliency.sanity_images=2"]
    report, run = check_model(model, data, sets=small, out=tmp_path / "check", log=lambda _: None)
    alone = audit_dataset(data, tmp_path / "alone", profile="check", log=lambda _: None)
    assert (run / AUDIT_FILE).is_file() and report["audit"]["available"]
    for key in ("sets", "suspects", "within", "health", "reference"):
        assert report["audit"][key] == alone.summary[key], key
    assert report["audit"]["sets"]["copies"]["kind"] == "recall"
    ids = {f"{v['criterion']}[{v['id']}]" for v in report["verdicts"]}
    assert {"test_independence[copies]", "test_independence[fresh]", "label_suspects[train]"} <= ids
