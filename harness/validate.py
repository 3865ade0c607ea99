"""Typed readers: the one validation mechanism for profiles, thresholds, specs and saliency settings.

Each reads one raw value (from TOML, JSON or a --set override), checks its type and range, and returns it typed, or
raises ConfigError "<where>: <key> = <value!r> must be <expected>". `key` is dotted (phases.imagenet[1].lr).
`read_toml` reads a file, `from_table` a whole table into a frozen dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
# A reader of one field: (value, dotted key, where) -> the value typed; ConfigError naming where, key and value.
Reader = Callable[[Any, str, str], Any]


class ConfigError(ValueError):
    """A profile, override, thresholds file or spec is invalid; the message names the file and the field."""


def fail(where: str, key: str, value: Any, expected: str, note: str = "") -> NoReturn:
    raise ConfigError(f"{where}: {key} = {value!r} must be {expected}" + (f" ({note})" if note else ""))


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _in_range(x: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (x <= lo if lo_open else x < lo):
        return False
    return not (hi is not None and (x >= hi if hi_open else x > hi))


def read_int(value: Any, key: str, where: str, min: int | None = None, max: int | None = None, note: str = "") -> int:
    """An integer (not a bool, not a float, not a string) in [min, max]."""
    if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, min, max, False, False):
        fail(where, key, value, "an integer" + _range_text(min, max, False, False), note)
    return value


def read_num(
    value: Any,
    key: str,
    where: str,
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    note: str = "",
) -> float:
    """A finite number (int or float, not a bool or string) in the range; returned as float."""
    expected = "a number" + _range_text(min, max, min_open, max_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, key, value, expected, note)
    try:
        x = float(value)
    except OverflowError:
        fail(where, key, value, expected, note)
    if not math.isfinite(x) or not _in_range(x, min, max, min_open, max_open):
        fail(where, key, value, expected, note)
    return x


def read_opt_num(
    value: Any,
    key: str,
    where: str,
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
) -> float | None:
    """Like read_num, but None (absent / JSON null) stays None."""
    return None if value is None else read_num(value, key, where, min, max, min_open=min_open, max_open=max_open)


def read_bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        fail(where, key, value, "true or false")
    return value


def read_str(value: Any, key: str, where: str, nonempty: bool = True) -> str:
    if not isinstance(value, str) or (nonempty and not value.strip()):
        fail(where, key, value, "a non-empty string" if nonempty else "a string")
    return value


def read_choice(value: Any, key: str, where: str, choices: Sequence[str], note: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        fail(where, key, value, f"one of {list(choices)}", note)
    return value


def no_duplicates(items: Sequence[Any], value: Any, key: str, where: str) -> None:
    dups = sorted({repr(x) for x in items if items.count(x) > 1})
    if dups:
        raise ConfigError(f"{where}: {key} = {value!r} must not repeat entries (repeated: {', '.join(dups)})")


def read_str_list(
    value: Any, key: str, where: str, choices: Sequence[str] | None = None, nonempty: bool = True, note: str = ""
) -> tuple[str, ...]:
    """A list of distinct strings; a single string is a one-element list (never split into characters)."""
    if isinstance(value, str):
        items, keys = [value], [key]
    elif isinstance(value, (list, tuple)):
        items, keys = list(value), [f"{key}[{n}]" for n in range(len(value))]
    else:
        fail(where, key, value, "a string or a list of strings", note)
    if nonempty and not items:
        fail(where, key, value, "a non-empty list of strings", note)
    for item, k in zip(items, keys):
        if choices is None:
            read_str(item, k, where)
        else:
            read_choice(item, k, where, choices, note)
    no_duplicates(items, value, key, where)
    return tuple(items)


def read_int_list(
    value: Any, key: str, where: str, min: int | None = None, max: int | None = None, nonempty: bool = True
) -> tuple[int, ...]:
    """A list of distinct integers in [min, max]; a single integer is a one-element list."""
    if isinstance(value, int) and not isinstance(value, bool):
        items, keys = [value], [key]
    elif isinstance(value, (list, tuple)):
        items, keys = list(value), [f"{key}[{n}]" for n in range(len(value))]
    else:
        fail(where, key, value, "an integer or a list of integers" + _range_text(min, max, False, False))
    if nonempty and not items:
        fail(where, key, value, "a non-empty list of integers")
    out = tuple(read_int(item, k, where, min=min, max=max) for item, k in zip(items, keys))
    no_duplicates(list(out), value, key, where)
    return out


def read_pair(
    value: Any, key: str, where: str, min: float | None = None, max: float | None = None, *, min_open: bool = False
) -> tuple[float, float]:
    """[low, high] with min <= low <= high <= max (min exclusive when min_open)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        fail(where, key, value, "a pair [low, high]" + _range_text(min, max, min_open, False))
    lo = read_num(value[0], f"{key}[0]", where, min, max, min_open=min_open)
    hi = read_num(value[1], f"{key}[1]", where, min, max, min_open=min_open)
    if lo > hi:
        fail(where, key, value, "a pair [low, high] with low <= high")
    return lo, hi


