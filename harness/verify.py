"""A run's manifest: the sha256 of every file its report stands on, recorded in report.json, and checked again later;
and the ledger of what harness's own steps wrote.

`manifest(run_dir)` is what `write_reports` records; `verify(run_dir)` compares the files on disk with the manifest of
the report.json on disk (one line per file that changed, went missing, or appeared), for `harness verify` and the
pytest gate, before anything rewrites report.json.

The ledger (`written.json` in the run directory): every command that runs steps (`harness run`, `check`, `train`,
`export`, `evaluate`, `cam`) records, in `recording(run_dir)`, the sha256 of each manifest file it wrote or removed.
A file is vouched for when its sha256 is the manifest's or the ledger's: `unvouched` (what `harness report` refuses
before it rewrites report.json) and `stale_reason` (what makes `rundir.step_state` redo a step) say which are not, so
an evidence file edited by hand is never judged, and a file a harness step rewrote is never refused.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness import artifacts
from harness.baselines.files import BASELINES_FILE
from harness.robustness.files import EVIDENCE_FILES
from harness.saliency.registry import METHODS
from harness.seal import protocol_problems, sealed_sha

# per model folder (a folder with a config.json): the files a verdict or the report reads
FOLDER_FILES = (
    ("config.json", "model.onnx", "export.json", "metrics.json", "cam.json")
    + tuple(f"{m.evidence}.json" for m in METHODS.values() if m.black_box)
    + EVIDENCE_FILES  # robustness.json, faithfulness.json (harness.robustness)
)


def _files(run_dir: Path) -> list[str]:
    """The manifest-able files of a run that exist now, as paths relative to the run directory (/-separated)."""
    # AUDIT: the data audit (harness.audit); BASELINES_FILE: the baseline ladder (harness.baselines)
    names = [n for n in ("run.json", AUDIT, BASELINES_FILE) if (run_dir / n).is_file()]
    for cfg in sorted(run_dir.glob("*/config.json")):
        names += [f"{cfg.parent.name}/{n}" for n in FOLDER_FILES if (cfg.parent / n).is_file()]
    return names


def _allowed(rel: str) -> bool:
    """Whether a manifest entry names a file the manifest records (run.json or <folder>/<evidence file>)."""
    parts = rel.split("/")
    if parts in (["run.json"], [AUDIT], [BASELINES_FILE]):
        return True
    return len(parts) == 2 and parts[0] not in ("", ".", "..") and parts[1] in FOLDER_FILES


PROTOCOL = "run.json#protocol"  # the manifest's entry for run.json's protocol seal (harness.seal), not a file
LEDGER = "written.json"
AUDIT = "audit.json"  # the data audit's evidence, beside run.json (harness.audit.step)


def _protocol_sha(run_dir: Path) -> str | None:
    try:
        return sealed_sha(artifacts.read_json(Path(run_dir) / "run.json"))
    except (FileNotFoundError, ValueError, OSError):
        return None


def manifest(run_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of run.json and every model folder's model.onnx and evidence files that exist, and
    `run.json#protocol`: the sha256 of run.json's protocol seal (when it has one)."""
    run_dir = Path(run_dir)
    out = {rel: artifacts.sha256_file(run_dir / rel) for rel in _files(run_dir)}
    sealed = _protocol_sha(run_dir)
    return out | ({PROTOCOL: sealed} if sealed else {})


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
        if rel == PROTOCOL:
            now = _protocol_sha(run_dir)
            if now != sha:
                problems.append(
                    f"run.json: its protocol (gated models, thresholds, identity; seal {str(now)[:12]}...) is not the "
                    f"one the report was written under ({str(sha)[:12]}...)"
                )
        elif not _allowed(rel):
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


# --- the ledger: what harness's own steps wrote -------------------------------------------------------------------


def read_ledger(run_dir: Path) -> dict[str, str | None]:
    """written.json's {relative path: sha256 harness wrote, or None: removed by harness}; {} when absent or unreadable
    (then only the manifest vouches for a file)."""
    try:
        raw = json.loads((Path(run_dir) / LEDGER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): (str(v) if v is not None else None) for k, v in files.items() if _allowed(str(k))}


