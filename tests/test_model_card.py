"""model-card.md per gated model (harness.report.model_card): Hugging Face format, its YAML metadata parsed back, its
sections filled from report.json (the data audit and robustness when the run has them, "not measured" when not), the
owner's words from a [card] table, and the card in report.html."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from harness import cli
from harness.report.build import build_report, write_reports
from harness.report.model_card import CardInfo, build_card, read_card, to_markdown
from harness.validate import ConfigError
from tests.test_plugin import tiny_run

MODEL = "vgg16-imagenet-all"
SECTIONS = [
    "Model details",
    "Intended use",
    "Training data and the data audit",
    "Evaluation",
    "Where it looks",
    "Limitations",
    "How it was made",
]
CARD = """
[card]
owner = "Shelf QA team"
license = "apache-2.0"
intended_use = "Tell which of five book covers a shelf photo shows."
out_of_scope = "Any other book."
tags = ["books", "retail"]

[thresholds]
gated = ["imagenet-all"]
"""


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def headings(body: str) -> list[str]:
    return [line[3:] for line in body.splitlines() if line.startswith("## ")]


def test_a_gated_model_gets_a_card_whose_metadata_parses_back(tmp_path):
    run = tiny_run(tmp_path / "run", ablations={"scratch-all": True})
    cards = sorted((run / "cards").rglob("model-card.md"))
    assert [p.parent.name for p in cards] == [MODEL]  # the gated model only, not the ablation
    meta, body = split_card(cards[0].read_text(encoding="utf-8"))
    assert meta["pipeline_tag"] == "image-classification" and "license" not in meta  # no owner's words: no licence
    [entry] = meta["model-index"]
    assert entry["name"] == MODEL
    [result] = entry["results"]
    assert result["task"]["type"] == "image-classification" and result["dataset"]["split"] == "test_difficult"
    metrics = {m["name"]: m["value"] for m in result["metrics"]}
    assert metrics["soft accuracy (mean of 1 seed(s))"] == pytest.approx(15 / 16)
    assert metrics["strict accuracy (mean of 1 seed(s))"] == pytest.approx(12 / 16)
    report = json.loads((run / "report.json").read_text())
    low = report["matrix"][MODEL]["test_difficult"]["soft"]["wilson_worst"][0]
    assert metrics["soft accuracy, Wilson 95% lower bound"] == pytest.approx(low)
    ece = report["evidence"]["calibration"][MODEL]["test_difficult"]["ece"]
    assert metrics["expected calibration error (top-1, soft)"] == pytest.approx(ece)
    assert all(m["verified"] is False for m in result["metrics"])
    assert headings(body) == SECTIONS
    assert "Not stated: the owner gives it in the [card] table" in body
    assert "| test_difficult | soft | 0.938 | [0.72, 0.99] | 0.375 ('b') |" in body  # beside the constant answer
    assert "Robustness: not measured" in body and "Where it looks" in body


def test_the_owners_words_come_from_a_card_table_and_stay(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    card = tmp_path / "card.toml"
    card.write_text(CARD, encoding="utf-8")
    assert cli.main(["report", str(run), "--card", str(card)]) == 0
    capsys.readouterr()
    meta, body = split_card((run / "cards" / MODEL / "model-card.md").read_text(encoding="utf-8"))
    assert meta["license"] == "apache-2.0" and meta["tags"][-2:] == ["books", "retail"]
    assert "- Owner: Shelf QA team" in body and "Tell which of five book covers a shelf photo shows." in body
    assert "Out of scope: Any other book." in body
    html = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="model-cards"' in html and "Shelf QA team" in html and "Tell which of five book covers" in html
    # a later report without --card keeps the owner's words (card.toml in the run directory)
    assert cli.main(["report", str(run)]) == 0
    assert "Shelf QA team" in (run / "cards" / MODEL / "model-card.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[card]\nowner = 3\n", "card.owner = 3 must be a string"),
        ("[card]\nlicence = 'mit'\n", "card: unknown keys ['licence']"),
        ("[thresholds]\ngated = []\n", "no [card] table"),
        ("[card\n", "invalid TOML"),
    ],
)
def test_a_bad_card_file_is_an_error_naming_the_key(tmp_path, text, message, capsys):
    card = tmp_path / "card.toml"
    card.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="card.toml") as err:
        read_card(card)
    assert message in str(err.value)
    run = tiny_run(tmp_path / "run")
    assert cli.main(["report", str(run), "--card", str(card)]) == 2
    assert message in capsys.readouterr().err
    assert not (run / "card.toml").exists()


def test_the_data_audit_and_robustness_are_read_where_the_run_has_them(tmp_path):
    run = tiny_run(tmp_path / "run")
    report = build_report(run)
    report["audit"] = {
        "available": True,
        "sets": {
            "test_difficult": {"statement": "test_difficult: 3 of 16 images are near copies", "near_copy_share": 0.1875}
        },
        "suspects": {"train": {"top": [{"image": "train/b/x.jpg"}]}},
        "health": [{"text": "2 images under 64 px"}],
        "reason": "gated: the cpu profile's test sets",
    }
    report["robustness"] = {
        "corruption": [
            {
                "model": MODEL,
                "seed": 0,
                "split": "test_difficult",
                "corruption": "blur",
                "severity": 3,
                "clean_soft": 0.9375,
                "soft": 0.5,
                "status": "FAIL",
            },
            {"model": "other", "seed": 0, "split": "test_difficult", "corruption": "blur", "severity": 3},
        ],
        "masking": [{"model": MODEL, "seed": 0, "split": "test_difficult", "object": 0.75, "status": "PASS"}],
    }
    _, body = split_card(to_markdown(build_card(report, MODEL, CardInfo())))
    assert (
        "- test_difficult: test_difficult: 3 of 16 images are near copies "
        "(share of near copies of a training image: 19%)" in body
    )
    assert "- train: 1 suspect label(s) flagged by cleanlab, e.g. train/b/x.jpg" in body
    assert "- 2 images under 64 px" in body and "Why the audit gates or not: gated" in body
    assert "| blur (severity 3) | test_difficult | s0 | 0.938 → 0.5 | ❌ FAIL |" in body
    assert "masking the object on test_difficult (s0): object 0.75 (PASS)" in body
    assert body.count("| blur (severity 3)") == 1  # another model's rows stay on its own card
    # a malformed section is read defensively: no exception, "not measured"
    report["audit"], report["robustness"] = "garbage", ["garbage"]
    _, body = split_card(to_markdown(build_card(report, MODEL, CardInfo())))
    assert "Data audit: not measured" in body and "Robustness: not measured" in body


def test_no_card_without_a_gated_model(tmp_path):
    run = tiny_run(tmp_path / "run")
    proto = json.loads((run / "run.json").read_text())
    proto["thresholds"]["gated"] = []
    (run / "run.json").write_text(json.dumps(proto))
    (run / "report.json").unlink()
    shutil.rmtree(run / "cards")
    write_reports(run, build_report(run))
    assert not (run / "cards").exists() and 'id="model-cards"' not in (run / "report.html").read_text()
