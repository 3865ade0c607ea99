"""Thresholds and verdicts on synthetic evidence files: known answers, seed aggregation, missing evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.report.build import model_table
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import ERROR, FAIL, PASS, SKIP, judge, overall
from harness.verdicts.collect import collect
from tests.split_evidence import split_entry

RAW = {
    "gated": ["imagenet-all"],
    "latency_max_ms": 100.0,
    "accuracy": {"test_difficult": {"soft_min": 0.85, "soft_margin": 0.2, "strict_min": 0.5}},
    "cam": {"split": "test_difficult", "energy_share_min": 0.25, "pointing_rate_min": 0.4},
}


def _variant(
    run: Path,
    variant: str,
    seed: int,
    soft: float,
    strict: float,
    energy: float = 0.4,
    pointing: float = 0.6,
    latency: float = 20.0,
    parity: float = 1e-6,
    has_regions: bool = True,
) -> None:
    d = run / f"lite0-{variant}-s{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"variant": variant, "seed": seed}))
    split = split_entry(20, round(soft * 20), round(strict * 20), constant_soft_k=14, constant_strict_k=6)
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "test_sets": {"test_difficult": split},
                "latency": {"by_provider": {"CPUExecutionProvider": {"1": {"median_ms": latency}}}},
            }
        )
    )
    (d / "cam.json").write_text(
        json.dumps(
            {
                "summary": {
                    "test_difficult": {
                        "has_regions": has_regions,
                        "energy_share_mean": energy if has_regions else None,
                        "pointing_hit_rate": pointing if has_regions else None,
                    }
                }
            }
        )
    )
    (d / "export.json").write_text(json.dumps({"parity": {"cpu": {"max_abs": parity, "test_sets": {}}}}))


def _by(verdicts):
    return {f"{v.criterion}[{v.id}]": v for v in verdicts}


def test_passing_model_passes_and_soft_margin_raises_the_bar(tmp_path):
    t = parse_thresholds(RAW, "test")
    _variant(tmp_path, "imagenet-all", 0, soft=0.95, strict=0.6)
    v = _by(judge(tmp_path, t, ["test_difficult"]))
    acc = v["accuracy[imagenet-all-test_difficult]"]
    assert acc.threshold == pytest.approx(0.90)  # max(0.85, constant 0.70 + margin 0.20)
    assert acc.status == PASS and acc.evidence == ("lite0-imagenet-all-s0/metrics.json",)
    assert v["strict_accuracy[imagenet-all-test_difficult]"].status == PASS
    assert overall(list(v.values())) == PASS


def test_worst_seed_gates_and_mean_can_be_chosen(tmp_path):
    _variant(tmp_path, "imagenet-all", 0, soft=1.0, strict=0.6)
    _variant(tmp_path, "imagenet-all", 1, soft=0.85, strict=0.6)
    worst = _by(judge(tmp_path, parse_thresholds(RAW, "t"), ["test_difficult"]))[
        "accuracy[imagenet-all-test_difficult]"
    ]
    assert worst.value == pytest.approx(0.85) and worst.status == FAIL and worst.per_seed == {"s0": 1.0, "s1": 0.85}
    mean = _by(judge(tmp_path, parse_thresholds(RAW | {"seed_aggregate": "mean"}, "t"), ["test_difficult"]))
    assert mean["accuracy[imagenet-all-test_difficult]"].value == pytest.approx(0.925)


def test_constant_answer_never_passes_even_with_a_low_threshold(tmp_path):
    lax = RAW | {"accuracy": {"test_difficult": {"soft_min": 0.5}}}
    _variant(tmp_path, "imagenet-all", 0, soft=0.70, strict=0.30)
    v = _by(judge(tmp_path, parse_thresholds(lax, "t"), ["test_difficult"]))
    assert v["accuracy[imagenet-all-test_difficult]"].status == PASS
    assert v["soft_above_constant[imagenet-all-test_difficult]"].status == FAIL
    assert v["strict_above_constant[imagenet-all-test_difficult]"].status == FAIL
    assert overall(list(v.values())) == FAIL


def test_ablations_do_not_decide_and_missing_gated_variant_is_an_error(tmp_path):
    _variant(tmp_path, "scratch-all", 0, soft=0.2, strict=0.1)
    verdicts = judge(tmp_path, parse_thresholds(RAW, "t"), ["test_difficult"])
    v = _by(verdicts)
    assert not v["accuracy[scratch-all-test_difficult]"].gated
    assert v["accuracy[imagenet-all-test_difficult]"].status == ERROR  # gated, but never trained
    assert overall(verdicts) == ERROR
    assert verdicts[0].variant == "imagenet-all"  # gated first


def test_cam_skipped_without_regions_and_latency_parity(tmp_path):
    _variant(tmp_path, "imagenet-all", 0, soft=0.95, strict=0.6, has_regions=False, latency=150.0, parity=2e-4)
    v = _by(judge(tmp_path, parse_thresholds(RAW, "t"), ["test_difficult"]))
    assert v["cam_energy[imagenet-all-test_difficult]"].status == SKIP
    assert v["latency[imagenet-all-batch1]"].status == FAIL
    assert v["onnx_parity[imagenet-all]"].status == FAIL


def test_missing_evidence_file_is_an_error(tmp_path):
    _variant(tmp_path, "imagenet-all", 0, soft=0.95, strict=0.6)
    (tmp_path / "lite0-imagenet-all-s0" / "cam.json").unlink()
    v = _by(judge(tmp_path, parse_thresholds(RAW, "t"), ["test_difficult"]))
    assert v["cam_pointing[imagenet-all-test_difficult]"].status == ERROR


def test_user_file_overrides_key_by_key(tmp_path):
    user = tmp_path / "gate.toml"
    user.write_text("[thresholds.accuracy.test_difficult]\nsoft_min = 0.9\n")
    t = parse_thresholds(RAW, "profile", user)
    assert t.accuracy["test_difficult"].soft_min == 0.9 and t.accuracy["test_difficult"].strict_min == 0.5
    assert str(user) in t.source


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"bogus": 1}, "unknown keys \\['bogus'\\]"),
        ({"accuracy": {"test_easy": {"soft_min": 1.5}}}, "soft_min = 1.5 must be a number in \\[0, 1\\]"),
        ({"seed_aggregate": "best"}, "seed_aggregate"),
        ({"cam": {"energy_share_min": -1}}, "energy_share_min"),
    ],
)
def test_invalid_thresholds_are_named(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_thresholds(raw, "x.toml")


def test_report_models_carry_their_identity_as_fields(tmp_path):
    _variant(tmp_path, "imagenet-all", 0, soft=0.95, strict=0.6)
    _variant(tmp_path, "imagenet-all", 1, soft=0.95, strict=0.6)
    check = tmp_path / "onnx-colour"
    check.mkdir()
    (check / "config.json").write_text(
        json.dumps({"variant": "colour", "seed": 0, "backbone": "onnx", "kind": "check"})
    )
    verdicts = judge(tmp_path, parse_thresholds(RAW, "t"), ["test_difficult"], ["scratch-none"])
    table = model_table(verdicts, collect(tmp_path), {})
    assert table["imagenet-all"] == {
        "kind": "trained",
        "backbone": "",
        "variant": "imagenet-all",
        "init": "imagenet",
        "level": "all",
        "name": None,
        "seeds": [0, 1],
        "gated": True,
    }
    assert table["scratch-none"] == {  # named, never trained: its identity all the same
        "kind": "trained",
        "backbone": "",
        "variant": "scratch-none",
        "init": "scratch",
        "level": "none",
        "name": None,
        "seeds": [],
        "gated": False,
    }
    assert table["onnx-colour"]["kind"] == "check" and table["onnx-colour"]["name"] == "colour"
    assert table["onnx-colour"]["init"] is None and table["onnx-colour"]["level"] is None