def _stats(run_dir: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for rel in _files(run_dir):
        try:
            st = os.stat(Path(run_dir) / rel)
        except OSError:
            continue
        out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def record_written(run_dir: Path, before: Mapping[str, tuple[int, int, int]]) -> list[str]:
    """Add to the ledger every manifest file that appeared or changed (size, mtime, inode) since `before`
    (`_stats` when the command began), and every one that went away; returns their relative paths."""
    run_dir = Path(run_dir)
    after = _stats(run_dir)
    changed = [rel for rel, st in after.items() if before.get(rel) != st]
    gone = [rel for rel in before if rel not in after]
    if not changed and not gone:
        return []
    ledger = read_ledger(run_dir)
    for rel in changed:
        ledger[rel] = artifacts.sha256_file(run_dir / rel)
    for rel in gone:
        ledger[rel] = None
    artifacts.write_json(run_dir / LEDGER, {"schema": 1, "files": dict(sorted(ledger.items()))})
    return changed + gone


class Recorder:
    """The manifest files of a run as a command found them; `commit()` puts what changed since into the ledger."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.before = _stats(self.run_dir)

    def commit(self) -> list[str]:
        """Record what was written or removed since the start (or the last commit); returns those paths."""
        done = record_written(self.run_dir, self.before) if self.run_dir.is_dir() else []
        self.before = _stats(self.run_dir)
        return done


@contextlib.contextmanager
def recording(run_dir: Path) -> Iterator[Recorder]:
    """Around a command's steps (inside its run lock): the manifest files they write or remove go into the ledger,
    also when the command fails or is interrupted (what it wrote is complete: artefacts are written atomically).
    The Recorder it gives can commit earlier, e.g. before the command judges the run."""
    recorder = Recorder(run_dir)
    try:
        yield recorder
    finally:
        recorder.commit()


def _fix(rel: str, run_dir: Path) -> str:
    """What restores trust in one file: the step that writes it."""
    name = rel.rsplit("/", 1)[-1]
    step = {
        "metrics.json": f"harness evaluate {run_dir}",
        "export.json": f"harness export {run_dir} --force",
        "model.onnx": f"harness export {run_dir} --force",
        "cam.json": f"harness cam {run_dir} --force",
        AUDIT: f"harness audit --out {run_dir}",
    }.get(name, "the harness run (or harness check) that made it")
    return f"restore it, or rerun {step}"


def unvouched(run_dir: Path) -> list[str]:
    """One line per manifest file that neither report.json's manifest nor the ledger vouches for: changed since the
    report was written and not by a harness step, missing and not removed by one, or added by something else. Without
    a manifest (no report yet), files are checked against the ledger alone. [] when every file is vouched for."""
    run_dir = Path(run_dir)
    recorded, _ = recorded_manifest(run_dir)
    files = {str(k): v for k, v in (recorded or {}).items() if k != PROTOCOL}
    ledger = read_ledger(run_dir)
    problems = [f"{rel}: not a file a manifest records" for rel in sorted(files) if not _allowed(rel)]
    for rel in sorted(set(files) | set(ledger)):
        if not _allowed(rel):
            continue
        path = run_dir / rel
        if not path.is_file():
            if rel in files and ledger.get(rel, "") is not None:
                problems.append(
                    f"{rel}: missing (the report was written with it), not removed by a harness step; "
                    + _fix(rel, run_dir)
                )
            continue
        now = artifacts.sha256_file(path)
        if now in (files.get(rel), ledger.get(rel)):
            continue
        if rel in files:
            problems.append(
                f"{rel}: changed since the report was written (sha256 {now[:12]}..., the manifest has "
                f"{str(files[rel])[:12]}...), not by a harness step; {_fix(rel, run_dir)}"
            )
        else:
            problems.append(
                f"{rel}: changed since harness wrote it (sha256 {now[:12]}..., harness wrote "
                f"{str(ledger[rel])[:12]}...); {_fix(rel, run_dir)}"
            )
    if recorded is not None:
        problems += [
            f"{rel}: added after the report was written, not by a harness step; {_fix(rel, run_dir)}"
            for rel in _files(run_dir)
            if rel not in files and rel not in ledger
        ]
    return problems


def stale_reason(path: Path) -> str:
    """Why a step's file (a manifest file: run.json or <folder>/<evidence>) cannot be taken as current: its sha256
    is neither the one report.json's manifest records nor the one harness wrote (the ledger); "" when it is one of
    them, when neither records it, or when it is not a manifest file."""
    path = Path(path)
    if path.name in ("run.json", AUDIT):
        run_dir, rel = path.parent, path.name
    else:
        run_dir, rel = path.parent.parent, f"{path.parent.name}/{path.name}"
    if not _allowed(rel) or not path.is_file():
        return ""
    has_report, has_ledger = (run_dir / "report.json").is_file(), (run_dir / LEDGER).is_file()
    if not has_report and not has_ledger:
        return ""
    recorded = (recorded_manifest(run_dir)[0] or {}) if has_report else {}
    ledger = read_ledger(run_dir) if has_ledger else {}
    wanted = {v for v in (recorded.get(rel), ledger.get(rel)) if v}
    if not wanted:
        return ""
    now = artifacts.sha256_file(path)
    if now in wanted:
        return ""
    return (
        f"{rel} was edited since harness wrote it (sha256 {now[:12]}... is neither report.json's manifest's nor the "
        f"one its step wrote)"
    )


def protocol_check(run_dir: Path) -> list[str]:
    """run.json's protocol problems (harness.seal.protocol_problems, with run.json's own thresholds): a protocol edited
    after the run was made, a run made gated that now gates nothing, a run with no model folder."""
    path = Path(run_dir) / "run.json"
    try:
        proto = artifacts.read_json(path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        return [f"run.json: {exc}"]
    if not isinstance(proto, dict):
        return [f"{path}: not a JSON object"]
    return protocol_problems(proto, Path(run_dir))


class EditedEvidence(ValueError):
    """Evidence files of a run that neither its report's manifest nor a harness step vouches for (`unvouched`)."""


def refuse_unvouched(run_dir: Path) -> None:
    """EditedEvidence (one line naming each file) when `unvouched` finds any: nothing judges them."""
    problems = unvouched(run_dir)
    if problems:
        raise EditedEvidence(
            f"{run_dir}: refused to judge {len(problems)} evidence file(s) edited since harness wrote them: "
            + "; ".join(problems)
        )
