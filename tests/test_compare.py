"""`harness compare BASELINE NEW`: known answers on hand-built reports (no training, no model).

Each test builds report.json files in tmp dirs: one gated model (imagenet-all) and one ablation (scratch-all), a
20-photo test set whose correctness is set photo by photo, counts / Wilson intervals / the accuracy verdict derived
from the predictions (so editing predictions makes a weaker run), and JPEG photos for the thumbnails.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.cli import main
from harness.compare import CompareError, compare_paths, compare_reports, load_report, write_compare
from harness.report.compare_html import thumbnail_uri
from harness.stats import wilson
from harness.thresholds import Thresholds
from tests.conftest import write_image

CLASSES = ["background", "bayes", "geeks", "keras", "nlp", "technium"]
SPLIT = "test_difficult"
GATED = "efficientnet_lite0-imagenet-all"
ABLATION = "efficientnet_lite0-scratch-all"
SOFT_MIN = 0.85
EXTERNAL = re.compile(r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//|url\(""", re.IGNORECASE)


def image_name(i: int, split: str = SPLIT) -> str:
    return f"{split}/img_{i:03d}.jpg"


def prediction(i: int, right: bool, split: str = SPLIT) -> dict:
    primary = CLASSES[1 + i % 5]
    predicted = primary if right else "background"
    return {
        "image": image_name(i, split),
        "primary": primary,
        "acceptable": [primary],
        "predicted": predicted,
        "soft_correct": right,
        "strict_correct": right,
        "probabilities": {c: (0.9 if c == predicted else 0.02) for c in CLASSES},
    }


def recount(report: dict) -> dict:
    """Counts, values, Wilson intervals and the accuracy verdicts, from the predictions (as harness report does)."""
    for entry in report["variants"].values():
        for ts in entry["test_sets"].values():
            preds = ts["predictions"]
            ts["n"] = len(preds)
            for kind in ("soft", "strict"):
                k = sum(p[f"{kind}_correct"] for p in preds)
                ts[kind] = {"k": k, "value": k / len(preds), "wilson": list(wilson(k, len(preds)))}
    for v in report["verdicts"]:
        values = [
            e["test_sets"][v["subject"]]["soft"]["value"]
            for e in report["variants"].values()
            if e["model"] == v["model"]
        ]
        v["value"] = min(values)
        v["status"] = "PASS" if v["value"] >= v["threshold"] else "FAIL"
    return report


def make_report(
    correct: dict[str, Sequence[bool]] | None = None,
    seeds: Sequence[int] = (0,),
    n: int = 20,
    data_root: str = "/nonexistent",
    classes: Sequence[str] = CLASSES,
    split: str = SPLIT,
    fingerprint: str = "f" * 64,
    latency_ms: float = 10.0,
    energy: float = 0.4,
) -> dict:
    """A report.json dict: per model the soft correctness of photo i (default: the gated model gets 18 of 20 right
    (photos 0 and 1 wrong), the ablation 8)."""
    correct = correct or {GATED: [i >= 2 for i in range(n)], ABLATION: [i < 8 for i in range(n)]}
    variants, verdicts = {}, []
    for model, right in correct.items():
        variant = model.split("-", 1)[1]
        for seed in seeds:
            variants[f"{model}-s{seed}"] = {
                "folder": f"{model}-s{seed}",
                "model": model,
                "variant": variant,
                "backbone": "efficientnet_lite0",
                "seed": seed,
                "kind": "trained",
                "test_sets": {
                    split: {
                        "classes": list(classes),
                        "predictions": [prediction(i, r, split) for i, r in enumerate(right)],
                    }
                },
                "latency": {"by_provider": {"CPUExecutionProvider": {"1": {"median_ms": latency_ms}}}},
                "cam": {"summary": {split: {"energy_share_mean": energy, "pointing_hit_rate": 0.5}}},
                "saliency": {
                    "occlusion": {"summary": {split: {"energy_share_mean": energy - 0.1, "pointing_hit_rate": 0.6}}}
                },
            }
        verdicts.append(
            {
                "criterion": "accuracy",
                "id": f"{model}-{split}",
                "model": model,
                "variant": variant,
                "backbone": "efficientnet_lite0",
                "subject": split,
                "comparison": ">=",
                "threshold": SOFT_MIN,
                "gated": variant == "imagenet-all",
                "chance": 0.7,
            }
        )
    thresholds = Thresholds(gated=("imagenet-all",)).to_dict() | {"source": "test profile"}
    report = {
        "schema": 1,
        "created": "2025-01-01T00:00:00+00:00",
        "run_dir": "/elsewhere/run",
        "verdicts": verdicts,
        "variants": variants,
        "protocol": {
            "data_root": data_root,
            "seeds": list(seeds),
            "data": {"classes": list(classes), "test": {split: fingerprint}},
            "profile": {"name": "test", "test_sets": [split]},
            "thresholds": thresholds,
        },
    }
    recount(report)
    report["verdict"] = "PASS" if all(v["status"] == "PASS" for v in verdicts if v["gated"]) else "FAIL"
    return report


