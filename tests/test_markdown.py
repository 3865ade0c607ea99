"""summary.md (harness.report.markdown): written in every run and compare folder, printed by `harness report RUN
--format markdown`, appended to $GITHUB_STEP_SUMMARY; rendered here with markdown-it-py, as GitHub renders it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import cli
from harness.compare import compare_paths, write_compare
from harness.report.markdown import ORDER, cell, run_summary, table
from tests.test_plugin import tiny_run

markdown_it = pytest.importorskip("markdown_it")


class Tables(HTMLParser):
    """The tables of an HTML page as lists of rows of cell texts, and the page's links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "a":
            self.links.append(dict(attrs)["href"])
        elif tag in ("h1", "h2"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def render(text: str) -> Tables:
    page = Tables()
    page.feed(markdown_it.MarkdownIt("commonmark").enable("table").render(text))
    return page


def test_a_run_summary_renders_to_the_verdict_the_gated_criteria_and_the_matrix(tmp_path):
    run = tiny_run(tmp_path / "run", ablations={"scratch-all": True})
    text = (run / "summary.md").read_text(encoding="utf-8")
    page = render(text)
    assert page.headings == [
        "harness ✅ PASS: run",
        "Gated criteria",
        "Accuracy beside the baselines",
        "Artefacts",
    ]
    gated, matrix = page.tables
    assert gated[0] == ["status", "criterion", "id", "measured", "", "threshold", "detail"]
    rows = {(r[1], r[2]): r for r in gated[1:]}
    assert rows[("accuracy", "vgg16-imagenet-all-test_difficult")][:6] == [
        "✅ PASS",
        "accuracy",
        "vgg16-imagenet-all-test_difficult",
        "0.9375",
        ">=",
        "0.9",
    ]
    assert not any("scratch-all" in r[2] for r in gated[1:])  # ablations are counted, not listed
    assert matrix[0] == ["model", "gated", "test_difficult soft", "test_difficult strict"]
    by_model = {r[0]: r for r in matrix[1:]}
    assert by_model["vgg16-imagenet-all"][1:3] == ["yes", "0.938 [0.72, 0.99]"]
    assert by_model["vgg16-scratch-all"][2].startswith("0.5 [")
    assert by_model["constant answer"][2:] == ["0.375 ('b')", "0.25 ('a')"]
    assert list(by_model)[-1] == "uniform guess"
    # every link points at a file of the run
    assert page.links and all((run / link).is_file() for link in page.links), page.links
    assert "cards/vgg16-imagenet-all/model-card.md" in page.links and "vgg16-scratch-all-s0/model.onnx" in page.links


def test_a_cell_holding_a_pipe_or_a_line_break_stays_one_cell():
    text = table(["a", "b"], [["x | y", "two\nlines"]])
    rows = render(text).tables[0]
    assert rows == [["a", "b"], ["x | y", "two lines"]]
    assert cell("a|b") == "a\\|b"


def test_a_failing_run_says_so_first(tmp_path):
    run = tiny_run(tmp_path / "run", soft_k=8, strict_k=8)
    page = render((run / "summary.md").read_text(encoding="utf-8"))
    assert page.headings[0] == "harness ❌ FAIL: run"
    statuses = [r[0] for r in page.tables[0][1:]]
    words = [s.split()[-1] for s in statuses]
    assert words[0] == "FAIL" and words == sorted(words, key=ORDER.__getitem__)  # what needs reading first


def test_harness_report_prints_it_and_appends_it_to_the_job_summary(tmp_path, capsys, monkeypatch):
    run = tiny_run(tmp_path / "run")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert cli.main(["report", str(run), "--format", "markdown"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == (run / "summary.md").read_text(encoding="utf-8").rstrip("\n")
    job = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job))
    assert cli.main(["report", str(run)]) == 0  # text output; the job summary gets the Markdown all the same
    assert cli.main(["report", str(run), "--format", "markdown"]) == 0
    assert job.read_text(encoding="utf-8").count("# harness ✅ PASS: run") == 2
    assert "verdict: PASS" in capsys.readouterr().out


def test_compare_writes_one_too(tmp_path, monkeypatch):
    base = tiny_run(tmp_path / "base")
    new = tiny_run(tmp_path / "new", soft_k=8, strict_k=8)
    result, _ = compare_paths(base, new)
    write_compare(result, tmp_path / "cmp")
    text = (tmp_path / "cmp" / "summary.md").read_text(encoding="utf-8")
    page = render(text)
    assert page.headings[0] == "harness compare ❌ REGRESSION: base → new"
    assert "Regressions" in page.headings and re.search(r"accuracy_drop vgg16-imagenet-all test_difficult", text)
    changed = {(r[0], r[1]): r[2:] for r in page.tables[0][1:]}
    assert changed[("accuracy", "vgg16-imagenet-all-test_difficult")] == ["✅ PASS", "❌ FAIL"]
    paired = page.tables[-1]
    assert paired[1][:3] == ["vgg16-imagenet-all", "yes", "test_difficult"]
    assert paired[1][3].startswith("0.938 → 0.5 (-0.438)") and paired[1][5] == "7 / 0"
    assert set(page.links) == {"compare.html", "compare.json"}


def test_run_summary_without_a_run_directory_lists_no_missing_file():
    report = {"verdict": "UNGATED", "verdicts": [], "variants": {}, "models": {}}
    text = run_summary(report, Path("/nonexistent"))
    assert "Nothing is gated in this run" in text and "report.html" not in text
    assert "No accuracy measured" in text
