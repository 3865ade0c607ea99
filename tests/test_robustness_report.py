"""The robustness evidence in report.json (harness.robustness.summary), the HTML section (harness.report.robustness,
looked at in headless Chromium) and `harness compare` (harness.robustness.compare)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.report.html import render_html
from harness.report.jinja import template_env
from harness.report.robustness import faithfulness_cells, robustness_view
from harness.report.wording import WORDS
from harness.robustness.rules import RobustnessRule
from harness.robustness.summary import robustness_section
from harness.thresholds import Thresholds, parse_thresholds
from harness.verdicts import judge
from harness.verdicts.collect import collect
from tests.test_compare import GATED, SPLIT, compare, image_name, make_report
from tests.test_report_html import FIXTURE, chromium_binary, run_chromium
from tests.test_robustness import border_mask, checked_folder, dataset, redness, region_mask

THRESHOLDS = {"gated": ["*"], "robustness": {"gated": ["colour_cast"], "object_gated": True}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Two checked models (one reads the labelled region, one the border), the full grid of two corruptions."""
    run = tmp_path_factory.mktemp("rob") / "run"
    ds = dataset(n_red=4, n_background=2)
    for name, mask in (("region", region_mask()), ("border", border_mask())):
        checked_folder(run, name, redness(mask), [0.0, -4.0], ds, full=True, corruptions=("colour_cast", "jpeg"))
    return run


def _section(run: Path) -> dict:
    verdicts = judge(run, parse_thresholds(THRESHOLDS, "t"), ["t"])
    return robustness_section(collect(run), verdicts)


def test_report_json_s_section_is_recomputed_from_the_records_with_the_verdicts_status(run):
    sec = _section(run)
    assert list(sec["corruptions"]) == ["jpeg", "colour_cast"] and sec["severities"] == [1, 2, 3, 4, 5]
    rows = [r for r in sec["corruption"] if r["model"] == "onnx-region" and r["corruption"] == "colour_cast"]
    assert [r["severity"] for r in rows] == [1, 2, 3, 4, 5] and all(r["status"] in ("PASS", "FAIL") for r in rows)
    assert rows[0]["gated"] and not next(r for r in sec["corruption"] if r["corruption"] == "jpeg")["gated"]
    flipped = [r for r in sec["corruption"] if r["right_to_wrong"] or r["wrong_to_right"]]
    assert flipped, "the colour cast flips some grey photos to red"
    for r in flipped:
        assert set(r["thumbs"]) == set(r["right_to_wrong"]) | set(r["wrong_to_right"])
        for path in r["thumbs"].values():
            with Image.open(run / path) as im:  # the model's input clean | corrupted
                assert im.size == (2 * 112 + 4, 112)
    masking = {r["model"]: r for r in sec["masking"]}
    assert masking["onnx-region"]["object_lost"] == 1.0 and masking["onnx-region"]["status"] == "PASS"
    assert masking["onnx-border"]["object_lost"] == 0.0 and masking["onnx-border"]["status"] == "FAIL"
    per = sec["per_image"]["region"]["t"]
    assert len(per["images"]) == 6 and set(per["corrupted"]["jpeg"]) == {"1", "2", "3", "4", "5"}
    json.dumps(sec)  # JSON-ready


def test_the_section_and_the_localization_columns_render(run):
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    report["robustness"] = _section(run)
    html = render_html(report, run)
    section = html[html.index('<section id="robustness">') :]
    section = section[: section.index("</section>")]
    assert 'id="robustness-table"' in section and 'id="masking-table"' in section
    assert section.count('src="data:image/png;base64,') >= 2  # the figure and at least one flip
    assert "onnx-region" in section and "colour cast" in section and "right → wrong" in section
    assert 'href="#robustness"' in html
    row = {"model": "onnx-region", "method": "occlusion", "split": "t"}
    fake = {"robustness": {"faithfulness": [row | {"n": 3, "deletion": 0.2, "deletion_random": 0.5}]}}
    assert faithfulness_cells(fake, row) == {"deletion": "0.200 (0.500)", "insertion": "-"}
    fake["robustness"]["faithfulness"][0] |= {"insertion": 0.9, "insertion_random": 0.6}
    assert faithfulness_cells(fake, row) == {"deletion": "0.200 (0.500)", "insertion": "0.900 (0.600)"}
    report["localization"] = [row | {"energy": 0.4, "energy_chance": 0.1, "pointing": 0.5, "pointing_chance": 0.2}]
    report["robustness"]["faithfulness"] = fake["robustness"]["faithfulness"]
    html = render_html(report, run)
    table = html[html.index('<section id="localization">') :]
    assert "deletion AUC (random map)" in table and "0.200 (0.500)" in table and "0.900 (0.600)" in table


