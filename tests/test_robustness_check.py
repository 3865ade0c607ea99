"""`harness check` gets the robustness evidence for any ONNX classifier: a colour detector (tests/test_check.py's)
checked on photos with labelled squares writes robustness.json and faithfulness.json (from the occlusion maps it
stored), report.json's robustness section and its verdicts, which `harness report` recomputes unchanged."""

from __future__ import annotations

from harness import artifacts
from harness.cli import main
from tests.test_check import SMALL, _by, _classes_set, boxes_root, colour_model  # noqa: F401  (boxes_root: fixture)


def test_check_writes_the_robustness_evidence_and_judges_it(boxes_root, tmp_path, capsys):  # noqa: F811
    model = colour_model(tmp_path / "colour.onnx")
    out = tmp_path / "run"
    args = ["check", str(model), "--data", str(boxes_root), "--out", str(out), *_classes_set(), *SMALL]
    assert main([*args, "--set", 'robustness.corruptions=["darker", "jpeg"]', "--set", "robustness.draws=4"]) == 0
    err = capsys.readouterr().err
    assert "[colour] robustness: 9 photos, 2 corruptions x severities [1]" in err
    folder = out / "colour"
    rob, faith = artifacts.read_json(folder / "robustness.json"), artifacts.read_json(folder / "faithfulness.json")
    assert rob["inputs"]["onnx_sha256"] == artifacts.sha256_file(model) and rob["spec"]["size"] == [32, 32]
    assert faith["methods"]["occlusion"]["maps_file"] == "occlusion.maps.npz" and faith["images"]["test_boxes"]
    report = artifacts.read_json(out / "report.json")
    by = _by(report)
    # the detector reads the coloured square: hiding it loses the answer, hiding the same shape elsewhere does not
    depends = by["depends_on_object[onnx-colour-test_boxes]"]
    assert depends["status"] == "PASS" and depends["value"] > 0 and not depends["gated"]
    assert "depends_on_object[onnx-colour-test_plain]" not in by  # no regions there
    assert {
        f"robustness[onnx-colour-{s}-{c}]" for s in ("test_boxes", "test_plain") for c in ("darker", "jpeg")
    } <= set(by)
    assert by["faithfulness[onnx-colour-occlusion-test_boxes]"]["status"] in ("PASS", "FAIL")
    sec = report["robustness"]
    assert {r["corruption"] for r in sec["corruption"]} == {"darker", "jpeg"} and sec["masking"][0]["n"] == 4
    assert "robustness.json" in str(report["manifest"]) and 'id="robustness"' in (out / "report.html").read_text()
    assert main(["report", str(out)]) == 0  # the same verdicts again, from the same per-image records
    again = _by(artifacts.read_json(out / "report.json"))
    assert {k: (v["status"], v["value"]) for k, v in again.items() if "robustness" in k or "depends" in k} == {
        k: (v["status"], v["value"]) for k, v in by.items() if "robustness" in k or "depends" in k
    }
