"""report.json (and compare.json) -> a short Markdown summary for CI job pages and pull requests: the verdict, the
gated criteria, the accuracy matrix beside the baselines, links to the artefacts. Written as summary.md in every run
(and in every compare folder), printed by `harness report RUN --format markdown`, appended to $GITHUB_STEP_SUMMARY
when that is set (GitHub Actions shows it on the job's page)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
SUMMARY = "summary.md"
ICON = {"PASS": "✅", "FAIL": "❌", "ERROR": "⚠️", "SKIP": "⏭️", "UNGATED": "ℹ️", "OK": "✅", "REGRESSION": "❌"}
ORDER = {"ERROR": 0, "FAIL": 1, "SKIP": 2, "PASS": 3}


def cell(value: Any) -> str:
    """A value as one Markdown table cell: no line breaks, `|` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def num(v: Any, digits: int = 3) -> str:
    return "n/a" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.{digits}g}"


def status(s: Any) -> str:
    return f"{ICON.get(str(s), '')} {s}".strip()


def interval(w: Any) -> str:
    return f"[{w[0]:.2f}, {w[1]:.2f}]" if isinstance(w, (list, tuple)) and len(w) == 2 else ""


def _baseline_row(baselines: Mapping[str, Any], splits: Sequence[str], name: str, key: str) -> list[str]:
    row = [name, ""]
    for split in splits:
        b = baselines.get(split) or {}
        for kind in ("soft", "strict"):
            v = b.get(f"{key}_{kind}")
            if isinstance(v, Mapping):  # the constant answer: its label and score
                row.append(f"{num(v.get('value'))} ('{v.get('label')}')")
            else:
                row.append(num(v))
    return row


def accuracy_matrix(report: Mapping[str, Any]) -> str:
    """Every model's soft / strict accuracy per test set (mean over seeds, the worst seed's Wilson 95% interval),
    gated models first, with the constant answer and a uniform guess below."""
    matrix = report.get("matrix") or {}
    splits: list[str] = []
    for per in matrix.values():
        splits += [s for s in (per or {}) if s not in splits]
    if not splits:
        return "_No accuracy measured (no model folder has metrics.json)._"
    models = report.get("models") or {}
    order = sorted(matrix, key=lambda m: (not (models.get(m) or {}).get("gated"), m))
    header = ["model", "gated"] + [f"{s} {kind}" for s in splits for kind in ("soft", "strict")]
    rows = []
    for model in order:
        row = [model, "yes" if (models.get(model) or {}).get("gated") else ""]
        for split in splits:
            for kind in ("soft", "strict"):
                m = ((matrix[model] or {}).get(split) or {}).get(kind) or {}
                seeds = len(m.get("per_seed") or {})
                text = f"{num(m.get('mean'))} {interval(m.get('wilson_worst'))}".strip() if m else "n/a"
                row.append(text + (f" ({seeds} seeds)" if seeds > 1 else ""))
        rows.append(row)
    baselines = report.get("baselines") or {}
    rows.append(_baseline_row(baselines, splits, "constant answer", "constant"))
    rows.append(_baseline_row(baselines, splits, "uniform guess", "uniform"))
    return table(header, rows)


def gated_table(verdicts: Sequence[Mapping[str, Any]]) -> str:
    gated = sorted(
        (v for v in verdicts if v.get("gated")), key=lambda v: (ORDER.get(str(v.get("status")), 9), v.get("criterion"))
    )
    if not gated:
        return "_Nothing is gated in this run: every verdict is an ablation (reported, never failing)._"
    rows = [
        (
            status(v.get("status")),
            v.get("criterion"),
            v.get("id"),
            num(v.get("value"), 4),
            v.get("comparison") if v.get("threshold") is not None else "",
            num(v.get("threshold"), 4) if v.get("threshold") is not None else "none",
            v.get("detail") or "",
        )
        for v in gated
    ]
    return table(["status", "criterion", "id", "measured", "", "threshold", "detail"], rows)


def _counts(verdicts: Iterable[Mapping[str, Any]]) -> str:
    c = Counter(str(v.get("status")) for v in verdicts)
    return ", ".join(f"{c[s]} {s}" for s in sorted(c, key=lambda s: ORDER.get(s, 9))) or "none"


def artefacts(report: Mapping[str, Any], run_dir: Path | None) -> list[str]:
    """Links (relative to the run directory, where summary.md is) to the files a reader opens next; with run_dir,
    only those that exist."""
    files = ["report.html", "report.json"]
    files += [f"cards/{m}/model-card.md" for m, d in sorted((report.get("models") or {}).items()) if d.get("gated")]
    for folder in sorted(report.get("variants") or {}):
        files.append(f"{folder}/model.onnx")
    if run_dir is not None:
        files = [f for f in files if (Path(run_dir) / f).is_file()]
    what = {"report.html": "the full report", "report.json": "every figure, verdict and the manifest"}
    return [f"- [{f}]({f})" + (f": {what[f]}" if f in what else "") for f in files]


