"""The models of a report and their identity, read from report.json's fields (its `models` table, the variant folders'
entries, the verdicts); no model name is ever taken apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.report.format import dig
from harness.report.wording import INIT_ORDER, LEVEL_ORDER


@dataclass(frozen=True)
class Identity:
    """A model as a report groups it (over its seeds): `key` as report.json names it, and its fields."""

    key: str
    backbone: str = ""
    init: str = ""  # "" for a model judged by harness check (it has a name, not an init and a level)
    level: str = ""
    variant: str = ""  # '<init>-<level>', or a checked model's name

    @property
    def parts(self) -> tuple[str, str]:
        return self.init, self.level


def model_of(d: Mapping[str, Any]) -> str | None:
    """The model key of a variant entry or a verdict: its 'model' field (older reports: the variant alone)."""
    return d.get("model") or d.get("variant")


def identities(report: Mapping[str, Any]) -> dict[str, Identity]:
    """model key -> Identity of every model the report knows: its `models` table, the variant folders' entries, the
    verdicts' models and the accuracy matrix's (the first source that has a model gives its fields)."""
    out: dict[str, Identity] = {}
    for key, m in (report.get("models") or {}).items():
        if isinstance(m, Mapping):
            out[str(key)] = Identity(
                str(key),
                str(m.get("backbone") or ""),
                str(m.get("init") or ""),
                str(m.get("level") or ""),
                str(m.get("variant") or ""),
            )
    for entry in (report.get("variants") or {}).values():
        key = model_of(entry) if isinstance(entry, Mapping) else None
        if key and key not in out:
            out[key] = Identity(
                key,
                str(entry.get("backbone") or ""),
                str(entry.get("init") or ""),
                str(entry.get("level") or ""),
                str(entry.get("variant") or ""),
            )
    for v in report.get("verdicts") or []:
        key = model_of(v) if isinstance(v, Mapping) else None
        if key and key not in out:
            out[key] = Identity(key, str(v.get("backbone") or ""), variant=str(v.get("variant") or ""))
    for key in report.get("matrix") or {}:
        out.setdefault(key, Identity(key))
    return out


def gated_models(report: Mapping[str, Any], verdicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The gated models' keys: those the `models` table marks gated, then those with a gated verdict."""
    gated = [str(k) for k, m in (report.get("models") or {}).items() if isinstance(m, Mapping) and m.get("gated")]
    return gated + sorted({m for v in verdicts if v.get("gated") and (m := model_of(v))} - set(gated))


def protocol_models(report: Mapping[str, Any], ids: Mapping[str, Identity]) -> set[str]:
    """The models of the variants the run's protocol asked for (matched by their variant field)."""
    asked = set(dig(report, "protocol", "variants", default=[]) or [])
    return {k for k, i in ids.items() if i.variant in asked or (not i.variant and k in asked)}


def order_index(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def model_order(gated: Sequence[str], ids: Mapping[str, Identity]):
    """Sort key of model keys: gated first, then by init and level in the reference table's order, then by key."""

    def key(name: str) -> tuple:
        init, level = ids[name].parts if name in ids else ("", "")
        return (name not in gated, order_index(init, INIT_ORDER), order_index(level, LEVEL_ORDER), name)

    return key


def seed_runs(report: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """model key -> its seed folders' entries, lowest seed first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for folder, entry in (report.get("variants") or {}).items():
        if isinstance(entry, Mapping):
            out.setdefault(model_of(entry) or folder, []).append(
                dict(entry) | {"folder": entry.get("folder") or folder}
            )
    for runs in out.values():
        runs.sort(key=lambda e: (e.get("seed") if isinstance(e.get("seed"), int) else 1 << 30, e["folder"]))
    return out
