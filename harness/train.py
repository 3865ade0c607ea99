"""Training: one readable fit() loop (phases, device, AMP, best-validation checkpoint, history) and its artifacts."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from harness import artifacts, provenance
from harness.augment import LEVELS, Level, batch_transform, image_transform
from harness.backbones import BACKBONES, Classifier, build_classifier, get_backbone, set_trainable
from harness.config import Phase, Profile
from harness.data import MIN_TRAIN_PER_CLASS, DataError, Dataset, oversample, resize_batch, stratified_split
from harness.precision import Precision, autocast, resolve
from harness.probe_head import fit_head_probe
from harness.rundir import ModelId, training_state
from harness.timing import clock
from harness.validate import ConfigError
from harness.variants import split_variant


@dataclass(frozen=True)
class TrainData:
    classes: tuple[str, ...]
    train_x: torch.Tensor  # uint8 N x 3 x S x S (the training split, resized once)
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    epoch_index: tuple[int, ...]  # indices into train_x for one epoch (class-balanced by oversampling)
    train_names: tuple[str, ...]
    val_names: tuple[str, ...]


def prepare_data(ds: Dataset, profile: Profile) -> TrainData:
    labels = ds.labels
    tr, va = stratified_split(labels, profile.val_fraction, profile.split_seed)
    unseen = [c for c in range(len(ds.classes)) if not any(labels[i] == c for i in va)]
    if unseen:  # load_train refuses these; a Dataset made another way must not validate on nothing (loss 0.0)
        counts = ", ".join(
            f"{ds.classes[c]!r} ({labels.count(c)} photo{'' if labels.count(c) == 1 else 's'})" for c in unseen
        )
        raise DataError(
            f"training set {ds.name!r}: no validation photo of class {counts}: the epoch with the best validation "
            f"loss could not be chosen on it; every class needs at least {MIN_TRAIN_PER_CLASS} photos"
        )
    tr_labels = [labels[i] for i in tr]
    epoch = oversample(tr_labels, range(len(tr)), profile.split_seed) if profile.oversample else list(range(len(tr)))
    images = resize_batch([s.image for s in ds.samples], profile.image_size)
    y = torch.tensor(labels)
    return TrainData(
        ds.classes,
        images[tr],
        y[tr],
        images[va],
        y[va],
        tuple(epoch),
        tuple(ds.samples[i].name for i in tr),
        tuple(ds.samples[i].name for i in va),
    )


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "the profile asks for device = 'cuda' but torch sees no usable GPU on this machine; "
            "use --set device=auto (GPU when there is one) or --set device=cpu"
        )
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _optimizer(phase: Phase, params) -> torch.optim.Optimizer:
    kinds = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
    }
    kwargs: dict[str, Any] = {"lr": phase.lr, "weight_decay": phase.weight_decay}
    if phase.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    return kinds[phase.optimizer](params, **kwargs)


def _set_train_mode(model: Classifier, phase: Phase, freeze_bn: bool) -> None:
    model.train()
    if phase.train_from == "head":
        model.features.eval()  # a frozen base keeps its batch-norm statistics too (as Keras does)
    elif freeze_bn:
        for m in model.features.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
    label_smoothing: float = 0.0,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch (probability targets); returns (loss, logits), both left on the device.

    `precision` (harness.precision.resolve) turns bf16 autocast on; None trains in float32."""
    with autocast(device, precision):
        logits = model(xb).float()
    loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch: int,
    precision: Precision | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    model.eval()
    losses, correct = 0.0, 0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device).float().div_(255).contiguous(memory_format=memory_format)
        yb = y[i : i + batch].to(device)
        with autocast(device, precision):
            logits = model(xb).float()
        losses += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return losses / max(len(x), 1), correct / max(len(x), 1)


