"""A model card per gated model, in the Hugging Face model card format: YAML metadata (a `model-index` of the measured
results) then Markdown sections: model details, intended use, training data and the data audit's findings,
evaluation with intervals and baselines, where it looks, limitations (robustness), how it was made.

Everything is filled from report.json; the data audit (report key `audit`) and robustness (`robustness`) where the
run has them, "not measured" where it has not. The owner's own words (intended use, owner, licence...) come from an
optional `[card]` table of a TOML file (`--card FILE`), kept in the run directory as card.toml so a later
`harness report` keeps them. Written as <run>/cards/<model>/model-card.md and shown in report.html.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import artifacts
from harness.report.markdown import interval, num, status, table
from harness.validate import ConfigError, from_table, read_str, read_str_list, read_toml

CARD_FILE = "card.toml"  # the owner's [card] table, copied into the run directory
CARDS = "cards"  # <run>/cards/<model>/model-card.md
NOT_STATED = "Not stated: the owner gives it in the [card] table of a TOML file (harness run/check/report --card FILE)."


@dataclass(frozen=True)
class CardInfo:
    """The owner's words for the card ([card] table); every field optional."""

    owner: str = ""
    license: str = ""  # a Hugging Face licence id (mit, apache-2.0, other...)
    description: str = ""
    intended_use: str = ""
    out_of_scope: str = ""
    limitations: str = ""
    contact: str = ""
    tags: tuple[str, ...] = ()


def _text(v: Any, k: str, w: str) -> str:
    return read_str(v, k, w, nonempty=False).strip()


CARD_FIELDS = {name: _text for name in ("owner", "license", "description", "intended_use", "out_of_scope")} | {
    "limitations": _text,
    "contact": _text,
    "tags": lambda v, k, w: read_str_list(v, k, w, nonempty=False),
}


def read_card(path: Path) -> CardInfo:
    """The [card] table of a TOML file (other tables are left alone: it may be a thresholds file too)."""
    raw = read_toml(Path(path), "model card")
    if "card" not in raw:
        raise ConfigError(f"{path}: no [card] table (give owner, license, intended_use... under [card])")
    return from_table(CardInfo, raw["card"], str(path), "card", CARD_FIELDS)


def keep_card(run_dir: Path, path: Path | None) -> None:
    """Check the owner's card file and copy it into the run directory (card.toml), where every report rewrite reads
    it; None keeps the one there."""
    if path is not None:
        read_card(path)
        artifacts.write_text(Path(run_dir) / CARD_FILE, Path(path).read_text(encoding="utf-8"))


def card_info(run_dir: Path | None) -> CardInfo:
    path = Path(run_dir) / CARD_FILE if run_dir is not None else None
    return read_card(path) if path is not None and path.is_file() else CardInfo()


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    kind: str = "table"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    kind: str = "bullets"


@dataclass(frozen=True)
class Para:
    text: str
    kind: str = "para"


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Table | Bullets | Para, ...]


@dataclass(frozen=True)
class Card:
    model: str
    metadata: dict[str, Any]
    sections: tuple[Section, ...] = field(default_factory=tuple)


