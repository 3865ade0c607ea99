"""One writer per run directory: a lock file naming its holder, taken over when that process is gone; temporaries
left by a killed run are removed once the lock is held."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

LOCK_NAME = ".harness.lock"


class RunLocked(RuntimeError):
    """Another live harness process holds the run directory; the message names it and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(lock: Path) -> dict | None:
    try:
        d = json.loads(lock.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def _try_create(lock: Path, content: bytes) -> bool:
    """Create the lock with its full content in one step (write a private file, then hard-link it into place)."""
    tmp = lock.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def acquire(run_dir: Path, command: str = "") -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    content = (json.dumps(me) + "\n").encode()
    for _ in range(3):
        if _try_create(lock, content):
            return lock
        holder = _holder(lock)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
            return lock  # this process already holds it (e.g. the gate calling run_matrix in-process)
        if holder and holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and _alive(holder["pid"]):
            raise RunLocked(
                f"{run_dir} is in use by harness pid {holder['pid']} (started {holder.get('started')}: "
                f"{holder.get('command')}); wait for it to finish, or use another --out. If that process is not a "
                f"harness run, delete {lock}"
            )
        if holder and holder.get("host") != me["host"]:
            raise RunLocked(
                f"{run_dir} is locked by pid {holder.get('pid')} on host {holder.get('host')} (started "
                f"{holder.get('started')}); this machine cannot tell whether it is still running. Wait for it, or "
                f"delete {lock} if it is not"
            )
        # dead holder (or an unreadable lock left by a kill): take it over
        print(
            f"taking over the stale lock {lock} (holder pid {holder.get('pid') if holder else '?'} is gone)",
            file=sys.stderr,
        )
        lock.unlink(missing_ok=True)
    raise RunLocked(f"{run_dir}: could not take the lock {lock}; another process keeps taking it")


def release(lock: Path) -> None:
    holder = _holder(lock)
    if holder and holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(run_dir: Path, command: str = "") -> Iterator[Path]:
    """Hold the run directory's lock for the block; nested use in the same process is a no-op."""
    lock = Path(run_dir) / LOCK_NAME
    already = (_holder(lock) or {}).get("pid") == os.getpid()
    lock = acquire(run_dir, command)
    if not already:
        remove_temporaries(Path(run_dir))
    try:
        yield lock
    finally:
        if not already:
            release(lock)


def remove_temporaries(run_dir: Path, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete what a killed step leaves behind: `.<name>.*.tmp` files (atomic writes, ONNX exports) and cam staging
    folders. Only ever called with the lock held, so no live writer owns them, except below the `keep` folders (the
    variant folders of remote jobs not confirmed stopped), which are left as they are."""
    removed = []
    keep = [Path(k).resolve() for k in keep]
    for p in sorted(Path(run_dir).rglob(".*")):
        if p.name.startswith(LOCK_NAME) or any(p.resolve().is_relative_to(k) for k in keep):
            continue
        if p.is_file() and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
        elif p.is_dir() and (p.name.startswith(".cam-staging-") or p.name.startswith(".cam-old-")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        total = len(removed)
        print(
            f"removed {total} leftover temporar{'y' if total == 1 else 'ies'} of an interrupted run in {run_dir}",
            file=sys.stderr,
        )
    return removed