def save(report: dict, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return run_dir


def weaker(report: dict, model: str = GATED, photos: Sequence[int] = (5, 6), seed: int | None = None) -> dict:
    """A copy in which `model` gets `photos` wrong (of every seed, or of one)."""
    out = copy.deepcopy(report)
    for entry in out["variants"].values():
        if entry["model"] == model and (seed is None or entry["seed"] == seed):
            for p in entry["test_sets"][SPLIT]["predictions"]:
                if int(p["image"][-7:-4]) in photos:
                    p.update(prediction(int(p["image"][-7:-4]), False))
    return recount(out)


def compare(base: dict, new: dict, thresholds: Thresholds | None = None) -> dict:
    return compare_reports(base, new, thresholds, Path("/b/base-run"), Path("/n/new-run"))


def row(result: dict, model: str = GATED, split: str = SPLIT) -> dict:
    [r] = [r for r in result["comparisons"] if r["model"] == model and r["test_set"] == split]
    return r


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    """Photos 0..19 of the test set as 400x300 JPEGs, except photo 6 (missing: 'image not found')."""
    root = tmp_path / "data"
    for i in range(20):
        if i != 6:
            write_image(root / image_name(i), (40 + 10 * i, 90, 160), size=(400, 300), seed=i)
    return root


# --- known answers ----------------------------------------------------------------------------------------------


def test_a_report_against_itself_is_ok_with_no_flips() -> None:
    rep = make_report()
    res = compare(rep, copy.deepcopy(rep))
    assert res["verdict"] == "OK" and res["regressions"] == [] and res["verdict_changes"] == []
    for r in res["comparisons"]:
        assert r["flips"] == {"right_to_wrong": [], "wrong_to_right": []}
        for kind in ("soft", "strict"):
            assert r[kind]["delta"] == 0.0 and r[kind]["paired"]["p"] == 1.0
            assert r[kind]["paired"]["a_only"] == r[kind]["paired"]["b_only"] == 0
    g = row(res)
    assert g["gated"] and not row(res, ABLATION)["gated"]
    assert g["soft"]["baseline"]["value"] == 0.9 and g["soft"]["paired"]["both"] == 18
    assert g["soft"]["baseline"]["wilson"] == pytest.approx(list(wilson(18, 20)))
    assert g["localization"]["cam"]["energy_share"] == {"baseline": 0.4, "new": 0.4, "delta": 0.0}
    assert g["localization"]["occlusion"]["pointing_rate"]["delta"] == 0.0
    assert [x["ratio"] for x in res["latency"]] == [1.0, 1.0]


def test_two_photos_right_to_wrong_on_the_gated_model_is_a_regression() -> None:
    base = make_report()
    new = weaker(base)  # 18/20 -> 16/20: drop 0.1 > max_drop 0.05; McNemar 0 vs 2 -> p = 0.5; accuracy PASS -> FAIL
    res = compare(base, new)
    g = row(res)
    assert [f["image"] for f in g["flips"]["right_to_wrong"]] == [image_name(5), image_name(6)]
    assert g["flips"]["wrong_to_right"] == []
    flip = g["flips"]["right_to_wrong"][0]
    assert flip["seed"] == 0 and flip["baseline_predicted"] == flip["primary"] and flip["new_predicted"] == "background"
    assert g["soft"]["paired"] == {"n": 20, "both": 16, "neither": 2, "a_only": 2, "b_only": 0, "p": 0.5}
    assert g["soft"]["delta"] == pytest.approx(-0.1) and g["strict"]["paired"]["p"] == 0.5
    assert res["verdict"] == "REGRESSION"
    kinds = sorted((r["kind"], r["detail"].split()[0]) for r in res["regressions"])
    assert kinds == [("accuracy_drop", "soft"), ("accuracy_drop", "strict"), ("verdict", f"accuracy[{GATED}-{SPLIT}]")]
    assert [(c["criterion"], c["baseline"], c["new"]) for c in res["verdict_changes"]] == [("accuracy", "PASS", "FAIL")]
    assert row(res, ABLATION)["flips"]["right_to_wrong"] == []

    # the other way round: the same photos flip wrong -> right, nothing regresses
    back = compare(new, base)
    assert [f["image"] for f in row(back)["flips"]["wrong_to_right"]] == [image_name(5), image_name(6)]
    assert row(back)["flips"]["right_to_wrong"] == [] and row(back)["soft"]["paired"]["p"] == 0.5
    assert back["verdict"] == "OK"
    assert [(c["baseline"], c["new"]) for c in back["verdict_changes"]] == [("FAIL", "PASS")]


def test_a_drop_of_exactly_max_drop_with_a_high_p_is_ok() -> None:
    base = make_report()
    res = compare(base, weaker(base, photos=(5,)))  # 0.90 -> 0.85 (float: a drop of 0.05000000000000004), p = 1.0
    g = row(res)
    assert g["soft"]["paired"]["a_only"] == 1 and g["soft"]["paired"]["p"] == 1.0
    assert res["verdict_changes"] == []  # 0.85 >= 0.85 still passes
    assert res["verdict"] == "OK" and res["regressions"] == []


def test_the_ablation_may_fall_without_a_regression() -> None:
    base = make_report()
    res = compare(base, weaker(base, model=ABLATION, photos=(0, 1, 2, 3, 4)))
    assert row(res, ABLATION)["soft"]["paired"]["a_only"] == 5 and row(res, ABLATION)["soft"]["delta"] < -0.2
    assert res["verdict"] == "OK"


def test_mcnemar_clause_small_drop_many_flips() -> None:
    n = 200
    base = make_report({GATED: [True] * n}, n=n)
    base["verdicts"] = []
    new = copy.deepcopy(base)
    for i, p in enumerate(new["variants"][f"{GATED}-s0"]["test_sets"][SPLIT]["predictions"][:6]):
        p.update(prediction(i, False))  # the model now answers these 6 photos wrong
    recount(new)
    res = compare(base, new)  # drop 0.03 <= 0.05, but 6 vs 0 discordant: exact p = 2 * 0.5**6 = 0.03125 < 0.05
    assert row(res)["soft"]["paired"]["p"] == pytest.approx(0.03125)
    assert sorted((r["kind"], r["detail"].split()[0]) for r in res["regressions"]) == [
        ("mcnemar", "soft"),
        ("mcnemar", "strict"),
    ]
    assert "6 right -> wrong vs 0 wrong -> right" in res["regressions"][0]["detail"]
    off = Thresholds(gated=("imagenet-all",), regression=type(Thresholds().regression)(max_drop=0.05, mcnemar_p=None))
    assert compare(base, new, off)["verdict"] == "OK"

    # 6 vs 1 discordant: exact p = 0.125 (a drop of 5 photos in 200: no regression either)
    base = make_report({GATED: [i != 0 for i in range(n)]}, n=n)
    new = make_report({GATED: [i == 0 or i > 6 for i in range(n)]}, n=n)
    res = compare(base, new)
    p = row(res)["soft"]["paired"]
    assert (p["a_only"], p["b_only"], p["p"]) == (6, 1, pytest.approx(0.125))
    assert res["verdict"] == "OK"


def test_seeds_pair_only_the_seeds_both_have() -> None:
    base = make_report(seeds=(0, 1))
    new = weaker(make_report(seeds=(1, 2)), photos=(5,), seed=1)
    new = weaker(new, photos=(7, 8, 9), seed=2)  # seed 2 has no partner: its errors flip nothing
    g = row(compare(base, new))
    assert g["seeds"] == {"baseline": [0, 1], "new": [1, 2], "paired": [1]} and g["pairs"] == 20
    assert [(f["seed"], f["image"]) for f in g["flips"]["right_to_wrong"]] == [(1, image_name(5))]
    assert g["soft"]["new"]["value"] == pytest.approx((17 / 20 + 15 / 20) / 2)  # mean over NEW's seeds
    assert g["soft"]["new"]["k"] == 32 and g["soft"]["new"]["n"] == 40
    assert g["soft"]["new"]["wilson"] == pytest.approx(list(wilson(32, 40)))


def test_models_and_test_sets_in_one_run_only_are_listed_not_compared() -> None:
    base = make_report()
    new = make_report({GATED: [i >= 2 for i in range(20)], "efficientnet_lite0-imagenet-usual": [True] * 20})
    res = compare(base, new)
    assert [r["model"] for r in res["comparisons"]] == [GATED]
    assert res["only_in_new"]["models"] == ["efficientnet_lite0-imagenet-usual"]
    assert res["only_in_baseline"]["models"] == [ABLATION]
    extra = copy.deepcopy(new)
    extra["protocol"]["profile"]["test_sets"].append("test_easy")
    assert compare(base, extra)["only_in_new"]["test_sets"] == ["test_easy"]


# --- nothing to pair --------------------------------------------------------------------------------------------


def test_different_classes_name_both_files(tmp_path: Path) -> None:
    a = save(make_report(), tmp_path / "a")
    b = save(make_report(classes=CLASSES[:-1] + ["other"]), tmp_path / "b")
    with pytest.raises(CompareError, match="classes") as exc:
        compare_paths(a, b)
    assert str(a / "report.json") in str(exc.value) and str(b / "report.json") in str(exc.value)
    assert "'technium'" in str(exc.value) and "'other'" in str(exc.value)


def test_different_test_images_name_the_test_set_and_both_files(tmp_path: Path) -> None:
    a = save(make_report(), tmp_path / "a")
    other = make_report()
    for entry in other["variants"].values():
        entry["test_sets"][SPLIT]["predictions"][3]["image"] = f"{SPLIT}/someone_else.jpg"
    b = save(other, tmp_path / "b")
    with pytest.raises(CompareError) as exc:
        compare_paths(a, b)
    msg = str(exc.value)
    assert SPLIT in msg and str(a / "report.json") in msg and str(b / "report.json") in msg
    assert image_name(3) in msg and "someone_else.jpg" in msg

    c = save(make_report(fingerprint="0" * 64), tmp_path / "c")
    with pytest.raises(CompareError, match="fingerprint") as exc:
        compare_paths(a, c)
    assert "f" * 64 in str(exc.value) and "0" * 64 in str(exc.value) and str(c / "report.json") in str(exc.value)

    d = save(make_report(split="test_easy"), tmp_path / "d")
    with pytest.raises(CompareError, match="no common test set") as exc:
        compare_paths(a, d)
    assert "test_easy" in str(exc.value) and SPLIT in str(exc.value)


def test_a_run_dir_without_report_json_says_what_to_run(tmp_path: Path, capsys) -> None:
    good = save(make_report(), tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"harness report .*empty"):
        load_report(empty)
    assert main(["compare", str(good), str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("harness compare: error:") and "harness report" in err
    assert main(["compare", str(tmp_path / "nowhere"), str(good)]) == 2
    (tmp_path / "junk.json").write_text('{"verdicts": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a harness report.json"):
        load_report(tmp_path / "junk.json")
    with pytest.raises(CompareError):  # CompareError is a ValueError: the CLI's one-line error, exit 2
        compare_paths(good, save(make_report(classes=["a", "b"]), tmp_path / "other"))
    assert main(["compare", str(good), str(tmp_path / "other")]) == 2


def test_non_boolean_correctness_is_refused_naming_the_file() -> None:
    base = make_report()
    new = copy.deepcopy(base)
    new["variants"][f"{GATED}-s0"]["test_sets"][SPLIT]["predictions"][0]["soft_correct"] = 1
    with pytest.raises(ValueError, match=r"/n/new-run/report.json.*soft_correct = 1"):
        compare(base, new)


# --- HTML, files, CLI ---------------------------------------------------------------------------------------------


def test_html_lists_the_flips_with_thumbnails(tmp_path: Path, data_root: Path) -> None:
    base = make_report(data_root=str(data_root))
    new = weaker(base)
    json_path, html_path = write_compare(compare(base, new), tmp_path / "out")
    assert json.loads(json_path.read_text(encoding="utf-8"))["verdict"] == "REGRESSION"
    html = html_path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and 'data-verdict="REGRESSION"' in html
    assert image_name(5) in html and image_name(6) in html
    figures = re.findall(r'<figure class="flip down" data-image="([^"]+)">(.*?)</figure>', html, re.S)
    assert [f[0] for f in figures] == [image_name(5), image_name(6)]
    uri = re.search(r'src="data:image/jpeg;base64,([^"]+)"', figures[0][1])
    assert uri, "photo 5 exists: its thumbnail is embedded"
    with Image.open(io.BytesIO(base64.b64decode(uri.group(1)))) as im:
        assert im.format == "JPEG" and max(im.size) == 160 and im.size == (160, 120)
    assert "image not found" in figures[1][1] and "data:image" not in figures[1][1]  # photo 6 is missing
    assert not EXTERNAL.search(html)
    assert "0 ↓ / 0 ↑" in html and "2 ↓ / 0 ↑" in html and "0.5" in html


def test_thumbnail_never_leaves_the_data_root(tmp_path: Path, data_root: Path) -> None:
    write_image(tmp_path / "secret.jpg", (1, 2, 3))
    assert thumbnail_uri(data_root, "../secret.jpg") is None
    assert thumbnail_uri(data_root, str(tmp_path / "secret.jpg")) is None
    assert thumbnail_uri(None, image_name(0)) is None
    (data_root / SPLIT / "broken.jpg").write_bytes(b"not a jpeg")
    assert thumbnail_uri(data_root, f"{SPLIT}/broken.jpg") is None
    assert thumbnail_uri(data_root, image_name(0)).startswith("data:image/jpeg;base64,")


def test_cli_exit_codes_output_and_default_out_dir(tmp_path: Path, capsys) -> None:
    base = save(make_report(), tmp_path / "runs" / "night-1")
    new = save(weaker(make_report()), tmp_path / "runs" / "night-2")
    assert main(["compare", str(base), str(base / "report.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"compare: OK (both sides are one run: {base / 'report.json'} is compared with itself; there is nothing to "
        "compare)",
        f"report: {base / 'compare-night-1' / 'compare.html'}",
    ]

    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["compare: REGRESSION", f"report: {new / 'compare-night-1' / 'compare.html'}"]
    assert sum(line.startswith("REGRESSION accuracy_drop") for line in out) == 2
    assert sum(line.startswith("REGRESSION verdict") for line in out) == 1
    assert f"verdict PASS -> FAIL accuracy[{GATED}-{SPLIT}] 0.9 -> 0.8" in out
    assert (new / "compare-night-1" / "compare.json").is_file()

    # --thresholds: NEW's rule replaced; gating nothing leaves nothing to regress
    toml = tmp_path / "t.toml"
    toml.write_text('[thresholds]\ngated = ["scratch-all"]\n', encoding="utf-8")
    assert main(["compare", str(base), str(new), "--thresholds", str(toml), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {tmp_path / 'o' / 'compare.html'}"
    toml.write_text("[thresholds.regression]\nmax_drop = 2\n", encoding="utf-8")
    assert main(["compare", str(base), str(new), "--thresholds", str(toml)]) == 2
    assert "thresholds.regression.max_drop" in capsys.readouterr().err


# --- invariants -------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_swapping_the_runs_swaps_the_flips(pairs: list[tuple[bool, bool]]) -> None:
    a = make_report({GATED: [x for x, _ in pairs]}, n=len(pairs))
    b = make_report({GATED: [y for _, y in pairs]}, n=len(pairs))
    ab, ba = row(compare(a, b)), row(compare(b, a))
    assert ab["flips"]["right_to_wrong"] == [
        f
        | {
            "baseline_predicted": f["new_predicted"],
            "new_predicted": f["baseline_predicted"],
            "baseline_confidence": f["new_confidence"],
            "new_confidence": f["baseline_confidence"],
        }
        for f in ba["flips"]["wrong_to_right"]
    ]
    assert len(ab["flips"]["right_to_wrong"]) == sum(x and not y for x, y in pairs)
    assert ab["soft"]["paired"]["p"] == ba["soft"]["paired"]["p"]
    assert ab["soft"]["delta"] == pytest.approx(-ba["soft"]["delta"])
    assert ab["soft"]["delta"] == pytest.approx(
        (len(ab["flips"]["wrong_to_right"]) - len(ab["flips"]["right_to_wrong"])) / len(pairs)
    )


# --- headless Chromium ----------------------------------------------------------------------------------------------


def test_chromium_renders_the_compare_page(tmp_path: Path, data_root: Path) -> None:
    from tests.test_report_html import chromium_binary, run_chromium

    binary = chromium_binary()
    base = make_report(data_root=str(data_root))
    _, page = write_compare(compare(base, weaker(base)), tmp_path / "out")
    proc = run_chromium(binary, tmp_path, page.resolve().as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert re.search(r'<section id="banner"[^>]*data-verdict="REGRESSION"[^>]*>\s*<h1>REGRESSION</h1>', dom)
    assert len(re.findall(r'<tr class="comparison"', dom)) == 2
    assert re.findall(r'<figure class="flip down" data-image="([^"]+)"', dom) == [image_name(5), image_name(6)]
    assert re.search(r'<img src="data:image/jpeg;base64,', dom)
