"""report.json -> one self-contained report.html (inline CSS, every image a base64 data URI, no external URL):
the view model of the section modules rendered with the jinja2 template templates/report.html."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report import model_card, sections
from harness.report.audit import audit_section
from harness.report.format import NA, dig, split_label
from harness.report.jinja import template_env
from harness.report.ladder import ladder_view
from harness.report.localization import localization_rows, saliency_section
from harness.report.models import gated_models, identities, model_of, model_order, protocol_models, seed_runs
from harness.report.protocol import protocol
from harness.report.robustness import robustness_view
from harness.report.wording import WORDS, criteria_meanings, is_book_dataset
from harness.saliency.registry import GRADCAM, METHODS

__all__ = ["render_html", "MAX_EMBEDDED_OVERLAYS"]

# Above this many saliency overlays (first seed of every model, the method's test set), only the gated models' are
# embedded and the others are listed as file paths, to keep the HTML file a reasonable size.
MAX_EMBEDDED_OVERLAYS = 60


def context(report: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The template's view model: every string formatted, every missing piece marked."""
    run_dir = Path(run_dir)
    verdicts = [v for v in report.get("verdicts") or [] if isinstance(v, Mapping)]
    ids = identities(report)
    gated = gated_models(report, verdicts)
    runs = seed_runs(report)
    in_run = protocol_models(report, ids) | set(report.get("matrix") or {}) | set(runs)
    names = in_run | {m for v in verdicts if (m := model_of(v))}
    order = sorted(names, key=model_order(gated, ids))
    splits = list(dig(report, "protocol", "profile", "test_sets", default=[]) or [])
    for name in report.get("matrix") or {}:
        splits += [s for s in (report["matrix"][name] or {}) if s not in splits]
    primary = "test_difficult" if "test_difficult" in splits else (splits[-1] if splits else "test_difficult")
    book = is_book_dataset(report)
    cam_split = dig(report, "protocol", "thresholds", METHODS[GRADCAM].thresholds_key, "split", default=None) or primary

    def saliency(method: str) -> dict[str, Any]:
        info = METHODS[method]
        split = dig(report, "protocol", "thresholds", info.thresholds_key, "split", default=None) or cam_split
        return saliency_section(report, run_dir, order, runs, gated, split, book, verdicts, info, MAX_EMBEDDED_OVERLAYS)

    meanings = criteria_meanings(book)
    return {
        "banner": sections.banner(report, verdicts),
        "verdicts": sections.verdict_rows(verdicts, book),
        "criteria": [(k, v) for k, v in meanings.items() if any(r.get("criterion") == k for r in verdicts)],
        "matrix": sections.accuracy_matrix(report, splits, ids, in_run, gated, book),
        "ladder": ladder_view(report),  # constant -> kNN -> linear probe -> each model (report/ladder.py)
        "curves": sections.curves(order, runs, gated),
        "confusion": sections.confusion(order, runs, gated, splits, primary),
        "confusion_split": split_label(primary),
        "cam": saliency(GRADCAM),
        "blackbox": [sec for m, info in METHODS.items() if info.black_box and (sec := saliency(m))["available"]],
        "localization": localization_rows(report),
        "robustness": robustness_view(report, run_dir, order, gated),  # corruptions, masking, faithfulness
        "evidence": sections.evidence_view(report, order, gated, book),
        "notes": [str(n) for n in report.get("thresholds_notes") or []],
        "failed_jobs": [
            {
                "id": str(j.get("id")),
                "variant": str(j.get("variant")),
                "seed": j.get("seed"),
                "error": str(j.get("error") or "no error recorded"),
                "host": str(j.get("host") or ""),
            }
            for j in report.get("failed_jobs") or []
            if isinstance(j, Mapping)
        ],
        "is_check": dig(report, "protocol", "kind", default="") == "check",
        "export": sections.export(order, runs),
        "judged": [
            {"model": m, "sets": [{"split": split_label(k), "criteria": ", ".join(c)} for k, c in t.items()]}
            for m, t in (report.get("judged") or {}).items()
            if isinstance(t, Mapping)
        ],
        "model_cards": model_card.html_cards(report, run_dir),  # the gated models' cards (report/model_card.py)
        "protocol": protocol(report),
        "audit": audit_section(report, run_dir),  # can the test sets be trusted? (report/audit.py)
        "words": WORDS[book],
        "NA": NA,
    }


def render_html(report: Mapping[str, Any], run_dir: Path) -> str:
    """One self-contained HTML page for the business owner: verdict first, then the evidence, then the protocol.

    The report dict of `harness.report.build` becomes a view model of plain strings and lists (every number formatted,
    every missing piece "not available"); derived figures (confusion matrices summed over seeds, training curves) are
    computed at render time, so report.json stays the single source of the numbers."""
    return template_env().get_template("report.html").render(**context(report, Path(run_dir)))
