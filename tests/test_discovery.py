"""Any dataset, any test split: test sets discovered from the dataset (harness.data.discover_test_sets), profiles that
do not name them (harness.config: test_sets = (), with_test_sets), and a report that speaks of books and shows the
2018 reference only for the bundled book dataset (harness.report.html.is_book_dataset)."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from html import unescape
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config import load_profile, profile_from_dict, with_test_sets
from harness.data import DataError, discover_test_sets, load_test
from harness.report.html import render_html
from harness.report.wording import is_book_dataset
from harness.validate import ConfigError
from tests.conftest import BUNDLED, write_image
from tests.test_report_html import FIXTURE, cell, run_dir  # noqa: F401  (run_dir: the fixture, overlays on disk)

CLASSES = ("coat", "shoe")
BOOK = ["background", "bayes", "geeks", "keras", "nlp", "technium"]
BOOKISH = re.compile(r"book|cover|2018", re.IGNORECASE)  # substrings, as a reader's search would find them


def train(root: Path) -> Path:
    for c in CLASSES:
        write_image(root / "train" / c / f"{c}.jpg", (200, 40, 40), size=(8, 8))
    return root


def folder_split(root: Path, split: str) -> None:
    for c in CLASSES:
        write_image(root / split / c / f"{split}_{c}.jpg", (40, 200, 40), size=(8, 8))


def coco_split(root: Path, split: str) -> None:
    """annotations/<split>.json naming one image stored under coco_images/ (a folder with no class folders)."""
    name = f"coco_images/{split}.jpg"
    write_image(root / name, (40, 40, 200), size=(8, 8))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{split}.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": name, "primary_label": "coat"}],
                "annotations": [],
                "categories": [{"id": 1, "name": "coat"}, {"id": 2, "name": "shoe"}],
            }
        )
    )


# --- discovery ------------------------------------------------------------------------------------------------------


def test_an_imagefolder_test_split_beside_train(tmp_path):
    folder_split(train(tmp_path), "test")
    assert discover_test_sets(tmp_path) == ("test",)


def test_a_coco_split(tmp_path):
    coco_split(train(tmp_path), "val")
    assert discover_test_sets(tmp_path) == ("val",)


def test_coco_and_folders_together_sorted_by_name_each_once(tmp_path):
    train(tmp_path)
    coco_split(tmp_path, "zeta")
    coco_split(tmp_path, "both")
    folder_split(tmp_path, "both")  # a COCO file and a folder: one test set (load_test reads the COCO file)
    folder_split(tmp_path, "alpha")
    found = discover_test_sets(tmp_path)
    assert found == ("alpha", "both", "zeta")
    for split in found:  # every discovered name is a test set load_test can read
        ds = load_test(tmp_path, split, CLASSES)
        assert len(ds) >= 1 and ds.has_regions == (split != "alpha")


def test_hidden_names_train_and_annotations_are_never_test_sets(tmp_path):
    train(tmp_path)
    folder_split(tmp_path, ".cache")  # hidden folder
    write_image(tmp_path / "hidden_class" / ".coat" / "a.jpg", (1, 2, 3), size=(8, 8))  # only a hidden class folder
    write_image(tmp_path / "hidden_image" / "coat" / ".a.jpg", (1, 2, 3), size=(8, 8))  # only a hidden image
    coco_split(tmp_path, "train")  # annotations/train.json: the training set is not a test set
    (tmp_path / "annotations" / ".draft.json").write_text("{}")
    (tmp_path / "annotations" / "notes.txt").write_text("not an annotation file")
    folder_split(tmp_path, "test")
    assert discover_test_sets(tmp_path) == ("test",)


def test_folders_without_labelled_images_are_not_test_sets(tmp_path):
    train(tmp_path)
    write_image(tmp_path / "loose" / "a.jpg", (1, 2, 3), size=(8, 8))  # images but no class folders
    (tmp_path / "empty_classes" / "coat").mkdir(parents=True)  # class folders but no images
    (tmp_path / "docs" / "coat").mkdir(parents=True)
    (tmp_path / "docs" / "coat" / "readme.txt").write_text("text, not an image")
    (tmp_path / "README.md").write_text("a file beside train/")
    with pytest.raises(DataError) as err:
        discover_test_sets(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "no test set found" in msg
    assert "annotations/<split>.json" in msg and "<split>/<class>/*.jpg" in msg
    assert "--set 'test_sets=[\"x\"]'" in msg  # how to name them instead


def test_an_empty_root_and_a_missing_root_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + r": no test set found: looked for annotations"):
        discover_test_sets(tmp_path)
    with pytest.raises(DataError, match=r"nowhere: dataset folder not found; pass --data DIR"):
        discover_test_sets(tmp_path / "nowhere")


def test_images_or_annotations_linked_outside_the_root_are_refused(tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "x.jpg", (1, 2, 3), size=(8, 8))
    root = train(tmp_path / "data")
    (root / "test" / "coat").mkdir(parents=True)
    (root / "test" / "coat" / "x.jpg").symlink_to(outside)
    with pytest.raises(DataError, match=r"x\.jpg: resolves to .*outside the dataset root"):
        discover_test_sets(root)
    (root / "test" / "coat" / "x.jpg").unlink()
    (tmp_path / "elsewhere" / "val.json").write_text("{}")
    (root / "annotations").mkdir()
    (root / "annotations" / "val.json").symlink_to(tmp_path / "elsewhere" / "val.json")
    with pytest.raises(DataError, match=r"val\.json: resolves to .*outside the dataset root"):
        discover_test_sets(root)


NAMES = st.sets(st.sampled_from(["a", "b", "test", "test_x", "val", "zz", "Q"]), max_size=4)


@settings(max_examples=15, deadline=None)
@given(coco=NAMES, folders=NAMES)
def test_discovery_is_the_sorted_union_of_coco_files_and_folders(coco, folders):
    with tempfile.TemporaryDirectory() as d:
        root = train(Path(d))
        for s in coco:
            coco_split(root, s)
        for s in folders:
            folder_split(root, s)
        want = tuple(sorted(coco | folders))
        if want:
            assert discover_test_sets(root) == want
        else:
            with pytest.raises(DataError):
                discover_test_sets(root)


def test_the_bundled_dataset():
    assert discover_test_sets(BUNDLED) == ("test_difficult", "test_easy")


# --- profiles: test sets not named -> discovered --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smoke", "cpu", "full"])
def test_a_profile_that_names_no_test_sets_discovers_them(name):
    p = load_profile(name)
    assert p.test_sets == ()
    assert "test_sets" not in p.to_dict() and profile_from_dict(p.to_dict()) == p  # recorded: still "discover"
    resolved = with_test_sets(p, BUNDLED)
    assert resolved.test_sets == ("test_difficult", "test_easy")
    assert {k: v for k, v in resolved.to_dict().items() if k != "test_sets"} == p.to_dict()  # nothing else moves
    recorded = json.loads(json.dumps(resolved.to_dict(), default=list))  # what config.json / run.json hold
    assert recorded["test_sets"] == ["test_difficult", "test_easy"] and profile_from_dict(recorded) == resolved


def test_a_profile_that_names_test_sets_keeps_them(tmp_path):
    p = load_profile("smoke", ['test_sets=["mine"]'])
    assert with_test_sets(p, tmp_path / "not read") is p


def test_a_named_empty_list_is_an_error():
    with pytest.raises(
        ConfigError,
        match=r"test_sets = \[\] must be a list naming at least one split .*leave "
        r"test_sets out to discover them",
    ):
        load_profile("smoke", ["test_sets=[]"])


def test_with_test_sets_on_a_dataset_without_test_sets(tmp_path):
    with pytest.raises(DataError, match="no test set found"):
        with_test_sets(load_profile("smoke"), train(tmp_path))


# --- report: book material only for the book dataset ----------------------------------------------------------------


@pytest.fixture()
def report() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def relabel(report: dict, classes: list[str]) -> dict:
    """The fixture as if run on a dataset with these classes (run.json's data classes and the metrics' classes), at
    another data root, with today's verdict details (the fixture's were recorded when verdicts spoke of covers)."""
    out = copy.deepcopy(report)
    out.setdefault("protocol", {})["data"] = {"classes": list(classes)}
    out["protocol"]["data_root"] = "/data/other"
    for v in out["verdicts"]:
        v["detail"] = v["detail"].replace("labelled covers", "labelled regions")
    for entry in out["variants"].values():
        for m in (entry.get("test_sets") or {}).values():
            m["classes"] = list(classes)
    return out


def test_is_book_dataset():
    assert is_book_dataset({"protocol": {"data": {"classes": BOOK[::-1]}}})  # order does not matter
    assert not is_book_dataset({"protocol": {"data": {"classes": BOOK + ["extra"]}}})
    assert not is_book_dataset({"protocol": {"data": {"classes": BOOK[1:]}}})
    assert not is_book_dataset({})
    # no data classes in run.json (older runs): the variants' metrics say
    assert is_book_dataset({"variants": {"v": {"test_sets": {"t": {"classes": BOOK}}}}})
    assert not is_book_dataset({"variants": {"v": {"test_sets": {"t": {"classes": ["coat", "shoe"]}}}}})
    # run.json's classes win over the metrics'
    assert not is_book_dataset(
        {"protocol": {"data": {"classes": ["a", "b"]}}, "variants": {"v": {"test_sets": {"t": {"classes": BOOK}}}}}
    )


def test_a_non_book_report_speaks_of_no_books(report, run_dir):  # noqa: F811
    other = relabel(report, ["coat", "dress", "shirt", "shoe", "trouser", "sock"])
    html = render_html(other, run_dir)
    assert not BOOKISH.findall(html), sorted(set(BOOKISH.findall(html)))
    assert "2018" not in cell(html, "imagenet-all")  # same test set names as the book dataset: still no reference
    text = unescape(html)
    assert "one of the image's acceptable labels" in text and "the image's primary label" in text
    assert "the labelled regions" in text
    minimal = {
        "verdict": "PASS",
        "protocol": {
            "data": {"classes": ["coat", "shoe"]},
            "profile": {"test_sets": ["test"], "inits": ["imagenet"], "levels": ["all"]},
        },
    }
    assert not BOOKISH.findall(render_html(minimal, run_dir))


def test_the_book_report_keeps_the_2018_reference_and_its_wording(report, run_dir):  # noqa: F811
    for r in (report, relabel(report, BOOK)):
        html = render_html(r, run_dir)
        assert "2018: 1.00 / 0.95" in cell(html, "imagenet-all")
        assert "names one of the books in the photo" in html and "Several books share most difficult photos" in html
        assert "sits on a book cover" in html


def test_localization_without_regions_reads_skipped_not_an_error(report, run_dir):  # noqa: F811
    other = relabel(report, ["coat", "shoe"])
    for entry in other["variants"].values():
        entry["cam"]["summary"]["test_difficult"]["has_regions"] = False
    cam = re.search(r'<section id="cam">(.*?)</section>', render_html(other, run_dir), re.DOTALL).group(1)
    assert cam.count("localization skipped: no labelled regions") == 2  # one per variant shown
    assert "energy inside" not in cam and "pointing-game" not in cam
    # no Grad-CAM evidence at all, and the verdicts skipped it for want of regions: skipped, not "not available"
    for entry in other["variants"].values():
        del entry["cam"]
    other["verdicts"] = [v for v in other["verdicts"] if not v["criterion"].startswith("cam_")]
    other["verdicts"] += [
        {
            "criterion": c,
            "variant": "imagenet-all",
            "subject": "",
            "status": "SKIP",
            "gated": True,
            "detail": "skipped: no test set of this run has labelled regions",
            "evidence": [],
        }
        for c in ("cam_energy", "cam_pointing")
    ]
    html = render_html(other, run_dir)
    group = re.search(r'<div class="cam-group" data-variant="imagenet-all">(.*?)</div>', html, re.DOTALL).group(1)
    assert "localization skipped: no labelled regions" in group and "not available" not in group
    assert "Grad-CAM not available" in html  # scratch-all: no evidence and no such verdict -> still missing
