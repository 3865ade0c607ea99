"""The report's "Can the test sets be trusted?" section: report.json's `audit` (from an audit.json written here by
hand, thumbnails included) rendered into report.html, and looked at in headless Chromium: each near copy's two
thumbnails side by side, the statements and figures beside the training set's own reference."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import artifacts
from harness.audit.statements import audit_report, summarize
from harness.report.html import render_html
from harness.thresholds import AuditRule, parse_thresholds
from tests.test_report_html import FIXTURE, chromium_binary, run_chromium

COPY, SOURCE, SUSPECT = (230, 40, 230), (40, 220, 230), (250, 200, 20)  # colours no other part of the page uses


def _jpeg(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (128, 96), colour).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return f"audit/thumbs/{path.name}"


def _record(name: str, label: str, sim: float | None, source: str | None, dist: int, thumb: str | None, **kw) -> dict:
    return {
        "image": name,
        "label": label,
        "acceptable": [label],
        "sha256": name,
        "pixels": name,
        "phash": "0" * 16,
        "phash_mirror": "f" * 16,
        "size": [640, 480],
        "properties": {"brightness_p5": 0.2, "brightness_p99": 0.9, "entropy": 7.0, "blurriness": 50.0},
        "nearest_train": {"image": source, "label": label, "similarity": sim} if source else None,
        "hash_nearest_train": {"image": source, "distance": dist} if source else None,
        "exact_train": [],
        "label_quality": kw.get("quality", 0.9),
        "suggested": kw.get("suggested", label),
        "suggested_probability": 0.9,
        "label_issue": kw.get("issue", False),
        "thumbnail": thumb,
    }


def write_audit(run: Path) -> dict:
    """An audit.json of 4 training images (reference 0.5-0.8), a `leaky` set (one near copy, one suspect label) and
    an independent `fresh` set."""
    t = run / "audit" / "thumbs"
    train = [_record(f"train/a/{i}.jpg", "a", 0.5 + 0.1 * i, f"train/a/{(i + 1) % 4}.jpg", 20, None) for i in range(4)]
    train[0]["thumbnail"] = _jpeg(t / "src.jpg", SOURCE)
    leaky = [
        _record("leaky/a/copy.jpg", "a", 0.97, "train/a/0.jpg", 3, _jpeg(t / "copy.jpg", COPY)),
        _record(
            "leaky/a/odd.jpg",
            "a",
            0.4,
            "train/a/2.jpg",
            25,
            _jpeg(t / "odd.jpg", SUSPECT),
            issue=True,
            suggested="b",
            quality=0.02,
        ),
    ]
    fresh = [_record(f"fresh/a/{i}.jpg", "a", 0.3, "train/a/1.jpg", 30, None) for i in range(3)]
    evidence = {
        "inputs": {"version": 1},
        "classes": ["a", "b"],
        "has_train": True,
        "sets": {"train": {"images": train}, "leaky": {"images": leaky}, "fresh": {"images": fresh}},
        "labels": {"skipped": "", "notes": []},
        "embedding": {"backbone": "efficientnet_lite0"},
        "seconds": {"total": 1.5},
    }
    artifacts.write_json(run / "audit.json", evidence)
    return evidence


@pytest.fixture()
def report(tmp_path: Path) -> tuple[dict, Path]:
    run = tmp_path / "run"
    write_audit(run)
    rep = artifacts.read_json(FIXTURE)
    thresholds = parse_thresholds(
        {"audit": {"gated": ["leaky"], "reason": "leaky is gated: it must be independent"}}, "t"
    )
    rep["audit"] = audit_report(run, thresholds)
    return rep, run


def test_the_section_states_what_each_test_set_measures_with_its_thumbnails(report) -> None:
    rep, run = report
    html = render_html(rep, run)
    section = html[html.index('<section id="audit">') : html.index("</section>", html.index('<section id="audit">'))]
    assert "<h2>Can the test sets be trusted?</h2>" in section
    assert re.search(r'data-test-set="leaky" data-kind="mixed"', section)  # 1 of 2: above a set drawn like training
    assert re.search(r'data-test-set="fresh" data-kind="generalisation"', section)
    assert "leaky is gated: it must be independent" in section and '<span class="tag gated">gated</span>' in section
    pair = re.search(r'<div class="audit-pair" data-image="leaky/a/copy.jpg">(.*?)</div>\s*</div>', section, re.S)
    assert pair and len(re.findall(r'src="data:image/jpeg;base64,', pair.group(1))) == 2
    assert "<code>leaky/a/copy.jpg</code> ~ <code>train/a/0.jpg</code>" in section
    assert "labelled <b>a</b> · suggested <b>b</b>" in section
    assert "reference" in section and "0.65 (0.50–0.80)" in section  # the training set's own spread, beside the sets


def test_a_report_without_an_audit_says_so(tmp_path: Path) -> None:
    rep = artifacts.read_json(FIXTURE)
    html = render_html(rep, tmp_path)
    assert "The data audit is not available: this report was made without a data audit." in html
    missing = summarize(None, AuditRule(), "audit.json missing; rerun harness run")
    html = render_html(rep | {"audit": missing}, tmp_path)
    assert "The data audit is not available: audit.json missing; rerun harness run." in html


def _blob(arr: np.ndarray, colour: tuple[int, int, int]) -> tuple[range, range]:
    """(rows, columns) spanned by the pixels of `colour` in a screenshot (within a JPEG's tolerance)."""
    ys, xs = np.nonzero((np.abs(arr.astype(int) - np.array(colour)) < 24).all(axis=2))
    assert len(ys) > 500, f"no thumbnail of colour {colour} on the page"
    return range(ys.min(), ys.max() + 1), range(xs.min(), xs.max() + 1)


def test_chromium_shows_each_near_copy_beside_its_source(report, tmp_path: Path) -> None:
    binary = chromium_binary()
    rep, run = report
    page = run / "report.html"
    page.write_text(render_html(rep, run), encoding="utf-8")
    shot = tmp_path / "audit.png"
    proc = run_chromium(binary, tmp_path, page.resolve().as_uri(), f"--screenshot={shot}", "--window-size=1280,4200")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("RGB"))
    copy_rows, copy_cols = _blob(arr, COPY)
    source_rows, source_cols = _blob(arr, SOURCE)
    suspect_rows, _ = _blob(arr, SUSPECT)
    assert set(copy_rows) & set(source_rows), "the near copy and its source are not side by side"
    assert copy_cols.stop <= source_cols.start, "the test image is not left of its training source"
    assert suspect_rows.start > copy_rows.stop  # the label suspects come after the near copies