def read_table(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        fail(where, key, value, "a table")
    return dict(value)


def check_keys(
    table: Mapping[str, Any], known: Sequence[str], key: str, where: str, required: Sequence[str] = ()
) -> None:
    """Unknown keys and missing required keys of a table are errors naming the table (`key`; '' for top level)."""
    at = f"{key}: " if key else ""
    bad = sorted(str(k) for k in set(table) - set(known))
    if bad:
        raise ConfigError(f"{where}: {at}unknown keys {bad} (known: {sorted(known)})")
    for r in required:
        if r not in table:
            raise ConfigError(f"{where}: {at}missing required key {r!r}")


def from_table(
    cls: type[T],
    table: Any,
    where: str,
    key: str,
    fields: Mapping[str, Reader],
    *,
    known: Sequence[str] | None = None,
    required: Sequence[str] = (),
    **values: Any,
) -> T:
    """An instance of the frozen dataclass `cls` from the table `table` at `key` ('' for top level).

    ConfigError for a value that is not a table, unknown keys (`known`, by default the fields of `cls`) and missing
    `required` ones. Each key of `fields` that the table has is read, in the order of `fields`, by its reader
    (value, '<key>.<name>', where); an absent one keeps the dataclass default. `values` (fields the caller worked
    out itself) are passed as they are."""
    d = read_table(table, key, where)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # cls is a dataclass
    check_keys(d, names if known is None else known, key, where, required=required)
    prefix = f"{key}." if key else ""
    read = {name: reader(d[name], prefix + name, where) for name, reader in fields.items() if name in d}
    return cls(**read, **values)


def parse_toml(text: str, where: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """TOML text as a dict; `error` "<where>: invalid TOML: ..." otherwise."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: invalid TOML: {exc}") from exc


def read_toml(
    path: Path,
    what: str,
    *,
    where: str = "",
    unreadable: str = "",
    hint: str = "",
    error: type[ConfigError] = ConfigError,
) -> dict[str, Any]:
    """The TOML file `path` as a dict, or `error` (a ConfigError) naming the file: "<what> file <path> does not
    exist<hint>" (or "is a folder, not a file") when it is not a file, "<where>: cannot read <unreadable>: ..."
    (default: "the <what> file") when it is not UTF-8 text, "<where>: invalid TOML: ..." when it is not TOML.
    `where` defaults to the path."""
    path = Path(path)
    where = where or str(path)
    if path.is_dir():
        raise error(f"{what} file {path} is a folder, not a file{hint}")
    if not path.is_file():
        raise error(f"{what} file {path} does not exist{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{where}: cannot read {unreadable or f'the {what} file'}: {exc}") from exc
    return parse_toml(text, where, error)