def test_a_report_without_the_section_says_so():
    view = robustness_view({}, Path("."), [], [])
    assert not view["available"]
    html = template_env().get_template("robustness.html").render(robustness=view, words=WORDS[False])
    assert "No robustness evidence" in html


def test_chromium_renders_the_robustness_section(run, tmp_path):
    binary = chromium_binary()
    report = {"robustness": _section(run), "protocol": {"thresholds": {"robustness": {"max_severity": 1}}}}
    view = robustness_view(report, run, ["onnx-region", "onnx-border"], ["onnx-region"])
    body = template_env().get_template("robustness.html").render(robustness=view, words=WORDS[False])
    style = template_env().get_template("_base_style.html").render()
    page = tmp_path / "robustness.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</style></head><body>{body}</body></html>"
    )
    shot = tmp_path / "robustness.png"
    proc = run_chromium(binary, tmp_path, page.resolve().as_uri(), f"--screenshot={shot}", "--window-size=1200,1600")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert arr.std() > 10 and len(np.unique(arr.reshape(-1, 3)[::7], axis=0)) > 50  # figure and thumbnails drawn
    dom = run_chromium(binary, tmp_path, page.resolve().as_uri(), "--dump-dom").stdout
    assert re.search(r'<table id="masking-table"', dom) and "onnx-border" in dom
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', dom)) >= 2


def _with_robustness(report: dict, wrong: tuple[int, ...] = ()) -> dict:
    out = copy.deepcopy(report)
    preds = out["variants"][f"{GATED}-s0"]["test_sets"][SPLIT]["predictions"]
    out["robustness"] = {
        "per_image": {
            f"{GATED}-s0": {
                SPLIT: {
                    "images": [image_name(i) for i in range(len(preds))],
                    "acceptable": [p["acceptable"] for p in preds],
                    "clean": [p["primary"] for p in preds],
                    "corrupted": {
                        "jpeg": {"1": [("background" if i in wrong else p["primary"]) for i, p in enumerate(preds)]}
                    },
                }
            }
        },
        "masking": [{"model": GATED, "split": SPLIT, "object_lost": 0.8, "random_lost": 0.1}],
    }
    return out


def test_compare_pairs_the_corrupted_answers_and_a_gated_corruption_regresses():
    base = _with_robustness(make_report())
    new = _with_robustness(make_report(), wrong=(3, 4, 5, 6))
    gated = Thresholds(gated=("imagenet-all",), robustness=RobustnessRule(gated=("jpeg",)))
    result = compare(base, new, gated)
    [row] = result["robustness"]["corruption"]
    assert row["model"] == GATED and row["baseline"] == 1.0 and row["new"] == pytest.approx(0.8)
    assert row["paired"]["a_only"] == 4 and row["gated"] and "max_drop" in row["regressed"]
    assert result["verdict"] == "REGRESSION"
    assert any(r["kind"] == "robustness" and r["subject"] == f"{SPLIT}-jpeg" for r in result["regressions"])
    assert result["robustness"]["masking"][0]["object_lost"] == {"baseline": 0.8, "new": 0.8, "delta": 0.0}
    ablation = compare(base, new, Thresholds(gated=("imagenet-all",)))  # robustness not gated: seen, not failed
    [row] = ablation["robustness"]["corruption"]
    assert row["regressed"] and not row["gated"] and ablation["verdict"] == "OK"
