"""Durations as people read them in progress lines (m:ss, h:mm:ss)."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """A duration as m:ss, or h:mm:ss from an hour on (rounded to the second; negative or NaN reads 0:00)."""
    total = int(round(seconds)) if seconds == seconds and seconds > 0 else 0
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
