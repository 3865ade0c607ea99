"""Reading a backbone's ImageNet checkpoint: WeightsUnavailable, and torch.load of a state dict whose failures name the
file, what it should be and what to do."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


class WeightsUnavailable(FileNotFoundError):
    """Pretrained weights cannot be had offline; the message names the file and where to put it."""


def read_checkpoint(
    path: Path, what: str, remedy: str, loader: Callable[[], Any] | None = None
) -> dict[str, torch.Tensor]:
    """torch.load a state dict (or run `loader`), turning garbage, truncated files and non-state-dict pickles into
    WeightsUnavailable naming the file, what it should be (`what`) and what to do (`remedy`)."""
    try:
        state = loader() if loader is not None else torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load of a foreign file fails in many ways (pickle, zip, EOF, ...)
        # torch's own message is left in __cause__: it is long and advises weights_only=False, unsafe for a foreign file
        raise WeightsUnavailable(
            f"{path}: torch.load cannot read it ({type(exc).__name__}), so it is not {what}: "
            f"it is truncated, damaged or another kind of file. {remedy}"
        ) from exc
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise WeightsUnavailable(
            f"{path}: holds a {type(state).__name__}, not {what} (a mapping of parameter names to tensors). {remedy}"
        )
    return dict(state)
