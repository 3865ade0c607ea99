"""The audit's known answers on the bundled photos (read-only; copied with generated sets beside them): a test set made
of training photos flipped, cropped, 20% darker or brighter and re-encoded at JPEG 60 is flagged, each photo named with
its source; test_difficult and a disjoint generated set are not; three training labels flipped on purpose are among
the top five label suspects in at least 4 of 5 seeded trials; `harness audit` exits 1 when a gated set fails."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from harness.audit import labels
from harness.audit.readers import near_copies, read_independence
from harness.audit.statements import summarize
from harness.audit.step import audit_step, load_for_audit
from harness.cli import main
from harness.embeddings import embed, settings_for
from harness.thresholds import AuditRule
from tests.test_audit import pattern, stripes

pytestmark = pytest.mark.slow  # ~170 photos through the frozen backbone at 224 px (seconds on 2 cores)


def near_copy_of(path: Path, seed: int) -> Image.Image:
    """Flipped, cropped to 90% of each side at a random place, 20% darker or brighter, re-encoded at JPEG 60."""
    rng = np.random.default_rng(seed)
    im = ImageOps.mirror(Image.open(path).convert("RGB"))
    w, h = im.size
    cw, ch = int(w * 0.9), int(h * 0.9)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = ImageEnhance.Brightness(im.crop((x, y, x + cw, y + ch))).enhance(float(rng.choice([0.8, 1.2])))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def bundled_audit(tmp_path_factory, bundled_root) -> tuple[Path, dict, dict[str, str]]:
    """(dataset copy, audit.json, {copy: its training source}) of the bundled photos plus `copies` (every training
    photo made a near copy) and `generated` (patterns and stripes nothing like a photo)."""
    root = tmp_path_factory.mktemp("bundled") / "data"
    shutil.copytree(bundled_root, root)
    sources = {}
    for n, src in enumerate(sorted((root / "train").glob("*/*.jpg"))):
        dst = root / "copies" / src.parent.name / f"copy_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        near_copy_of(src, n).save(dst, quality=95)
        sources[f"copies/{src.parent.name}/{dst.name}"] = f"train/{src.parent.name}/{src.name}"
    for k, cls in enumerate(("bayes", "geeks", "keras", "nlp", "technium")):
        (root / "generated" / cls).mkdir(parents=True)
        pattern(900 + k, 160).save(root / "generated" / cls / "pattern.png")
        stripes(950 + k, 160).save(root / "generated" / cls / "stripes.png")
    train, tests = load_for_audit(root)
    evidence = audit_step(root.parent / "out", train, tests, root, log=lambda _: None)
    return root, evidence, sources


def test_near_copies_of_training_photos_are_flagged_with_their_source(bundled_audit) -> None:
    _, evidence, sources = bundled_audit
    found = {c["image"]: c["source"] for c in near_copies(evidence, "copies", AuditRule())}
    right = [name for name, src in sources.items() if found.get(name) == src]
    assert len(right) >= 0.95 * len(sources), sorted(set(sources) - set(right))
    value, _ = read_independence(evidence, "copies", AuditRule())
    assert value is not None and value >= 0.95


def test_test_difficult_and_a_disjoint_generated_set_are_not_flagged(bundled_audit) -> None:
    _, evidence, _ = bundled_audit
    rule = AuditRule()
    assert read_independence(evidence, "test_difficult", rule) == (0.0, "")
    assert read_independence(evidence, "generated", rule) == (0.0, "")
    summary = summarize(evidence, rule)
    assert summary["sets"]["test_difficult"]["kind"] == "generalisation"
    assert summary["sets"]["test_easy"]["kind"] == "recall"  # photos of the training shoot: 6 of 6 near copies
    assert summary["sets"]["copies"]["kind"] == "recall"


def test_three_flipped_training_labels_are_among_the_top_five_suspects(bundled_audit) -> None:
    root, _, _ = bundled_audit
    train, _ = load_for_audit(root, ["test_easy"])
    features, computed = embed([s.image for s in train.samples], settings_for())
    assert computed == 0  # the audit's own features, from the process's cache
    classes = sorted({s.label for s in train.samples})
    found = 0
    for trial in range(5):
        rng = np.random.default_rng(trial)
        given = [s.label for s in train.samples]
        flipped = rng.choice(len(given), 3, replace=False)
        for i in flipped:
            given[i] = str(rng.choice([c for c in classes if c != given[i]]))
        scores, _ = labels.score_labels(features, given, seed=trial)
        found += set(flipped) <= set(np.argsort(scores.quality)[:5])
    assert found >= 4


def test_harness_audit_exits_1_when_a_gated_test_set_is_not_independent(bundled_audit, tmp_path, capsys) -> None:
    root, _, _ = bundled_audit
    gate = tmp_path / "gate.toml"
    gate.write_text('[thresholds.audit]\ngated = ["copies"]\n', encoding="utf-8")
    code = main(["audit", "--data", str(root), "--out", str(tmp_path / "out"), "--thresholds", str(gate)])
    out = capsys.readouterr().out
    assert code == 1, out[-3000:]
    assert "FAIL  GATE test_independence[copies]" in out and "PASS       test_independence[test_difficult]" in out
    assert "test_easy measures recall of seen scenes" in out and "test_difficult measures generalisation" in out
