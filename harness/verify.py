"""A run's manifest: the sha256 of every file its report stands on, recorded in report.json, and checked again later.

`manifest(run_dir)` is what `write_reports` records; `verify(run_dir)` compares the files on disk with the manifest of
the report.json on disk (one line per file that changed, went missing, or appeared), for `harness verify` and the
pytest gate, before anything rewrites report.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import artifacts
from harness.saliency.registry import METHODS

# per model folder (a folder with a config.json): the files a verdict or the report reads
FOLDER_FILES = ("config.json", "model.onnx", "export.json", "metrics.json", "cam.json") + tuple(
    f"{m.evidence}.json" for m in METHODS.values() if m.black_box
)


def _files(run_dir: Path) -> list[str]:
    """The manifest-able files of a run that exist now, as paths relative to the run directory (/-separated)."""
    names = ["run.json"] if (run_dir / "run.json").is_file() else []
    for cfg in sorted(run_dir.glob("*/config.json")):
        names += [f"{cfg.parent.name}/{n}" for n in FOLDER_FILES if (cfg.parent / n).is_file()]
    return names


def _allowed(rel: str) -> bool:
    """Whether a manifest entry names a file the manifest records (run.json or <folder>/<evidence file>)."""
    parts = rel.split("/")
    if parts == ["run.json"]:
        return True
    return len(parts) == 2 and parts[0] not in ("", ".", "..") and parts[1] in FOLDER_FILES


def manifest(run_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of run.json and every model folder's model.onnx and evidence files that exist."""
    run_dir = Path(run_dir)
    return {rel: artifacts.sha256_file(run_dir / rel) for rel in _files(run_dir)}


def recorded_manifest(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(the manifest of the report.json on disk, "") or (None, why there is none)."""
    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: missing; no manifest to verify against (run harness report first)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path}: unreadable ({exc}); no manifest to verify against"
    recorded = report.get("manifest") if isinstance(report, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        return None, f"{path}: has no manifest (written by an older harness?); rerun harness report to record one"
    return recorded, ""


def check(run_dir: Path, recorded: dict[str, Any]) -> list[str]:
    """One line per file that differs from `recorded`: changed, missing, not a manifest file, or not in it."""
    run_dir = Path(run_dir)
    problems = []
    for rel, sha in sorted(recorded.items()):
        if not _allowed(rel):
            problems.append(f"{rel}: not a file a manifest records (run.json or a model folder's evidence)")
        elif not (run_dir / rel).is_file():
            problems.append(f"{rel}: missing (the report was written with it, sha256 {str(sha)[:12]}...)")
        else:
            now = artifacts.sha256_file(run_dir / rel)
            if now != sha:
                problems.append(
                    f"{rel}: changed since the report was written (sha256 {now[:12]}..., "
                    f"the manifest has {str(sha)[:12]}...)"
                )
    problems += [
        f"{rel}: not in the manifest (added after the report was written)"
        for rel in _files(run_dir)
        if rel not in recorded
    ]
    return problems


def verify(run_dir: Path) -> list[str]:
    """One line per problem; empty when every file the report.json's manifest records is on disk, unchanged."""
    recorded, why = recorded_manifest(run_dir)
    if recorded is None:
        return [why]
    return check(run_dir, recorded)
