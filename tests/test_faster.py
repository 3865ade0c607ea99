"""Issue 25's speed-ups: the `precision` field (validated, resolved per device and backbone, recorded, part of the
training inputs; ONNX stays float32), channels_last training (same losses as contiguous), and black-box saliency
computing only the report's example maps on a test set without labelled regions (faithfulness reads what is there)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from harness import artifacts, precision
from harness.augment import LEVELS
from harness.backbones import BACKBONES
from harness.config import load_profile
from harness.data import load_train
from harness.export import export_variant
from harness.precision import BF16, FP32, resolve
from harness.provenance import StaleRunError
from harness.robustness.maps import MapStore, load_maps, maps_file
from harness.robustness.measures import faithfulness_summary
from harness.saliency.blackbox_step import example_indices, variant_blackbox
from harness.train import fit, prepare_data, train_variant
from harness.validate import ConfigError
from tests.test_cam import tiny_run  # noqa: F401  (the fixture: one untrained VGG16 at 32 px, COCO + ImageFolder)
from tests.test_faithfulness import _step
from tests.test_robustness import S, checked_folder, dataset, redness, region_mask

CPU = torch.device("cpu")
TINY = [
    "image_size=32",
    "batch_size=4",
    "val_fraction=0.4",
    "device=cpu",
    'test_sets=["test_plain"]',
    'phases.scratch=[{name="all",epochs=1,optimizer="adam",lr=1e-3,train_from="all"}]',
]


@pytest.fixture()
def amx(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16: set(flag); and that the registry measured VGG16
    faster in bf16 on such a CPU from 32 px and EfficientNet-Lite0 never (whatever it says today)."""

    def set_(on: bool) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",) if on else ())

    for name, least in (("vgg16", 32), ("efficientnet_lite0", None)):
        monkeypatch.setitem(BACKBONES, name, dataclasses.replace(BACKBONES[name], cpu_bf16_min_size=least))
    return set_


# --- the field, at the edge ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["fp16", "16", "true", "'BF16'"])
def test_precision_is_one_of_three_and_the_error_names_key_and_value(value):
    with pytest.raises(ConfigError) as e:
        load_profile("smoke", [f"precision={value}"])
    msg = str(e.value)
    assert "precision = " in msg and "['auto', 'fp32', 'bf16']" in msg and "smoke.toml" in msg


def test_profiles_default_to_auto_and_record_it():
    for name in ("smoke", "cpu", "full"):
        p = load_profile(name)
        assert p.precision == "auto" and p.to_dict()["precision"] == "auto"
    assert load_profile("smoke", ["precision=fp32"]).precision == FP32


# --- auto: bf16 only where the device runs it fast AND the backbone gains --------------------------------------------


def test_auto_picks_bf16_only_with_the_cpu_capability_and_a_backbone_that_gains_at_that_size(amx):
    amx(True)
    vgg = resolve("auto", "vgg16", CPU, 224)
    assert vgg.resolved == BF16 and vgg.autocast and "amx_bf16" in vgg.reason
    lite = resolve("auto", "efficientnet_lite0", CPU, 224)
    assert lite.resolved == FP32 and "no faster" in lite.reason and "at any size" in lite.reason
    assert resolve("auto", "vgg16", CPU, 16).resolved == FP32  # below the size it was measured faster at
    assert resolve("fp32", "vgg16", CPU, 224).resolved == FP32  # forced
    amx(False)
    no = resolve("auto", "vgg16", CPU, 224)
    assert no.resolved == FP32 and "neither amx_bf16 nor avx512_bf16" in no.reason
    forced = resolve("bf16", "vgg16", CPU, 224)  # asked for: it runs (emulated), and the reason says it is slow here
    assert forced.resolved == BF16 and "slow here" in forced.reason


def test_the_registry_records_the_decisions_measured_on_an_amx_cpu():
    assert BACKBONES["vgg16"].cpu_bf16_min_size == 224 and BACKBONES["efficientnet_lite0"].cpu_bf16_min_size is None
    assert BACKBONES["vgg16"].channels_last and BACKBONES["efficientnet_lite0"].channels_last


def test_auto_on_a_gpu_follows_torch_and_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", "efficientnet_lite0", gpu, 64).resolved == BF16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "vgg16", gpu, 224).resolved == FP32
    with pytest.raises(ConfigError, match="precision = 'bf16' but this GPU"):
        resolve("bf16", "vgg16", gpu, 224)


def test_the_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n", encoding="utf-8")
    assert precision.cpu_bf16_flags.__wrapped__(str(info)) == ("avx512_bf16",)
    assert precision.cpu_bf16_flags.__wrapped__(str(tmp_path / "absent")) == ()


# --- recorded, part of the training inputs, exported in float32 -------------------------------------------------------


@pytest.mark.slow
def test_run_json_and_config_json_record_the_precision_and_a_change_makes_training_stale(tiny_root, tmp_path, amx):
    from harness.run import protocol
    from harness.thresholds import parse_thresholds

    amx(True)
    profile = load_profile("smoke", TINY)
    proto = protocol(profile, parse_thresholds({}, "t"), tiny_root, ["scratch-none"], [0], None)
    assert proto["precision"]["requested"] == "auto" and proto["precision"]["resolved"] == BF16
    ds = load_train(tiny_root)
    vdir = train_variant(tmp_path, profile, ds, tiny_root, "scratch-none", 0, progress=False)
    config = artifacts.read_json(vdir / "config.json")
    assert config["precision"]["resolved"] == BF16 and config["inputs"]["precision"] == BF16
    forced = load_profile("smoke", [*TINY, "precision=bf16"])  # asks differently, resolves the same: current
    train_variant(tmp_path, forced, ds, tiny_root, "scratch-none", 0, progress=False)
    with pytest.raises(StaleRunError, match=r"precision: \"bf16\" -> \"fp32\""):
        train_variant(tmp_path, load_profile("smoke", [*TINY, "precision=fp32"]), ds, tiny_root, "scratch-none", 0)