def _d(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {}


def _l(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else []


def _splits(report: Mapping[str, Any], model: str) -> list[str]:
    return list(_d(_d(report.get("matrix")).get(model)))


def model_index(report: Mapping[str, Any], model: str) -> list[dict[str, Any]]:
    """Hugging Face `model-index` results: per test set, soft and strict accuracy (mean over seeds), the worst seed's
    Wilson 95% lower bound, and the expected calibration error."""
    data = Path(str(_d(report.get("protocol")).get("data_root") or "dataset")).name
    calibration = _d(_d(_d(report.get("evidence")).get("calibration")).get(model))
    results = []
    for split in _splits(report, model):
        cellm = _d(_d(report.get("matrix")).get(model)).get(split) or {}
        metrics = []
        for kind in ("soft", "strict"):
            m = _d(cellm.get(kind))
            seeds = len(_d(m.get("per_seed"))) or 1
            if isinstance(m.get("mean"), (int, float)):
                metrics.append(
                    {"type": "accuracy", "name": f"{kind} accuracy (mean of {seeds} seed(s))", "value": m["mean"]}
                )
            w = m.get("wilson_worst")
            if isinstance(w, (list, tuple)) and len(w) == 2:
                metrics.append({"type": "accuracy", "name": f"{kind} accuracy, Wilson 95% lower bound", "value": w[0]})
        ece = _d(calibration.get(split)).get("ece")
        if isinstance(ece, (int, float)):
            metrics.append({"type": "ece", "name": "expected calibration error (top-1, soft)", "value": ece})
        if metrics:
            results.append(
                {
                    "task": {"type": "image-classification", "name": "Image Classification"},
                    "dataset": {"type": "imagefolder", "name": f"{data} ({split})", "split": split},
                    "metrics": [m | {"verified": False} for m in metrics],
                }
            )
    return [{"name": model, "results": results}]


def _details(report: Mapping[str, Any], model: str, info: CardInfo) -> Section:
    ident = _d(_d(report.get("models")).get(model))
    proto = _d(report.get("protocol"))
    entries = [e for e in _d(report.get("variants")).values() if isinstance(e, Mapping) and e.get("model") == model]
    export = _d(entries[0].get("export")) if entries else {}
    how = "an ONNX model checked by harness" if ident.get("kind") == "check" else "trained by harness"
    items = [f"Model: {model} ({how})"]
    if ident.get("kind") != "check":
        items.append(
            f"Architecture: {ident.get('backbone')} with a small classification head; initialisation "
            f"{ident.get('init')}, augmentation {ident.get('level')} (variant {ident.get('variant')})"
        )
    items.append(f"Seeds in the run: {', '.join(str(s) for s in _l(ident.get('seeds'))) or 'none'}")
    items.append(f"Classes: {', '.join(str(c) for c in _l(_d(proto.get('data')).get('classes'))) or 'not recorded'}")
    if export:
        items.append(
            f"Format: ONNX (opset {export.get('opset')}, {export.get('exporter')} exporter); PyTorch vs onnxruntime "
            f"max |difference| {num(export.get('max_abs'))}"
        )
    items += [f"Owner: {info.owner or 'not stated'}", f"Licence: {info.license or 'not stated'}"]
    if info.contact:
        items.append(f"Contact: {info.contact}")
    blocks: list[Table | Bullets | Para] = [Para(info.description)] if info.description else []
    return Section("Model details", (*blocks, Bullets(tuple(items))))


def _intended(info: CardInfo) -> Section:
    blocks: list[Table | Bullets | Para] = [Para(info.intended_use or NOT_STATED)]
    if info.out_of_scope:
        blocks.append(Para(f"Out of scope: {info.out_of_scope}"))
    return Section("Intended use", tuple(blocks))


def _audit(report: Mapping[str, Any]) -> list[Table | Bullets | Para]:
    audit = _d(report.get("audit"))
    if not audit:
        return [Para("Data audit: not measured (this run has no audit of its data).")]
    if not audit.get("available", True):
        return [Para(f"Data audit: not measured ({audit.get('problem') or 'no audit.json'}).")]
    items = []
    for split, s in _d(audit.get("sets")).items():
        s = _d(s)
        share = s.get("near_copy_share")
        share_text = (
            f" (share of near copies of a training image: {share:.0%})" if isinstance(share, (int, float)) else ""
        )
        items.append(f"{split}: {s.get('statement') or s.get('kind') or 'measured'}{share_text}")
    for split, s in _d(audit.get("suspects")).items():
        top = _l(_d(s).get("top"))
        if top:
            items.append(f"{split}: {len(top)} suspect label(s) flagged by cleanlab, e.g. {_d(top[0]).get('image')}")
    items += [str(_d(h).get("text")) for h in _l(audit.get("health")) if _d(h).get("text")]
    if audit.get("reason"):
        items.append(f"Why the audit gates or not: {audit['reason']}")
    return [Para("Data audit:"), Bullets(tuple(items) or ("measured; nothing to report",))]


def _data(report: Mapping[str, Any], model: str) -> Section:
    proto = _d(report.get("protocol"))
    data = _d(proto.get("data"))
    test_n = {
        split: _d(_d(_d(report.get("matrix")).get(model)).get(split)).get("soft", {}).get("n")
        for split in _splits(report, model)
    }
    items = [
        f"Dataset: {proto.get('data_root') or 'not recorded'}",
        "Training set fingerprint (sha256): "
        + (data.get("train") or "not recorded (a checked model was trained elsewhere)"),
        "Test sets: " + (", ".join(f"{s} (n = {n})" for s, n in test_n.items()) or "none"),
    ]
    return Section("Training data and the data audit", (Bullets(tuple(items)), *_audit(report)))


def _evaluation(report: Mapping[str, Any], model: str) -> Section:
    matrix = _d(_d(report.get("matrix")).get(model))
    baselines = _d(report.get("baselines"))
    calibration = _d(_d(_d(report.get("evidence")).get("calibration")).get(model))
    rows = []
    for split, per in matrix.items():
        b = _d(baselines.get(split))
        for kind in ("soft", "strict"):
            m = _d(_d(per).get(kind))
            const = _d(b.get(f"constant_{kind}"))
            rows.append(
                (
                    split,
                    kind,
                    num(m.get("mean")),
                    interval(m.get("wilson_worst")),
                    f"{num(const.get('value'))} ('{const.get('label')}')",
                    num(b.get(f"uniform_{kind}")),
                    str(m.get("n")),
                    num(_d(calibration.get(split)).get("ece")) if kind == "soft" else "",
                )
            )
    header = ("test set", "accuracy", "mean", "worst seed's Wilson 95%", "constant answer", "uniform guess", "n", "ECE")
    blocks: list[Table | Bullets | Para] = [
        Para(
            "Soft accuracy counts any acceptable label, strict only the primary one; each figure stands beside the "
            "best constant answer and a uniform guess on the same images."
        ),
        Table(header, tuple(rows)) if rows else Para("Accuracy: not measured."),
    ]
    mine = [
        v for v in _l(report.get("verdicts")) if isinstance(v, Mapping) and v.get("model") == model and v.get("gated")
    ]
    if mine:
        vrows = tuple(
            (
                status(v.get("status")),
                str(v.get("criterion")),
                str(v.get("subject") or ""),
                num(v.get("value"), 4),
                f"{v.get('comparison')} {num(v.get('threshold'), 4)}" if v.get("threshold") is not None else "none",
            )
            for v in mine
        )
        blocks += [
            Para("The gate's verdicts on this model:"),
            Table(("status", "criterion", "on", "measured", "threshold"), vrows),
        ]
    return Section("Evaluation", tuple(blocks))


def _looks(report: Mapping[str, Any], model: str) -> Section:
    rows = tuple(
        (
            str(r.get("method")),
            str(r.get("split")),
            f"{num(r.get('energy'))} (uniform map {num(r.get('energy_chance'))})",
            f"{num(r.get('pointing'))} (uniform map {num(r.get('pointing_chance'))})",
            num(r.get("sanity_spearman")),
        )
        for r in _l(report.get("localization"))
        if isinstance(r, Mapping) and r.get("model") == model
    )
    if not rows:
        return Section("Where it looks", (Para("Not measured (no saliency evidence for this model)."),))
    header = ("method", "test set", "energy share in the labelled regions", "pointing rate", "sanity (Spearman)")
    note = Para(
        "Share of the saliency map inside the labelled object regions and pointing-game hit rate, each beside a "
        "uniform map's; the sanity check correlates the maps with those of a model whose last layer is randomised "
        "(high: the maps do not depend on the model)."
    )
    return Section("Where it looks", (note, Table(header, rows)))


def _limitations(report: Mapping[str, Any], model: str, info: CardInfo) -> Section:
    blocks: list[Table | Bullets | Para] = [Para(info.limitations)] if info.limitations else []
    rob = _d(report.get("robustness"))
    corr = [r for r in _l(rob.get("corruption")) if isinstance(r, Mapping) and r.get("model") == model]
    mask = [r for r in _l(rob.get("masking")) if isinstance(r, Mapping) and r.get("model") == model]
    faith = [r for r in _l(rob.get("faithfulness")) if isinstance(r, Mapping) and r.get("model") == model]
    if corr:
        rows = tuple(
            (
                f"{r.get('corruption')} (severity {r.get('severity')})",
                str(r.get("split")),
                f"s{r.get('seed')}",
                f"{num(r.get('clean_soft'))} → {num(r.get('soft'))}",
                status(r.get("status")),
            )
            for r in corr
        )
        blocks += [
            Para("Robustness: soft accuracy, clean → corrupted:"),
            Table(("corruption", "test set", "seed", "soft accuracy", "verdict"), rows),
        ]
    for r in mask + faith:
        figures = ", ".join(
            f"{k} {num(v)}"
            for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"
        )
        what = "masking the object" if r in mask else f"faithfulness of {r.get('method')}"
        blocks.append(Para(f"Robustness, {what} on {r.get('split')} (s{r.get('seed')}): {figures} ({r.get('status')})"))
    if not (corr or mask or faith):
        blocks.append(Para("Robustness: not measured (no corruption, masking or faithfulness evidence in this run)."))
    small = sorted(
        {
            f"{s} (n = {_d(_d(per).get('soft')).get('n')})"
            for s, per in _d(_d(report.get("matrix")).get(model)).items()
            if isinstance(_d(_d(per).get("soft")).get("n"), int) and _d(_d(per).get("soft"))["n"] < 100
        }
    )
    if small:
        blocks.append(Para(f"Small test sets: {', '.join(small)}; read the intervals, not the point estimates."))
    failing = [
        f"{v.get('criterion')}[{v.get('id')}] {v.get('status')}"
        for v in _l(report.get("verdicts"))
        if isinstance(v, Mapping)
        and v.get("model") == model
        and v.get("gated")
        and v.get("status") in ("FAIL", "ERROR")
    ]
    if failing:
        blocks.append(Para("Gated criteria not met: " + ", ".join(failing) + "."))
    return Section("Limitations", tuple(blocks))


def _made(report: Mapping[str, Any], model: str) -> Section:
    proto = _d(report.get("protocol"))
    init = _d(_d(report.get("models")).get(model)).get("init")
    profile = _d(proto.get("profile"))
    versions = ", ".join(f"{k} {v}" for k, v in _d(proto.get("versions")).items()) or "not recorded"
    items = [
        f"Profile: {profile.get('name') or 'n/a'} ({profile.get('source') or 'built in'})",
        f"Seeds: {', '.join(str(s) for s in _l(proto.get('seeds'))) or 'n/a'}; "
        f"image size {profile.get('image_size', 'n/a')} px",
        f"Versions: {versions}",
        "Device: " + (", ".join(f"{k} {v}" for k, v in _d(proto.get("device")).items()) or "n/a"),
        f"Command: {' '.join(str(a) for a in _l(proto.get('argv'))) or 'n/a'}",
        f"Run: {report.get('run_dir')} (report {report.get('created')}, verdict {report.get('verdict')})",
    ]
    phases = _d(profile.get("phases"))
    for name, plist in phases.items():
        if init is not None and name != init:
            continue  # the phases of the other initialisation
        for p in _l(plist):
            p = _d(p)
            items.append(
                f"Phase {name}/{p.get('name')}: {p.get('epochs')} epochs, {p.get('optimizer')} lr {p.get('lr')}, "
                f"trains from {p.get('train_from')}"
            )
    return Section("How it was made", (Bullets(tuple(items)),))


def build_card(report: Mapping[str, Any], model: str, info: CardInfo) -> Card:
    meta: dict[str, Any] = {"license": info.license} if info.license else {}
    meta |= {
        "library_name": "onnx",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "onnx", "harness", *info.tags],
        "model-index": model_index(report, model),
    }
    sections = (
        _details(report, model, info),
        _intended(info),
        _data(report, model),
        _evaluation(report, model),
        _looks(report, model),
        _limitations(report, model, info),
        _made(report, model),
    )
    return Card(model, meta, sections)


def gated_models(report: Mapping[str, Any]) -> list[str]:
    return sorted(m for m, d in _d(report.get("models")).items() if _d(d).get("gated"))


def cards(report: Mapping[str, Any], run_dir: Path | None) -> list[Card]:
    info = card_info(run_dir)
    return [build_card(report, m, info) for m in gated_models(report)]


def to_markdown(card: Card) -> str:
    front = yaml.safe_dump(card.metadata, sort_keys=False, allow_unicode=True, width=1000)
    out = ["---", front.rstrip("\n"), "---", "", f"# Model card: {card.model}", ""]
    for sec in card.sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(table(b.header, b.rows))
            elif isinstance(b, Bullets):
                out += ["- " + " ".join(str(item).split()) for item in b.items]
            else:
                out.append(b.text)
            out.append("")
    return "\n".join(out)


def write_cards(run_dir: Path, report: Mapping[str, Any]) -> list[Path]:
    """<run>/cards/<model>/model-card.md for every gated model."""
    return [
        artifacts.write_text(Path(run_dir) / CARDS / c.model / "model-card.md", to_markdown(c))
        for c in cards(report, run_dir)
    ]


def html_cards(report: Mapping[str, Any], run_dir: Path | None) -> list[dict[str, Any]]:
    """The cards for report.html (templates/_model_cards.html): model, sections, and the card file's path."""
    return [
        {"model": c.model, "sections": c.sections, "file": f"{CARDS}/{c.model}/model-card.md"}
        for c in cards(report, run_dir)
    ]