def fit(
    model: Classifier,
    data: TrainData,
    level: Level,
    profile: Profile,
    phases: tuple[Phase, ...],
    device: torch.device,
    seed: int,
    label: str = "",
    progress: bool | None = None,
    freeze_bn: bool = False,
    precision: Precision | None = None,
) -> list[dict[str, Any]]:
    """Train through the phases; after each phase the weights with the best validation loss are restored.

    freeze_bn keeps the backbone's batch-norm statistics fixed while it fine-tunes (for pretrained backbones).
    precision: bf16 autocast or float32 (None: the profile's `precision` resolved for this device and backbone). The
    model and the batches are in the backbone's memory format (Backbone.channels_last) while it trains; the model is
    contiguous again when fit returns (export, Grad-CAM and parity expect plain float32 contiguous weights).
    """
    if len(data.val_x) == 0:  # a validation loss over nothing would be 0.0: the first epoch always "best"
        raise DataError("the validation part of the training split is empty; see harness.train.prepare_data")
    torch.manual_seed(seed)
    order_rng = np.random.default_rng(seed)
    precision = precision or resolve(profile.precision, profile.backbone, device, profile.image_size)
    fmt = get_backbone(profile.backbone).memory_format
    model.to(device).to(memory_format=fmt)  # channels_last: faster on GPU and on CPU (oneDNN, depthwise convs)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)  # the whole set fits on the device
    per_image = image_transform(level, profile.augment, profile.image_size)
    per_batch = batch_transform(level, profile.augment, len(data.classes))
    show = sys.stderr.isatty() if progress is None else progress
    history: list[dict[str, Any]] = []
    bs = profile.batch_size
    total_epochs, done_epochs, t_fit = sum(p.epochs for p in phases), 0, time.perf_counter()
    probed: dict[str, torch.Tensor] | None = None  # the probed model's weights (WiSE-FT interpolates towards them)
    for phase in phases:
        if phase.epochs == 0:
            continue
        if phase.optimizer == "probe":  # LP-FT's first step: the head fitted as a linear probe, backbone frozen
            row = _probe_phase(model, data, profile, phase, device, precision, fmt, label)
            history.append(row)
            probed = _snapshot(model)
            done_epochs += 1
            continue
        phase_seconds = 0.0  # the remaining time is estimated from this phase's epochs (phases differ in speed)
        set_trainable(model, profile.backbone, phase.train_from)
        opt = _optimizer(phase, [p for p in model.parameters() if p.requires_grad])
        steps = phase.epochs * ((len(data.epoch_index) + bs - 1) // bs)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if phase.schedule == "cosine" else None
        best_loss, best_state = float("inf"), None  # fine-tuning's own epochs only: label smoothing raises their
        # validation loss above an accurate probe's, so the probed model is never a candidate here (WiSE-FT mixes it in)
        for epoch in range(1, phase.epochs + 1):
            t0 = time.perf_counter()
            _set_train_mode(model, phase, freeze_bn)
            order = order_rng.permutation(np.asarray(data.epoch_index))
            # running totals stay on the device: no host sync per step (it would stall a GPU)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            batches = range(0, len(order) - 1, bs)  # a last batch of one image is dropped (mixup needs pairs)
            bar = tqdm(batches, desc=f"{label} {phase.name} {epoch}/{phase.epochs}", leave=False, disable=not show)
            for start in bar:
                idx = torch.as_tensor(order[start : start + bs], device=device)
                xb = torch.stack([per_image(img) for img in train_x[idx]])
                xb, target = per_batch(xb, train_y[idx])
                xb = xb.contiguous(memory_format=fmt)
                loss, logits = train_step(model, opt, xb, target, device, profile.label_smoothing, precision)
                if sched is not None:
                    sched.step()
                loss_sum += loss * len(idx)
                correct += (logits.argmax(1) == target.argmax(1)).sum()
                seen += len(idx)
            epoch_loss, epoch_correct = loss_sum.item(), int(correct.item())
            val_loss, val_acc = _evaluate(model, data.val_x, data.val_y, device, bs * 2, precision, fmt)
            row = {
                "phase": phase.name,
                "epoch": epoch,
                "loss": epoch_loss / max(seen, 1),
                "accuracy": epoch_correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
                "images": seen,
            }
            history.append(row)
            if val_loss < best_loss:
                best_loss, best_state = val_loss, _snapshot(model)
            done_epochs, phase_seconds = done_epochs + 1, phase_seconds + row["seconds"]
            left = total_epochs - done_epochs
            eta = f", ~{clock(phase_seconds / epoch * left)} left" if left else ""
            tqdm.write(
                f"[{label}] epoch {done_epochs}/{total_epochs} ({phase.name} {epoch}/{phase.epochs}) "
                f"loss {row['loss']:.4f} acc {row['accuracy']:.3f} val_loss {val_loss:.4f} "
                f"val_acc {val_acc:.3f} {row['seconds']:.1f}s | variant "
                f"{clock(time.perf_counter() - t_fit)} elapsed{eta}",
                file=sys.stderr,
            )
        if best_state is not None:
            model.load_state_dict(best_state)
    if probed is not None and profile.probe_interpolation > 0 and len(history) > 1:
        history.append(_interpolate(model, probed, profile, data, device, precision, fmt, label))
    model.to(memory_format=torch.contiguous_format)
    return history


def interpolate_weights(
    tuned: dict[str, torch.Tensor], probed: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT's weight-space average (1 - alpha) * tuned + alpha * probed of floating-point tensors; integer buffers
    (batch-norm step counters) are the tuned model's."""
    return {
        k: torch.lerp(v.float(), probed[k].to(v.device).float(), alpha).to(v.dtype) if v.is_floating_point() else v
        for k, v in tuned.items()
    }


def _interpolate(
    model: Classifier,
    probed: dict[str, torch.Tensor],
    profile: Profile,
    data: TrainData,
    device: torch.device,
    precision: Precision | None,
    fmt: torch.memory_format,
    label: str,
) -> dict[str, Any]:
    """Replace the fine-tuned weights by their average with the probed ones (profile.probe_interpolation); the
    history row of the result, scored on the validation part."""
    t0 = time.perf_counter()
    alpha = profile.probe_interpolation
    model.load_state_dict(interpolate_weights(model.state_dict(), probed, alpha))
    val_loss, val_acc = _evaluate(model, data.val_x, data.val_y, device, profile.batch_size * 2, precision, fmt)
    tqdm.write(
        f"[{label}] WiSE-FT: weights = {1 - alpha:g} x fine-tuned + {alpha:g} x probed: val_loss {val_loss:.4f} "
        f"val_acc {val_acc:.3f}",
        file=sys.stderr,
    )
    return {
        "phase": "interpolate",
        "epoch": 1,
        "loss": None,  # not trained: a weight average
        "accuracy": None,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "lr": 0.0,
        "seconds": time.perf_counter() - t0,
        "images": 0,
    }


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of the model's weights (a best-validation candidate)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _probe_phase(
    model: Classifier,
    data: TrainData,
    profile: Profile,
    phase: Phase,
    device: torch.device,
    precision: Precision | None,
    fmt: torch.memory_format,
    label: str,
) -> dict[str, Any]:
    """A phase with optimizer = "probe": the head fitted as a linear probe on the frozen backbone's features of the
    training part (harness.probe_head), then scored on the validation part like an epoch; its history row."""
    t0 = time.perf_counter()
    set_trainable(model, profile.backbone, "head")
    probe = fit_head_probe(model, data.train_x, data.train_y, data.classes, device)
    val_loss, val_acc = _evaluate(model, data.val_x, data.val_y, device, profile.batch_size * 2, precision, fmt)
    row = {
        "phase": phase.name,
        "epoch": 1,
        "loss": probe["train_loss"],
        "accuracy": probe["train_accuracy"],
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "lr": 0.0,
        "seconds": time.perf_counter() - t0,
        "images": len(data.train_x),
        "probe_C": probe["C"],
        "probe_folds": probe["folds"],
    }
    tqdm.write(
        f"[{label}] {phase.name}: linear probe on frozen features (C = {probe['C']:g} by {probe['folds']}-fold "
        f"cross-validation) train acc {row['accuracy']:.3f} val_loss {val_loss:.4f} val_acc {val_acc:.3f} "
        f"{row['seconds']:.1f}s",
        file=sys.stderr,
    )
    return row


def stale_message(vdir: Path, why: str) -> str:
    return (
        f"{vdir} was trained from other inputs than this run's ({why}); its model would not be what the report "
        f"claims. Use another --out for the new settings, or --force to retrain it"
    )


def train_variant(
    run_dir: Path,
    profile: Profile,
    ds: Dataset,
    data_root: Path,
    variant: str,
    seed: int,
    weights_file: Path | None = None,
    force: bool = False,
    progress: bool | None = None,
    train_fingerprint: str | None = None,
) -> Path:
    """Train one (variant, seed) into run_dir/<id>/; skipped when it was already trained from the same inputs.

    Inputs (the profile fields that matter, the training data's fingerprint, the weights) are recorded in
    config.json; a folder trained from other inputs raises StaleRunError unless force.
    """
    init, level_name = split_variant(variant)
    vdir = Path(run_dir) / ModelId.of(profile.backbone, variant, seed).folder
    ckpt = vdir / "model.pt"
    fp = train_fingerprint or provenance.dataset_fingerprint(ds)
    device = pick_device(profile.device)
    precision = resolve(profile.precision, profile.backbone, device, profile.image_size)
    inputs = provenance.train_inputs(
        profile,
        variant,
        seed,
        fp,
        provenance.weights_identity(profile.backbone, init, weights_file),
        precision.resolved,
    )
    state, why = training_state(vdir, inputs)
    if state == "current" and not force:
        tqdm.write(f"[{vdir.name}] already trained from the same inputs, skipping ({ckpt})", file=sys.stderr)
        return vdir
    if state == "stale" and not force:
        raise provenance.StaleRunError(stale_message(vdir, why))
    data = prepare_data(ds, profile)
    torch.manual_seed(seed)  # scratch initialisation is part of what the seed fixes
    model = build_classifier(profile.backbone, init, len(ds.classes), profile.hidden, profile.dropout, weights_file)
    config = {
        "variant": variant,
        "init": init,
        "level": level_name,
        "seed": seed,
        "backbone": profile.backbone,
        "classes": list(ds.classes),
        "data_root": str(Path(data_root).resolve()),
        "weights_file": str(weights_file) if weights_file else None,
        "device": provenance.device_info(device),
        "precision": precision.to_dict(),
        "versions": provenance.versions(),
        "split": {"train": list(data.train_names), "val": list(data.val_names)},
        "inputs": inputs,
        "profile": profile.to_dict(),
    }
    (vdir / "history.json").unlink(missing_ok=True)  # the completion marker goes first: a crash leaves "absent"
    ckpt.unlink(missing_ok=True)  # never a checkpoint beside a config.json that did not produce it
    artifacts.write_json(vdir / "config.json", config)
    t0 = time.perf_counter()
    history = fit(
        model,
        data,
        LEVELS[level_name],
        profile,
        profile.phases[init],
        device,
        seed,
        vdir.name,
        progress,
        freeze_bn=profile.freeze_bn and init == "imagenet",  # scratch BN statistics must learn
        precision=precision,
    )
    seconds = time.perf_counter() - t0
    artifacts.write_csv(vdir / "history.csv", history)
    artifacts.save_torch(
        ckpt,
        {
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "backbone": profile.backbone,
            "classes": list(ds.classes),
            "image_size": profile.image_size,
            "hidden": profile.hidden,
            "dropout": profile.dropout,
            "variant": variant,
            "seed": seed,
            "tta_hflip": profile.tta_hflip,
            "train_seconds": seconds,
        },
    )
    artifacts.write_json(
        vdir / "history.json", {"seconds": seconds, "model_sha256": artifacts.sha256_file(ckpt), "epochs": history}
    )
    return vdir


CHECKPOINT_KEYS = ("state_dict", "backbone", "classes", "image_size", "hidden", "dropout")


def load_checkpoint(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a trained Classifier from model.pt (no pretrained weights needed: the state dict has them all)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; train this variant first (harness train)")
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"{path}: not a readable harness checkpoint ({exc}); delete it and retrain") from exc
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: not a harness checkpoint (a {type(meta).__name__}, not a dict with "
            f"{list(CHECKPOINT_KEYS)}); delete it and retrain (harness train --force)"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in meta]
    if missing:
        raise ValueError(
            f"{path}: not a harness checkpoint: keys {missing} missing (a harness checkpoint has "
            f"{list(CHECKPOINT_KEYS)}); delete it and retrain (harness train --force)"
        )
    if meta["backbone"] not in BACKBONES:
        raise ValueError(f"{path}: checkpoint backbone {meta['backbone']!r} is not registered ({sorted(BACKBONES)})")
    model = build_classifier(meta["backbone"], "scratch", len(meta["classes"]), meta["hidden"], meta["dropout"])
    try:
        model.load_state_dict(meta["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: its state_dict does not fit a {meta['backbone']} classifier over "
            f"{len(meta['classes'])} classes ({str(exc).splitlines()[0]}); delete it and retrain"
        ) from exc
    model.eval()
    return model, meta
