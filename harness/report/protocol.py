"""The report's protocol section as a view model: the profile, training phases, augmentation, thresholds, exporter,
versions and the command that made the run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.format import NA, fmt_any, fmt_ms, split_label
from harness.report.wording import LEVEL_MEANING
from harness.saliency.registry import GRADCAM, METHODS


def protocol(report: Mapping[str, Any]) -> dict[str, Any]:
    proto = report.get("protocol") or {}
    profile = proto.get("profile") or {}
    thr = proto.get("thresholds") or {}
    phases = []
    for init, plist in (profile.get("phases") or {}).items():
        for p in plist or []:
            if isinstance(p, Mapping):
                phases.append(
                    {
                        "init": init,
                        "name": p.get("name", "?"),
                        "epochs": fmt_any(p.get("epochs")),
                        "optimizer": fmt_any(p.get("optimizer")),
                        "lr": fmt_any(p.get("lr")),
                        "weight_decay": fmt_any(p.get("weight_decay")),
                        "schedule": fmt_any(p.get("schedule")),
                        "train_from": fmt_any(p.get("train_from")),
                    }
                )
    skip = {"phases", "augment", "thresholds", "name", "seeds", "source"}
    settings = [(k, fmt_any(v)) for k, v in profile.items() if k not in skip]
    acc_rows = []
    for split, rule in (thr.get("accuracy") or {}).items():
        rule = rule or {}
        acc_rows.append(
            {
                "split": split_label(split),
                "soft_min": fmt_any(rule.get("soft_min")),
                "soft_margin": fmt_any(rule.get("soft_margin")),
                "wilson_lower_min": fmt_any(rule.get("wilson_lower_min")),
                "strict_above_constant": fmt_any(rule.get("strict_above_constant")),
            }
        )
    cam = thr.get(METHODS[GRADCAM].thresholds_key) or {}
    other_thr = [
        ("gated variants", fmt_any(thr.get("gated"))),
        (
            "seed aggregate",
            fmt_any(thr.get("seed_aggregate"))
            + (" (the worst seed must pass)" if thr.get("seed_aggregate") == "worst" else ""),
        ),
        ("CAM test set", split_label(str(cam.get("split") or "-"))),
        ("CAM energy share ≥", fmt_any(cam.get("energy_share_min"))),
        ("CAM pointing rate ≥", fmt_any(cam.get("pointing_rate_min"))),
        ("ONNX parity", f"atol {fmt_any(thr.get('parity_atol'))}, rtol {fmt_any(thr.get('parity_rtol'))}"),
        (
            f"latency at batch {fmt_any(thr.get('latency_batch'))} ≤",
            fmt_ms(thr.get("latency_max_ms")) if thr.get("latency_max_ms") is not None else "none set",
        ),
        ("source", fmt_any(thr.get("source"))),
    ]
    exporter = proto.get("exporter") or {}
    return {
        "profile": profile.get("name") or NA,
        "source": profile.get("source") or "",
        "image_size": fmt_any(profile.get("image_size")),
        "batch_size": fmt_any(profile.get("batch_size")),
        "settings": settings,
        "phases": phases,
        "augment": [(k, fmt_any(v)) for k, v in (profile.get("augment") or {}).items()],
        "levels": [(lv, LEVEL_MEANING.get(lv, "")) for lv in profile.get("levels") or []],
        "seeds": fmt_any(proto.get("seeds") if proto.get("seeds") is not None else profile.get("seeds")),
        "variants": fmt_any(proto.get("variants")),
        "accuracy_rules": acc_rows,
        "thresholds": other_thr,
        "calibration": thr.get("calibration") or "",
        "exporter": (
            f"{exporter.get('default', '?')} (available: {fmt_any(exporter.get('available'))}), "
            f"opset {fmt_any(exporter.get('opset'))}"
        )
        if exporter
        else NA,
        "providers": fmt_any(proto.get("onnxruntime_providers")),
        "versions": [(k, fmt_any(v)) for k, v in (proto.get("versions") or {}).items()],
        "device": fmt_any(proto.get("device")),
        "data_root": fmt_any(proto.get("data_root")),
        "weights_file": fmt_any(proto.get("weights_file")),
        "run_dir": fmt_any(report.get("run_dir")),
        "argv": " ".join(str(a) for a in proto.get("argv") or []) or "-",
    }