@pytest.mark.slow
def test_a_bf16_trained_model_exports_to_float32_onnx_with_parity(tiny_root, tmp_path):
    profile = load_profile("smoke", [*TINY, "precision=bf16"])
    vdir = train_variant(tmp_path, profile, load_train(tiny_root), tiny_root, "scratch-none", 0, progress=False)
    assert artifacts.read_json(vdir / "config.json")["precision"]["resolved"] == BF16
    state = torch.load(vdir / "model.pt", weights_only=True)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) and v.is_contiguous() for v in state.values())
    rec = export_variant(vdir)
    assert rec["parity"]["passed"] and rec["parity"]["cpu"]["max_abs"] <= 1e-4
    model = onnx.load(str(vdir / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16]


# --- channels_last ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_channels_last_training_gives_the_losses_of_contiguous_training(tiny_root, monkeypatch):
    profile = load_profile("smoke", [*TINY, "precision=fp32", "batch_size=6"])
    data = prepare_data(load_train(tiny_root), profile)
    histories, formats = {}, {}
    for channels_last in (False, True):
        monkeypatch.setitem(BACKBONES, "vgg16", dataclasses.replace(BACKBONES["vgg16"], channels_last=channels_last))
        torch.manual_seed(0)
        from harness.backbones import build_classifier

        model = build_classifier("vgg16", "scratch", 3, hidden=8)
        phases = profile.phases["scratch"]
        histories[channels_last] = fit(model, data, LEVELS["usual"], profile, phases, CPU, 0, progress=False)
        formats[channels_last] = all(p.is_contiguous() for p in model.parameters())
    a, b = histories[False][0], histories[True][0]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)
    assert formats == {False: True, True: True}  # fit hands back a contiguous model either way


# --- black-box saliency: the report's examples on a set without regions ----------------------------------------------


def test_examples_take_one_class_at_a_time_in_the_set_s_order():
    class Ds:
        samples = [type("S", (), {"label": c})() for c in "aaabbc"]

    assert example_indices(Ds, 3) == [0, 3, 5]
    assert example_indices(Ds, 4) == [0, 1, 3, 5]
    assert example_indices(Ds, 99) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("value", ["0", "-1", "'six'"])
def test_examples_and_all_maps_are_validated(value):
    with pytest.raises(ConfigError, match=r"saliency.examples = "):
        load_profile("smoke", [f"saliency.examples={value}"])
    with pytest.raises(ConfigError, match=r"saliency.all_maps = "):
        load_profile("smoke", ["saliency.all_maps=1"])


@pytest.mark.slow
def test_occlusion_maps_only_the_examples_of_a_set_without_regions_unless_all_maps(tiny_run):  # noqa: F811
    vdir = tiny_run / "vgg16-scratch-none-s0"
    base = [
        "image_size=32",
        'test_sets=["test_coco", "test_plain"]',
        'saliency.methods=["gradcam", "occlusion"]',
        "saliency.occlusion.window=16",
        "saliency.occlusion.stride=16",
        "saliency.sanity=false",
    ]

    def run(*extra):
        config = artifacts.read_json(vdir / "config.json")
        config["profile"] = load_profile("smoke", [*base, *extra]).to_dict()
        artifacts.write_json(vdir / "config.json", config)
        return variant_blackbox(vdir, "occlusion")

    export_variant(vdir)
    occ = run("saliency.examples=1")
    assert len(occ["images"]["test_coco"]) == 4  # labelled regions: every photo is mapped and scored
    plain = occ["summary"]["test_plain"]
    assert len(occ["images"]["test_plain"]) == 1 and plain["images_in_set"] == 2 and "1 example" in plain["maps"]
    stored = {(split, image) for split, image, _ in load_maps(vdir / maps_file("occlusion"))}
    assert {i for s, i in stored if s == "test_plain"} == {"test_plain/bayes/e.png"}
    assert occ["inputs"]["maps"] == {"all_maps": False, "examples": 1}
    every = run("saliency.examples=1", "saliency.all_maps=true")  # a changed selection redoes the step
    assert len(every["images"]["test_plain"]) == 2 and every["summary"]["test_plain"]["maps"] == "every photo"


def test_faithfulness_uses_the_photos_that_have_maps_and_says_how_many(tmp_path):
    ds = dataset(n_red=4, n_background=0)
    folder = tmp_path / "few"
    folder.mkdir(parents=True)
    store = MapStore((S, S))
    mask = region_mask().astype(np.float32)
    for s in ds.samples[:2]:  # examples only
        store.add("t", s.name, {"red": mask, "background": 1 - mask})
    store.save(folder / maps_file("occlusion"))
    checked_folder(tmp_path, "few", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",), masking=False)
    _step(folder, ds)
    ev = json.loads((folder / "faithfulness.json").read_text())
    assert ev["methods"]["occlusion"]["photos"] == {"t": 2}
    assert faithfulness_summary(ev["images"]["t"], "occlusion")["n"] == 2
    assert sum("skipped" in r for r in ev["images"]["t"]) == 2
