"""run.json's protocol seal: the gated set, the thresholds and the run's identity, hashed when the run is made.

`harness run` and `harness check` record `seal` in run.json: one sha256 per part (`gated`, `thresholds`, `variants`,
`identity`), `created_gated` (the gated set when the run directory was first made; every rerun into it keeps it) and
`sha256` over all of them (report.json's manifest stores it as `run.json#protocol`). `seal_problems` says which part
of run.json no longer matches its hash; `protocol_problems` adds the two ways a run is emptied of its judgement: a
run made gating something that now gates nothing, and a run with no model folder at all. A run.json without a seal
(made by an older harness, or by hand) is not checked; a run made without any gated model stays ungated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import artifacts

SEAL = "seal"
# run.json's fields the identity part covers (harness run's and harness check's); the rest of run.json (machine,
# versions, argv, notes) says where the run ran, not what it judges
IDENTITY = ("kind", "profile", "seeds", "data_root", "weights_file", "data", "model", "spec")
PARTS = ("gated", "thresholds", "variants", "identity")
FIX = "restore run.json, or rerun the harness run (or harness check) that made it"
WHAT = {
    "gated": "thresholds.gated (the gated models)",
    "thresholds": "thresholds",
    "variants": "variants",
    "identity": "the run's identity (profile, seeds, dataset, model)",
}


def _digest(obj: Any) -> str:
    """sha256 of `obj` as canonical JSON (as written and read back: tuples are lists, paths strings)."""
    plain = json.loads(json.dumps(obj, default=artifacts._json_default))
    return hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _thresholds(proto: Mapping[str, Any]) -> dict[str, Any]:
    table = proto.get("thresholds")
    return dict(table) if isinstance(table, Mapping) else {}


def gated_of(proto: Mapping[str, Any]) -> list[str]:
    """run.json's thresholds.gated as a list ([] when absent or not a list)."""
    gated = _thresholds(proto).get("gated")
    return [str(g) for g in gated] if isinstance(gated, (list, tuple)) else []


def parts_of(proto: Mapping[str, Any]) -> dict[str, str]:
    """The sha256 of each sealed part of a protocol (run.json)."""
    rest = {k: v for k, v in _thresholds(proto).items() if k not in ("gated", "source")}
    return {
        "gated": _digest(_thresholds(proto).get("gated")),
        "thresholds": _digest(rest),
        "variants": _digest(proto.get("variants")),
        "identity": _digest({k: proto.get(k) for k in IDENTITY}),
    }


def _overall(parts: Mapping[str, Any], created_gated: Any) -> str:
    return _digest({"parts": dict(parts), "created_gated": created_gated})


def make_seal(proto: Mapping[str, Any], previous: Path | None = None) -> dict[str, Any]:
    """The seal of a protocol about to be written as run.json. `previous`: the run.json already in the run directory
    (if any); its `created_gated` is kept, so a rerun into the directory cannot turn a gated run into an ungated one."""
    created = gated_of(proto)
    try:
        old = artifacts.read_json(previous) if previous is not None else None
    except (FileNotFoundError, ValueError, OSError):
        old = None
    kept = created_gated(old)
    if kept is not None:
        created = kept
    parts = parts_of(proto)
    return {"sha256": _overall(parts, created), "parts": parts, "created_gated": created}


def sealed_sha(proto: Any) -> str | None:
    """The seal's sha256 recorded in a protocol (None without a seal)."""
    seal = proto.get(SEAL) if isinstance(proto, dict) else None
    sha = seal.get("sha256") if isinstance(seal, dict) else None
    return str(sha) if sha else None


def created_gated(proto: Any) -> list[str] | None:
    """The gated set recorded when the run was made (None without a readable seal)."""
    seal = proto.get(SEAL) if isinstance(proto, dict) else None
    created = seal.get("created_gated") if isinstance(seal, dict) else None
    return [str(g) for g in created] if isinstance(created, list) else None


def seal_problems(proto: Mapping[str, Any], where: str = "run.json") -> list[str]:
    """Why the protocol no longer matches its seal: one line naming run.json and the parts edited; [] when it matches
    or has no seal."""
    if SEAL not in proto:
        return []
    seal = proto[SEAL]
    recorded = seal.get("parts") if isinstance(seal, dict) else None
    if not isinstance(recorded, dict) or not isinstance(seal.get("created_gated"), list):
        return [f"{where}: its protocol seal is malformed (edited?); the verdicts cannot stand on it: {FIX}"]
    now = parts_of(proto)
    changed = [WHAT[p] for p in PARTS if recorded.get(p) != now[p]]
    if changed:
        return [
            f"{where}: {', '.join(changed)} no longer match{'es' if len(changed) == 1 else ''} the hash recorded "
            f"when the run was made (edited after the run?); the verdicts cannot stand on it: {FIX}"
        ]
    if seal.get("sha256") != _overall(recorded, seal["created_gated"]):
        return [f"{where}: seal.created_gated no longer matches the seal's hash (edited?): {FIX}"]
    return []


def protocol_problems(
    proto: Mapping[str, Any], run_dir: Path, gated_now: Any = None, where: str = "run.json"
) -> list[str]:
    """seal_problems, plus: a run made gating something whose thresholds in force (`gated_now`, default run.json's)
    gate nothing, and a run directory with no model folder (<folder>/config.json): nothing was judged."""
    problems = seal_problems(proto, where)
    created = created_gated(proto)
    now = gated_of(proto) if gated_now is None else list(gated_now)
    if created and not now:
        problems.append(
            f"{where}: the run was made gating {', '.join(created)}; the thresholds in force gate nothing "
            f"(thresholds.gated = []): a run that gated a model cannot be judged ungated. Gate it again, or make a new "
            f"run without a gated model"
        )
    if not any(Path(run_dir).glob("*/config.json")):
        problems.append(
            f"{run_dir}: no model folder (<folder>/config.json): the run judges no model at all; rerun harness run "
            f"(or harness check) into it"
        )
    return problems
