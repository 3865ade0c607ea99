"""LP-FT's first step (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"): fit the head as a linear probe on the frozen backbone's pooled features of the training part,
then fine-tune from there. The probe is the baseline ladder's own (harness.baselines.fit.fit_probe: standardised
features, multinomial logistic regression, C by stratified cross-validation); its solution is folded into the
model's linear head (hidden = 0), so that the model's logits equal the probe's decision function:

    logits = W ((x - mu) / sigma) + b = (W / sigma) x + (b - W mu / sigma)

A phase with optimizer = "probe" (harness.config) runs it; fine-tuning starts from the probed model, and with the
profile's probe_interpolation > 0 (WiSE-FT, Wortsman et al., CVPR 2022) the final weights are the average
(1 - a) * fine-tuned + a * probed (harness.train.interpolate_weights)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.backbones import Classifier
from harness.baselines.fit import fit_probe

BATCH = 32


@torch.no_grad()
def pooled_features(model: Classifier, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """N x channels float64 pooled features of uint8 N x 3 x S x S images, the model in eval mode, float32."""
    model.eval()
    out = []
    for i in range(0, len(images), BATCH):
        xb = images[i : i + BATCH].to(device).float().div_(255)
        out.append(model.embed(xb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def fold_probe(pipeline: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(weight len(classes) x D, bias len(classes)) of a fitted StandardScaler + LogisticRegression pipeline, in
    `classes` order, such that weight @ x + bias is its decision function for every class (binary: class 0 gets 0,
    the other the pipeline's single score; a class the probe never saw gets weight 0 and a bias far below the rest)."""
    scaler, lr = pipeline[0], pipeline[-1]
    coef, intercept = np.asarray(lr.coef_, dtype=np.float64), np.asarray(lr.intercept_, dtype=np.float64)
    seen = [str(c) for c in lr.classes_]
    if len(seen) == 2 and coef.shape[0] == 1:  # binary: one score for classes_[1]; classes_[0] scores 0
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_) if scaler.scale_ is not None else 1.0
    w = coef / scale
    b = intercept - w @ (scaler.mean_ if scaler.mean_ is not None else 0.0)
    weight = np.zeros((len(classes), coef.shape[1]))
    bias = np.full(len(classes), float(b.min()) - 1e3 if len(b) else 0.0)
    for j, c in enumerate(seen):
        if c in classes:
            weight[list(classes).index(c)], bias[list(classes).index(c)] = w[j], b[j]
    return weight, bias


def fit_head_probe(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """Fit the linear probe on the frozen pooled features of `images` (uint8) with integer `labels` and write its
    solution into the model's linear head; returns what was fitted (C, folds, cross-validated accuracies, notes and
    the probe's accuracy on these images)."""
    if not model.linear_head:
        raise ValueError("a linear probe can only be written into a linear head (profile hidden = 0)")
    x = pooled_features(model, images, device)
    names = [str(classes[int(i)]) for i in labels.tolist()]
    fitted = fit_probe(x, names)
    weight, bias = fold_probe(fitted.estimator, [str(c) for c in classes])
    last = model.last_linear
    with torch.no_grad():
        last.weight.copy_(torch.as_tensor(weight, dtype=last.weight.dtype))
        last.bias.copy_(torch.as_tensor(bias, dtype=last.bias.dtype))
    logits = torch.as_tensor(x @ weight.T + bias)
    target = torch.as_tensor([int(i) for i in labels.tolist()])
    return {
        "C": fitted.value,
        "folds": fitted.folds,
        "cv_accuracy": fitted.cv_accuracy,
        "train_loss": float(torch.nn.functional.cross_entropy(logits, target)),
        "train_accuracy": float((logits.argmax(1) == target).double().mean()),
        "notes": list(fitted.notes),
    }
