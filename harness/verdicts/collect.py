"""Reading a run's evidence: every model folder's JSON files, parsed, checked against its model, grouped by model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import sha256_file
from harness.provenance import describe, diff, profile_train_fields
from harness.saliency.registry import METHODS, method_info
from harness.verdicts.verdict import model_key

# the evidence files <prefix>.json of the black-box saliency methods (Grad-CAM's is cam.json, read on its own)
BLACK_BOX = tuple(m.evidence for m in METHODS.values() if m.black_box)


@dataclass(frozen=True)
class SeedRun:
    """The evidence of one trained (backbone, variant, seed): its parsed JSON files (None where missing or unusable).

    `problems` maps an evidence file name to why it cannot be used (invalid JSON, made from another model, stale).
    """

    folder: Path
    seed: int
    metrics: dict[str, Any] | None
    cam: dict[str, Any] | None
    export: dict[str, Any] | None
    backbone: str = ""
    variant: str = ""
    problems: dict[str, str] = field(default_factory=dict)
    saliency: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # "occlusion" -> occlusion.json
    kind: str = "trained"  # "trained" by harness run, or "check": an ONNX model judged by harness check


def evidence_of(run: SeedRun, prefix: str) -> dict[str, Any] | None:
    """The saliency evidence <prefix>.json of a seed run: Grad-CAM's cam.json, or a black-box method's."""
    return run.saliency.get(prefix) if method_info(prefix).black_box else run.cam


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(parsed object, "") or (None, why): a missing file and one that does not parse are told apart."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"{path.name}: unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: invalid JSON ({exc}); rerun the step that writes it"
    if not isinstance(obj, dict):
        return None, f"{path.name}: invalid evidence (a JSON {type(obj).__name__}, not an object)"
    return obj, ""


# the tables of each evidence file that its readers and the report index into: (file, key path, what it holds)
SHAPES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("metrics.json", ("test_sets",), "dict"),
    ("metrics.json", ("latency",), "dict"),
    ("metrics.json", ("latency", "by_provider"), "dict of dicts of dicts"),
    ("metrics.json", ("runtime",), "dict"),
    ("metrics.json", ("model",), "dict"),
    ("metrics.json", ("inputs",), "dict"),
    ("export.json", ("parity",), "dict"),
    ("export.json", ("parity", "cpu"), "dict"),
    ("export.json", ("parity", "cpu", "test_sets"), "dict of dicts"),
    ("export.json", ("inputs",), "dict"),
    ("cam.json", ("summary",), "dict of dicts"),
    ("cam.json", ("images",), "dict of lists of dicts"),
    ("cam.json", ("sanity",), "dict"),
    ("cam.json", ("inputs",), "dict"),
)
# a black-box saliency method's <method>.json: the same tables as cam.json
SALIENCY_SHAPES = tuple((key, kind) for f, key, kind in SHAPES if f == "cam.json")


def _holds(v: Any, kind: str) -> bool:
    """Whether `v` is a `kind`: 'dict', 'dict of dicts', 'dict of dicts of dicts', 'dict of lists of dicts'."""
    if not isinstance(v, dict):
        return False
    if kind == "dict":
        return True
    inner = kind.removeprefix("dict of ")
    if inner == "lists of dicts":
        return all(isinstance(x, list) and all(isinstance(r, dict) for r in x) for x in v.values())
    return all(_holds(x, "dict" if inner == "dicts" else "dict of dicts") for x in v.values())


def shape_problem(name: str, obj: dict[str, Any]) -> str:
    """Why an evidence file's tables have the wrong shape (one line naming the file and the key), or ""."""
    shapes = [(key, kind) for f, key, kind in SHAPES if f == name]
    if name.removesuffix(".json") in BLACK_BOX:
        shapes = list(SALIENCY_SHAPES)
    for key, kind in shapes:
        node: Any = obj
        for k in key:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None and not _holds(node, kind):
            text = repr(node)
            text = text if len(text) <= 40 else text[:37] + "..."
            return (
                f"{name}: {'.'.join(key)} = {text} is not a {kind.replace('dict', 'table')}; the file was edited or "
                f"is corrupt: rerun the step that writes it"
            )
    return ""