def ladder_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per test set: the soft accuracy of the linear probe and of kNN on frozen ImageNet features
    (report.json's `ladder`), the rungs a model must beat before its training earns its cost."""
    ladder = report.get("ladder")
    if not isinstance(ladder, Mapping) or not ladder.get("available"):
        return []
    out = []
    for split, entry in (ladder.get("test_sets") or {}).items():
        rungs = {ln.get("name"): ln for ln in (entry or {}).get("lines") or [] if isinstance(ln, Mapping)}
        if "probe" in rungs and "knn" in rungs:
            out.append(
                f"- {split}: linear probe soft {num(rungs['probe']['soft']['value'])}, kNN soft "
                f"{num(rungs['knn']['soft']['value'])} (frozen ImageNet features; beats_probe compares each model)"
            )
    return [*out, ""] if out else []


def run_summary(report: Mapping[str, Any], run_dir: Path | None = None) -> str:
    """summary.md of a run: verdict, gated criteria, accuracy matrix beside the baselines, artefacts."""
    verdicts = [v for v in report.get("verdicts") or [] if isinstance(v, Mapping)]
    proto = report.get("protocol") or {}
    profile = proto.get("profile") or {}
    name = Path(str(report.get("run_dir") or run_dir or "run")).name
    verdict = str(report.get("verdict"))
    gated = [v for v in verdicts if v.get("gated")]
    ablations = [v for v in verdicts if not v.get("gated")]
    seeds = ", ".join(str(s) for s in proto.get("seeds") or profile.get("seeds") or []) or "n/a"
    lines = [
        f"# harness {status(verdict)}: {name}",
        "",
        f"**{verdict}**: gated criteria {_counts(gated)}; ablations (reported, never failing) {_counts(ablations)}.",
        f"Profile `{profile.get('name', 'n/a')}`, backbone `{profile.get('backbone', 'n/a')}`, seeds {seeds}, "
        f"test sets {', '.join(profile.get('test_sets') or []) or 'n/a'}.",
        "",
        "## Gated criteria",
        "",
        gated_table(verdicts),
        "",
        "## Accuracy beside the baselines",
        "",
        "Soft accuracy counts any acceptable label, strict only the primary one: the mean over seeds and the worst "
        "seed's Wilson 95% interval. A model is worth something only above the constant answer.",
        "",
        accuracy_matrix(report),
        "",
        *ladder_lines(report),
    ]
    failed = report.get("failed_jobs") or []
    if failed:
        lines += ["## Failed jobs", ""]
        lines += [f"- `{j.get('id')}`: {cell(j.get('error'))}" for j in failed if isinstance(j, Mapping)]
        lines.append("")
    links = artefacts(report, run_dir)
    if links:
        lines += ["## Artefacts", "", *links, ""]
    return "\n".join(lines)


def _delta(m: Mapping[str, Any]) -> str:
    b, n = m.get("baseline") or {}, m.get("new") or {}
    d = m.get("delta")
    p = (m.get("paired") or {}).get("p")
    text = f"{num(b.get('value'))} → {num(n.get('value'))}"
    if isinstance(d, (int, float)):
        text += f" ({d:+.3f})"
    return text + (f", McNemar p {p:.3g}" if isinstance(p, (int, float)) else "")


def compare_summary(result: Mapping[str, Any]) -> str:
    """summary.md of `harness compare`: the verdict, each regression, the gated verdicts that changed, and the
    paired accuracy of every model on every common test set."""
    base, new = result.get("baseline") or {}, result.get("new") or {}
    verdict = str(result.get("verdict"))
    lines = [
        f"# harness compare {status(verdict)}: {base.get('name')} → {new.get('name')}",
        "",
        f"**{verdict}**: baseline `{base.get('name')}` ({base.get('verdict')}), new `{new.get('name')}` "
        f"({new.get('verdict')}); common test sets {', '.join(result.get('test_sets') or []) or 'none'}.",
        "",
    ]
    regressions = result.get("regressions") or []
    lines += ["## Regressions", ""]
    lines += [
        f"- {r.get('kind')} {r.get('model')} {r.get('subject') or ''}: {cell(r.get('detail'))}" for r in regressions
    ]
    lines += ["- none" if not regressions else "", ""]
    changes = result.get("verdict_changes") or []
    if changes:
        rows = [
            (c.get("criterion"), c.get("id"), status(c.get("baseline") or "absent"), status(c.get("new") or "absent"))
            for c in changes
        ]
        lines += ["## Gated verdicts that changed", "", table(["criterion", "id", "baseline", "new"], rows), ""]
    comps = [c for c in result.get("comparisons") or [] if isinstance(c, Mapping)]
    if comps:
        rows2 = [
            (
                c.get("model"),
                "yes" if c.get("gated") else "",
                c.get("test_set"),
                _delta(c.get("soft") or {}),
                _delta(c.get("strict") or {}),
                f"{len((c.get('flips') or {}).get('right_to_wrong') or [])} / "
                f"{len((c.get('flips') or {}).get('wrong_to_right') or [])}",
            )
            for c in comps
        ]
        header = ["model", "gated", "test set", "soft", "strict", "right→wrong / wrong→right"]
        lines += ["## Accuracy, paired image by image", "", table(header, rows2), ""]
    lines += [
        "## Artefacts",
        "",
        "- [compare.html](compare.html): the full comparison",
        "- [compare.json](compare.json)",
        "",
    ]
    return "\n".join(lines)


def append_step_summary(text: str) -> Path | None:
    """Append `text` to $GITHUB_STEP_SUMMARY (GitHub Actions' job summary) when it is set; the file, else None."""
    target = os.environ.get(STEP_SUMMARY)
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n\n")
    return Path(target)
