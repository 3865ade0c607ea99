"""report.html: rendered from a trimmed real report.json (tests/fixtures/report_min.json) over tiny overlay PNGs.

(a) unit tests on the HTML string: verdict banner, verdict rows, accuracy matrix and baselines, self-containment
(no external URL, images as data URIs), missing pieces rendered as "not available";
(b) a headless Chromium render (screenshot + DOM dump). Skipped where chromium is absent, except under CI.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.report import html as report_html
from harness.report.build import write_reports
from harness.report.html import render_html

FIXTURE = Path(__file__).parent / "fixtures" / "report_min.json"
EXTERNAL = re.compile(r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def tiny_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (np.linspace(0, 255, 24 * 16 * 3).reshape(16, 24, 3) + rng.integers(0, 30, (16, 24, 3))).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture()
def run_dir(tmp_path: Path, report: dict) -> Path:
    """A run directory holding a tiny PNG at every overlay path the report names."""
    run = tmp_path / "run"
    for i, entry in enumerate(report["variants"].values()):
        for recs in (entry.get("cam") or {}).get("images", {}).values():
            for rec in recs:
                if rec.get("overlay_path"):
                    path = run / rec["overlay_path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(tiny_png(i))
    return run


def cell(html: str, variant: str) -> str:
    m = re.search(rf'<td class="cell[^"]*" data-variant="{re.escape(variant)}"[^>]*>(.*?)</td>', html, re.DOTALL)
    assert m, f"no accuracy-matrix cell for {variant}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(1)))


def img_srcs(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


# --- (a) unit tests -----------------------------------------------------------------------------------------------


def test_fixture_is_small() -> None:
    assert FIXTURE.stat().st_size < 50_000


def test_banner_shows_the_verdict_and_counts(report: dict, run_dir: Path) -> None:
    html = render_html(report, run_dir)
    banner = re.search(
        r'<section id="banner" class="banner (\w+)" data-verdict="(\w+)">(.*?)</section>', html, re.DOTALL
    )
    assert banner and banner.group(1) == "fail" and banner.group(2) == "FAIL"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", banner.group(3)))
    assert "FAIL" in text
    assert "1 passed, 8 failed" in text and "1 skipped" in text and "(of 10)" in text
    for fact in ("smoke", "vgg16", "0, 1", "2026-11-28", "imagenet-all"):
        assert fact in text


@pytest.mark.parametrize("verdict, css", [("PASS", "pass"), ("FAIL", "fail"), ("ERROR", "grey"), ("UNGATED", "grey")])
def test_banner_colour_follows_the_verdict(report: dict, run_dir: Path, verdict: str, css: str) -> None:
    report["verdict"] = verdict
    html = render_html(report, run_dir)
    assert f'class="banner {css}" data-verdict="{verdict}"' in html


def test_every_verdict_is_a_row(report: dict, run_dir: Path) -> None:
    html = render_html(report, run_dir)
    rows = re.findall(
        r'<tr class="verdict-row ([^"]*)" data-verdict-id="([^"]+)" data-criterion="([^"]+)" '
        r'data-status="(\w+)"',
        html,
    )
    assert [(r[1], r[2], r[3]) for r in rows] == [(v["id"], v["criterion"], v["status"]) for v in report["verdicts"]]
    for css, vid, crit, status in rows:
        gated = next(v["gated"] for v in report["verdicts"] if v["id"] == vid and v["criterion"] == crit)
        assert ("row-fail" in css) == (gated and status == "FAIL")
        assert ("row-ablation" in css) == (not gated)
    for v in report["verdicts"]:
        for e in v["evidence"]:
            assert f'href="{e}"' in html
    assert "4.1e-08" in html and "1.0e-04" in html  # parity value and tolerance in scientific notation


def test_accuracy_matrix_cells_and_baselines(report: dict, run_dir: Path) -> None:
    html = render_html(report, run_dir)
    assert 'id="accuracy-matrix"' in html
    imagenet, scratch = cell(html, "imagenet-all"), cell(html, "scratch-all")
    assert "0.00 / 0.375" in imagenet and "strict 0.00 / 0.15" in imagenet
    assert "range 0.00–0.00 / 0.30–0.45" in imagenet and "95% CI 0.00–0.39 / 0.15–0.52" in imagenet
    assert "gated" in imagenet and "not above the constant answer" in imagenet
    assert "0.25 / 0.575" in scratch and "strict 0.25 / 0.20" in scratch and "range 0.00–0.50 / 0.45–0.70" in scratch
    assert "2018: 1.00 / 0.95" in imagenet  # the reference experiment's figure, for comparison
    assert "not in this run" in cell(html, "imagenet-none")
    # rows = init, columns = augmentation level, in the reference table's order
    header = re.search(r'id="accuracy-matrix">\s*<thead>(.*?)</thead>', html, re.DOTALL).group(1)
    labels = re.findall(r"<th>([^<]+)<div", header)
    assert labels == ["no augmentation", "mixup only", "usual augmentation", "usual + mixup"]
    baselines = re.sub(r"<[^>]+>", " ", re.search(r'id="baselines">(.*?)</table>', html, re.DOTALL).group(1))
    for text in (
        "uniform guessing, soft",
        "best constant answer, strict",
        "0.167",
        "0.55",
        "0.70",
        "“bayes”",
        "“geeks”",
    ):
        assert text in baselines
    assert "A model that does not beat the constant answer has learnt nothing useful." in html


def test_self_contained_no_external_references(report: dict, run_dir: Path) -> None:
    html = render_html(report, run_dir)
    assert not EXTERNAL.findall(html), EXTERNAL.findall(html)[:3]
    assert not CSS_URL.findall(html)
    assert "@import" not in html and "<script" not in html.lower()
    assert "<link" not in html.lower()


def test_images_are_embedded_png_data_uris(report: dict, run_dir: Path) -> None:
    html = render_html(report, run_dir)
    srcs = img_srcs(html)
    n_overlays = sum(
        len(report["variants"][f]["cam"]["images"]["test_difficult"])
        for f in ("vgg16-imagenet-all-s0", "vgg16-scratch-all-s0")
    )
    assert len(srcs) == n_overlays + 2  # overlays of each variant's first seed + one curves plot per variant
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert tiny_png(0) in [base64.b64decode(s.split(",", 1)[1]) for s in srcs]
    # overlays of the non-gated variant are in a collapsed <details>
    assert re.search(r'<details class="cam-group" data-variant="scratch-all">', html)
    assert re.search(r'<div class="cam-group" data-variant="imagenet-all">', html)
    # each image's label / prediction / correctness is stated
    first = report["variants"]["vgg16-imagenet-all-s0"]["cam"]["images"]["test_difficult"][0]
    assert f"label <b>{first['label']}</b> · predicted <b>{first['predicted']}</b>" in html


def test_too_many_overlays_embeds_only_the_gated_variant(
    report: dict, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "MAX_EMBEDDED_OVERLAYS", 2)
    html = render_html(report, run_dir)
    gated = report["variants"]["vgg16-imagenet-all-s0"]["cam"]["images"]["test_difficult"]
    assert len(img_srcs(html)) == len(gated) + 2
    for rec in report["variants"]["vgg16-scratch-all-s0"]["cam"]["images"]["test_difficult"]:
        assert rec["overlay_path"] in html  # listed as a file path instead


def test_missing_pieces_render_as_not_available(report: dict, run_dir: Path) -> None:
    for key in ("test_sets", "latency", "runtime", "cam", "export"):
        report["variants"]["vgg16-scratch-all-s0"].pop(key)
        report["variants"]["vgg16-scratch-all-s1"].pop(key)
    report["variants"]["vgg16-scratch-all-s0"]["history"] = []
    report["variants"]["vgg16-scratch-all-s1"]["history"] = []
    report["matrix"]["scratch-all"] = {}
    (
        run_dir / report["variants"]["vgg16-imagenet-all-s0"]["cam"]["images"]["test_difficult"][0]["overlay_path"]
    ).unlink()
    html = render_html(report, run_dir)
    assert "not available (no metrics yet)" in cell(html, "scratch-all")
    assert "training history not available" in html
    assert "Grad-CAM not available" in html and "export not available" in html and "latency not available" in html
    assert "overlay file missing" in html


def test_bare_report_does_not_crash(tmp_path: Path) -> None:
    html = render_html({"verdict": "ERROR"}, tmp_path)
    assert 'data-verdict="ERROR"' in html and "not available" in html


def test_text_is_escaped(report: dict, run_dir: Path) -> None:
    report["verdicts"][0]["detail"] = "<script>alert(1)</script>"
    html = render_html(report, run_dir)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_write_reports_writes_the_html(report: dict, run_dir: Path) -> None:
    json_path, html_path = write_reports(run_dir, copy.deepcopy(report))
    assert json_path.exists() and html_path == run_dir / "report.html"
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --- (b) headless Chromium ----------------------------------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    if os.environ.get("CI"):
        pytest.fail("chromium is required under CI (.ci/run installs Debian's chromium) but was not found")
    pytest.skip("chromium not installed (apt-get install -y chromium); the headless render test needs it")


def run_chromium(binary: str, tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *extra,
        url,
    ]
    env = os.environ | {"HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_chromium_renders_the_report(report: dict, run_dir: Path, tmp_path: Path) -> None:
    binary = chromium_binary()
    page = run_dir / "report.html"
    page.write_text(render_html(report, run_dir), encoding="utf-8")
    url = page.resolve().as_uri()

    shot = tmp_path / "report.png"
    proc = run_chromium(binary, tmp_path, url, f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert arr.std() > 10, "the screenshot is (nearly) a single colour"
    assert len(np.unique(arr.reshape(-1, 3)[::7], axis=0)) > 50
    # the red FAIL banner is at the top of the page
    top = arr[20:120, 100:1100].reshape(-1, 3).mean(axis=0)
    assert top[0] > 150 and top[1] < 90 and top[2] < 90, top

    proc = run_chromium(binary, tmp_path, url, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert re.search(r'<section id="banner"[^>]*data-verdict="FAIL"[^>]*>\s*<h1>FAIL</h1>', dom)
    assert 'id="accuracy-matrix"' in dom and "0.00 / 0.375" in dom
    assert re.search(r'<img[^>]*src="data:image/png;base64,', dom)
    rows = re.findall(r'<tr class="verdict-row[^"]*" data-verdict-id="([^"]+)"', dom)
    assert rows == [v["id"] for v in report["verdicts"]]


def test_models_are_placed_by_their_identity_fields_not_their_names(report: dict, run_dir: Path) -> None:
    """A model known only from report.json's `models` table and its verdicts (no folder) lands in the matrix cell its
    init and level fields name; its key is never taken apart."""
    report["protocol"]["variants"].append("imagenet-none")
    report["models"] = {
        "m1": {"kind": "trained", "backbone": "vgg16", "variant": "imagenet-none", "init": "imagenet", "level": "none"}
    }
    report["verdicts"].append(
        report["verdicts"][0] | {"variant": "imagenet-none", "model": "m1", "id": "m1-test_easy", "gated": False}
    )
    html = render_html(report, run_dir)
    assert "no metrics yet" in cell(html, "m1")
    header = re.search(r'id="accuracy-matrix">(.*?)</table>', html, re.DOTALL).group(1)
    row = next(r for r in header.split("<tr") if 'data-variant="m1"' in r)
    assert "ImageNet" in row and row.index('data-variant="m1"') < row.index('data-variant="imagenet-all"')