def _consistency(
    folder: Path,
    config: dict,
    history: dict | None,
    export: dict | None,
    metrics: dict | None,
    cam: dict | None,
    run_profile: dict | None,
    others: dict[str, dict | None] | None = None,
) -> dict[str, str]:
    """Why some evidence of this folder does not describe its model (empty when all agree)."""
    problems: dict[str, str] = {}
    inputs = config.get("inputs")
    if run_profile is not None and isinstance(inputs, dict) and isinstance(inputs.get("profile"), dict):
        here = {k: v for k, v in inputs["profile"].items() if k != "backbone"}
        there = {k: v for k, v in profile_train_fields(run_profile, str(inputs.get("init"))).items() if k != "backbone"}
        changes = diff(here, there)
        if changes:
            stale = (
                f"stale: trained with other settings than run.json's protocol ({describe(changes, 3)}); "
                f"retrain it (harness run --force) or remove {folder.name}/"
            )
            return {
                "metrics.json": stale,
                "cam.json": stale,
                "export.json": stale,
                **{f"{p}.json": stale for p in BLACK_BOX},
            }
    model_sha = (history or {}).get("model_sha256")
    export_made = ((export or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and export_made and export_made != model_sha:
        problems["export.json"] = "export.json: made from another model.pt than the current one; rerun harness export"
    onnx_sha = ((metrics or {}).get("model") or {}).get("sha256")
    if export is not None and metrics is not None and onnx_sha != export.get("sha256"):
        problems["metrics.json"] = (
            "metrics.json: computed from another model.onnx than export.json's; rerun harness evaluate"
        )
    cam_made = ((cam or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and cam_made and cam_made != model_sha:
        problems["cam.json"] = "cam.json: computed from another model.pt than the current one; rerun harness cam"
    onnx_now = (export or {}).get("sha256") or ((metrics or {}).get("model") or {}).get("sha256")
    for prefix, ev in (others or {}).items():
        made = ((ev or {}).get("inputs") or {}).get("onnx_sha256")
        if onnx_now and made and made != onnx_now:
            problems[f"{prefix}.json"] = (
                f"{prefix}.json: computed from another model.onnx than the current one; "
                f"rerun the run (its saliency step redoes itself)"
            )
    return problems


def _model_file(folder: Path, config: dict) -> Path:
    """The ONNX model the folder's evidence is about: its model.onnx, or the file harness check judged."""
    checked = config.get("model") if config.get("kind") == "check" else None
    if isinstance(checked, dict) and checked.get("path") and not (folder / "model.onnx").exists():
        return Path(str(checked["path"]))
    return folder / "model.onnx"


def _recorded(ev: dict | None, *paths: tuple[str, ...]) -> list[str]:
    """The model hashes `ev` records at `paths` (e.g. ("inputs", "onnx_sha256")), those present."""
    found = []
    for path in paths:
        node: Any = ev
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node:
            found.append(str(node))
    return found


def _on_disk(folder: Path, config: dict, evidence: dict[str, dict | None]) -> dict[str, str]:
    """Why some evidence is not about the model on disk: the model hash each file records is compared with the file
    (model.onnx; model.pt for Grad-CAM's cam.json), each model hashed once; a missing model is a problem too."""
    onnx = _model_file(folder, config)
    hashes: dict[Path, str | None] = {}
    problems: dict[str, str] = {}
    for name, ev in evidence.items():
        if name == "export.json":
            model, want, made, fix = onnx, _recorded(ev, ("sha256",)), "recorded", "rerun harness export --force"
        elif name == "cam.json":
            model, want, made, fix = (
                folder / "model.pt",
                _recorded(ev, ("inputs", "model_sha256")),
                "",
                "rerun harness cam",
            )
        else:
            model, want = onnx, _recorded(ev, ("inputs", "onnx_sha256"), ("model", "sha256"))
            fix = (
                "rerun harness evaluate"
                if name == "metrics.json"
                else "rerun the run (its saliency step redoes itself)"
            )
            made = ""
        if ev is None or not want:
            continue
        made = made or "was computed from"
        if model not in hashes:
            hashes[model] = sha256_file(model) if model.is_file() else None
        have = hashes[model]
        wrong = [w for w in want if w != have]
        if have is None:
            problems[name] = f"{model.name} is missing: {name} {made} a {model.name} (sha256 {want[0][:12]}...); {fix}"
        elif wrong:
            problems[name] = (
                f"{model.name} (sha256 {have[:12]}...) is not the model {name} {made} ({wrong[0][:12]}...): {fix}"
            )
    return problems


def collect(run_dir: Path, run_profile: dict | None = None) -> dict[str, list[SeedRun]]:
    """Group the run's model folders by (backbone, variant) -> 'backbone-variant' key, in a stable order.

    With `run_profile` (run.json's), folders trained with other training settings are marked stale.
    """
    groups: dict[str, list[SeedRun]] = {}
    for cfg in sorted(Path(run_dir).glob("*/config.json")):
        config, _ = _read(cfg)
        if not config or "variant" not in config:
            continue
        folder = cfg.parent
        backbone, variant = str(config.get("backbone") or ""), str(config["variant"])
        names = ("metrics.json", "cam.json", "export.json", "history.json", *(f"{p}.json" for p in BLACK_BOX))
        files = {name: _read(folder / name) for name in names}
        for name, (obj, why) in list(files.items()):
            wrong = shape_problem(name, obj) if obj is not None and not why else ""
            if wrong:
                files[name] = (None, wrong)
        problems = {k: why for k, (_, why) in files.items() if why and k != "history.json"}
        metrics, cam, export = (files[k][0] for k in ("metrics.json", "cam.json", "export.json"))
        others = {p: files[f"{p}.json"][0] for p in BLACK_BOX}
        evidence = {k: obj for k, (obj, _) in files.items() if k != "history.json" and k not in problems}
        problems.update(_on_disk(folder, config, evidence))
        problems.update(
            {
                k: v
                for k, v in _consistency(
                    folder, config, files["history.json"][0], export, metrics, cam, run_profile, others
                ).items()
                if k not in problems
            }
        )
        groups.setdefault(model_key(backbone, variant), []).append(
            SeedRun(
                folder,
                int(config.get("seed", 0)),
                None if "metrics.json" in problems else metrics,
                None if "cam.json" in problems else cam,
                None if "export.json" in problems else export,
                backbone,
                variant,
                problems,
                {p: None if f"{p}.json" in problems else ev for p, ev in others.items()},
                str(config.get("kind") or "trained"),
            )
        )
    return groups
