"""Number and value formatting for the HTML reports: every figure a page shows is turned into a string here."""

from __future__ import annotations

import base64
import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any

from harness.verdicts.criteria import COUNT, CRITERIA, LOGIT, MARGIN, MS

NA = "not available"


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_num(v: Any, signed: bool = False) -> str:
    """Compact human number: 2-3 decimals for rates, scientific for tiny values, 'n/a' for None."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not is_num(v):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return ("+" if signed and v > 0 else "-" if v < 0 else "") + "inf"
    sign = "+" if signed and v > 0 else ""
    a = abs(v)
    if a == 0:
        s = "0.00"
    elif a < 1e-3:
        s = f"{v:.1e}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3f}".rstrip("0")
        decimals = len(s.split(".")[1]) if "." in s else 0
        s += "0" * max(0, 2 - decimals)
    return sign + s


def fmt_acc(v: Any) -> str:
    return "n/a" if v is None else fmt_num(v)


def fmt_ms(v: Any) -> str:
    return "n/a" if not is_num(v) else (f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s")


def fmt_value(criterion: str, v: Any) -> str:
    """A verdict's value or threshold, shown in its criterion's unit (a rate for a criterion the table lacks)."""
    if v is None:
        return "n/a"
    c = CRITERIA.get(criterion)
    unit = c.unit if c else None
    if unit == LOGIT:
        return "inf" if is_num(v) and math.isinf(v) else (f"{v:.1e}" if is_num(v) else str(v))
    if unit == MS:
        return fmt_ms(v)
    if unit == COUNT:
        return f"{v:.0f}" if is_num(v) else str(v)
    return fmt_num(v, signed=unit == MARGIN)


def fmt_any(v: Any) -> str:
    """Protocol values: lists joined, dicts as k=v, None as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if is_num(v):
        return fmt_num(v) if isinstance(v, float) and (abs(v) < 1e-3 or v != round(v, 3)) else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_any(x) for x in v) if v else "-"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}={fmt_any(x)}" for k, x in v.items()) if v else "-"
    return str(v)


def split_label(split: str) -> str:
    return split[5:] if split.startswith("test_") else split


def fmt_date(iso: Any) -> str:
    try:
        d = _dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso) if iso else NA
    if d.tzinfo is not None:
        d = d.astimezone(_dt.UTC)
        return d.strftime("%Y-%m-%d %H:%M UTC")
    return d.strftime("%Y-%m-%d %H:%M")


def dig(obj: Any, *keys: Any, default: Any = None) -> Any:
    """Nested .get that tolerates None and non-dicts anywhere on the way."""
    for k in keys:
        if not isinstance(obj, Mapping) or k not in obj:
            return default
        obj = obj[k]
    return default if obj is None else obj


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
