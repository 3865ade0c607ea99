"""Issue 27's case table: every hostile or careless case the issue lists (and the extra ones its tests cover), built
in a temp folder from generated data and tiny hand-made models / hand-made run directories, each run through the
real user-facing command; the first relevant output line(s) and the exit code go to a markdown table (--out).

    .venv/bin/python scripts/hostile_cases.py [--out cases.md]   # ~2-4 min on 2 busy cores
    .venv/bin/python scripts/hostile_cases.py --subprocess      # every harness command as its own
                                                                # `.venv/bin/harness` process (slower)

The `harness ...` commands run in this process through harness.cli.main, the console script's own entry point
(`.venv/bin/harness` is `sys.exit(harness.cli.main())`): the same parsing, the same error handling and exit codes,
without importing torch again for each (13 s a time on this machine). The pytest gate always runs as its own
process: `python -m pytest suites/test_gate.py --run-dir RUN -p no:cacheprovider -q`.

Nothing here trains: the runs are hand-made (tests/tiny_run.evidence_run: sealed run.json, a stand-in model.onnx,
export.json, metrics.json with 16 per-image predictions, report.json with its manifest) or real `harness check`
runs of tiny hand-built ONNX graphs (tests/test_check.colour_model, tests/onnx_wrappers.mean_model). Where a
`harness run` case must be refused before training, a guard replaces the training matrix (in-process only): if it
is ever reached the case is reported as a defect instead of training.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
START = time.monotonic()

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--subprocess", action="store_true", help="run every harness command as its own process")
parser.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
parser.add_argument("--out", type=Path, default=Path("hostile-cases.md"), help="where the markdown table goes")
ARGS = parser.parse_args()
OUT_MD = ARGS.out.resolve()

WORK = Path(tempfile.mkdtemp(prefix="cases27-"))
CRASH_LOGS = WORK / "tmp"  # where "unexpected ... (a harness bug)" would write its traceback file: watched
CRASH_LOGS.mkdir()
(WORK / "models").mkdir()
tempfile.tempdir = str(CRASH_LOGS)
os.environ["TMPDIR"] = str(CRASH_LOGS)
os.environ.pop("MLFLOW_TRACKING_URI", None)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import harness.run  # noqa: E402
from harness.cli import main as harness_main  # noqa: E402
from harness.report.build import build_report, write_reports  # noqa: E402
from tests.conftest import COLORS, write_image  # noqa: E402
from tests.onnx_wrappers import harness_like_model, mean_model  # noqa: E402
from tests.test_check import CLASSES as COLOUR_CLASSES  # noqa: E402
from tests.test_check import COLOR, _photo, colour_model  # noqa: E402
from tests.test_compare import CLASSES as REPORT_CLASSES  # noqa: E402
from tests.test_compare import SPLIT, image_name, make_report, save  # noqa: E402
from tests.test_compare_hostile import METRICS_CASES, REPORT_CASES  # noqa: E402
from tests.test_hostile_inputs import SMALL, _check_data, _classes, _gif, _hidden, _inf_on_black_model  # noqa: E402
from tests.tiny_run import AUDIT, EVIDENCE_MODEL, evidence_run  # noqa: E402

BUNDLED = REPO / "data" / "small-book-images"
GATE_CMD = [sys.executable, "-m", "pytest", "suites/test_gate.py", "-p", "no:cacheprovider", "-q", "--run-dir"]


# --- running a command and keeping what it said ------------------------------------------------------------------


class MatrixStarted(RuntimeError):
    pass


def _refuse_training(*a, **k):
    raise MatrixStarted("GUARD: the training matrix started (the refusal did not happen in the preflight)")


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float
    extra: list[str] = field(default_factory=list)  # what the script itself checked afterwards

    @property
    def text(self) -> str:
        return self.err + "\n" + self.out


def hcli(argv: Sequence[str], timeout: int = 240, own_process: bool = False) -> Result:
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    if ARGS.subprocess or own_process:
        p = subprocess.run(
            [str(REPO / ".venv" / "bin" / "harness"), *argv], capture_output=True, text=True, cwd=REPO, timeout=timeout
        )
        return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    out, err = io.StringIO(), io.StringIO()
    saved = harness.run.execute_matrix
    harness.run.execute_matrix = _refuse_training
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = harness_main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except MatrixStarted as exc:
                print(str(exc), file=sys.stderr)
                code = -1
    finally:
        harness.run.execute_matrix = saved
    return Result(code, out.getvalue(), err.getvalue(), time.monotonic() - t0)


def gate(run: Path) -> Result:
    t0 = time.monotonic()
    p = subprocess.run([*GATE_CMD, str(run)], capture_output=True, text=True, cwd=REPO, timeout=300)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


# --- the table ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    group: str
    name: str
    command: str
    result: Result
    needles: tuple[str, ...]  # lines holding any of these are the message; all must appear somewhere
    expect: tuple[int, ...]
    forbid: tuple[str, ...] = ()  # must not appear (e.g. advice that would hurt)
    pick: tuple[str, ...] = ()  # further lines to show, not required

    def lines(self) -> list[str]:
        keys = self.needles + self.pick
        seen: list[str] = []
        all_lines = (self.result.err + "\n" + self.result.out).splitlines()
        for i, line in enumerate(all_lines):
            s = line.strip()
            banner = s.startswith("=")
            s = s.strip("= ") if banner else s  # pytest's banner lines
            if s and any(k in s for k in keys) and s not in seen:
                if not banner and (": error:" in s or s.startswith("harness gate:")):  # goes on over a few lines
                    for more in all_lines[i + 1 : i + 6]:
                        if not more.strip() or more.startswith(("=", "_")):
                            break
                        s += " " + more.strip()
                seen.append(s)
        if not seen:
            first = [ln.strip() for ln in self.result.text.splitlines() if ln.strip()]
            seen = first[:1]
        return seen + self.result.extra

    def ok(self) -> bool:
        t = self.result.text + "\n".join(self.result.extra)
        return (
            self.result.code in self.expect
            and all(n in t for n in self.needles)
            and not any(f in t for f in self.forbid)
            and not any("NOT " in x for x in self.result.extra)
        )

    def defects(self) -> list[str]:
        t = self.result.text
        found = []
        if "Traceback" in t:
            found.append("Traceback in the output")
        if "a harness bug" in t:
            found.append('"a harness bug" in the output')
        if re.search(r"^\S+\.py:\d+: \w*(Error|Exception)\b", t, re.M):  # a pytest long traceback's location line
            found.append("a raw traceback location line")
        if "GUARD: the training matrix started" in t:
            found.append("training started: the refusal was not found in the preflight")
        return found


CASES: list[Case] = []


def short(s: str) -> str:
    s = (
        s.replace(" ".join(SMALL), "$SMALL")
        .replace(str(WORK), "T")
        .replace(str(REPO) + "/", "")
        .replace(sys.executable, "python")
    )
    return s


def add(group, name, command, result, needles, expect, forbid=(), pick=()) -> Case:
    c = Case(group, name, short(command), result, tuple(needles), tuple(expect), tuple(forbid), tuple(pick))
    CASES.append(c)
    log = WORK / "logs" / f"{len(CASES):03d}.txt"
    log.parent.mkdir(exist_ok=True)
    log.write_text(f"{c.command}\nexit {result.code}\n--- stderr\n{result.err}\n--- stdout\n{result.out}")
    mark = "ok " if c.ok() else "UNEXPECTED"
    print(f"[{time.monotonic() - START:6.1f}s] {mark} {c.result.code:>3} {group} / {name} ({c.result.seconds:.1f}s)")
    if not c.ok() or c.defects():
        print("    " + short(c.result.text.strip())[-1500:].replace("\n", "\n    "))
    return c


def H(*argv, own_process: bool = False) -> tuple[str, Result]:
    """(the command line as a user types it, what it did)."""
    return "harness " + " ".join(str(a) for a in argv), hcli(argv, own_process=own_process)


def G(run: Path) -> tuple[str, Result]:
    return "python -m pytest suites/test_gate.py -p no:cacheprovider -q --run-dir " + str(run), gate(run)


# --- hand-made runs and edits -------------------------------------------------------------------------------------


def fresh(name: str, *, soft_k=15, strict_k=12, report=True, thresholds=None, audit=True) -> Path:
    """tests/tiny_run.evidence_run (a sealed run.json, one model's config.json, stand-in model.onnx, export.json,
    metrics.json of 16 per-image predictions), plus the data audit of a run without a training set (SKIP verdicts,
    as tests/test_tamper._hashed_run writes it), then report.json with its manifest (`report`)."""
    run = WORK / "runs" / name
    evidence_run(run, soft_k=soft_k, strict_k=strict_k, report=False, thresholds=thresholds)
    if audit:
        (run / "audit.json").write_text(json.dumps(AUDIT))
    if report:
        write_reports(run, build_report(run))
    return run


def metrics_path(run: Path) -> Path:
    return run / EVIDENCE_MODEL / "metrics.json"


def edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def summary_to_pass(m: dict) -> None:
    for kind in ("soft", "strict"):
        m["test_sets"]["test_difficult"][kind]["value"] = 1.0


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def colour_data(root: Path, per_class: int = 2) -> Path:
    """train/<class>/ (names the classes for harness check) and test_plain/<class>/, a coloured square per photo."""
    for i, c in enumerate(COLOUR_CLASSES):
        _photo(root / "train" / c / f"{c}.png", COLOR.get(c), (10, 10, 20, 20), i)
        for k in range(per_class):
            _photo(root / "test_plain" / c / f"p_{c}_{k}.png", COLOR.get(c), (30, 20, 22, 22), 50 + 10 * i + k)
    return root


def colour_classes() -> list[str]:
    return ["--set", "classes=[" + ", ".join(f'"{c}"' for c in COLOUR_CLASSES) + "]"]


def tiny_data(root: Path, per_class: int = 5) -> Path:
    """tests/conftest.tiny_root: ImageFolder train (3 classes x per_class) and test_plain (1 per class)."""
    for cls, color in COLORS.items():
        for i in range(per_class):
            write_image(root / "train" / cls / f"{cls}_{i}.jpg", color, seed=i)
        write_image(root / "test_plain" / cls / f"t_{cls}.jpg", color, seed=99)
    return root


def huge_png(path: Path, w: int, h: int) -> Path:
    """A valid greyscale PNG of w x h black pixels, written row by row (never held in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ================================================================================================================
# 1. the silent lies: a FAILing (chance-level, 8 of 16) model gated with soft_min 0.9, its evidence edited
# ================================================================================================================

S = "1 summary edits"
base_fail = fresh("fail", soft_k=8, strict_k=8)  # hand-made, sealed, report.json FAIL with its manifest
edited = fresh("fail-edited", soft_k=8, strict_k=8)
edit_json(metrics_path(edited), summary_to_pass)
cmd, r = H("report", edited)
add(
    S,
    "metrics.json soft/strict value 0.5 -> 1.0; harness report",
    cmd,
    r,
    ["REFUSED " + EVIDENCE_MODEL + "/metrics.json: changed since the report", "refused"],
    [1],
)
cmd, r = H("verify", edited)
add(S, "same edit; harness verify", cmd, r, [EVIDENCE_MODEL + "/metrics.json: changed since the report"], [1])
cmd, r = H("verify", edited, own_process=True)
add(
    S,
    "same, as its own process (.venv/bin/harness: the console script gives the same)",
    cmd,
    r,
    [EVIDENCE_MODEL + "/metrics.json: changed since the report"],
    [1],
)
cmd, r = H("compare", base_fail, edited)
add(S, "same edit; harness compare BASE EDITED", cmd, r, ["metrics.json changed since this report was written"], [2])
gate_edited = edited  # the gate runs later (its own processes)

noreport = WORK / "runs" / "fail-edited-noreport"
shutil.copytree(edited, noreport)
(noreport / "report.json").unlink()
for leftover in ("report.html", "summary.md"):
    (noreport / leftover).unlink(missing_ok=True)
cmd, r = H("report", noreport)
add(
    S,
    "same edit, report.json deleted (no manifest); harness report",
    cmd,
    r,
    ["soft.value = 1.0 but", "verdict: ERROR"],
    [1],
    pick=["ERROR  GATE accuracy"],
)
cmd, r = H("compare", base_fail, noreport)
add(
    S,
    "harness compare BASE against the report harness report rewrote",
    cmd,
    r,
    ["REGRESSION"],
    [1],
    forbid=["FAIL -> PASS"],
    pick=["accuracy", "ERROR"],
)

inf = fresh("fail-inf", soft_k=8, strict_k=8, report=False)
edit_json(metrics_path(inf), lambda m: m["test_sets"]["test_difficult"]["soft"].__setitem__("value", float("inf")))
cmd, r = H("report", inf)
add(
    S,
    "soft.value = Infinity (no report yet); harness report",
    cmd,
    r,
    ["inf is not a finite number", "verdict: ERROR"],
    [1],
)

nopred = fresh("pass-nopred", report=False)
edit_json(metrics_path(nopred), lambda m: m["test_sets"]["test_difficult"].pop("predictions"))
cmd, r = H("report", nopred)
add(
    S,
    "predictions removed from a PASSing metrics.json; harness report",
    cmd,
    r,
    ["predictions", "verdict: ERROR"],
    [1],
    pick=["ERROR  GATE accuracy"],
)


def all_correct(m: dict) -> None:
    for p in m["test_sets"]["test_difficult"]["predictions"]:
        p["soft_correct"] = p["strict_correct"] = True


flags = fresh("fail-flags", soft_k=8, strict_k=8, report=False)
edit_json(metrics_path(flags), all_correct)
cmd, r = H("report", flags)
add(
    S,
    "every soft_correct/strict_correct flag set True (answers unchanged); harness report",
    cmd,
    r,
    ["soft_correct = True but", "verdict: ERROR"],
    [1],
)

bl = fresh("pass-baseline", report=False)
edit_json(
    metrics_path(bl),
    lambda m: m["test_sets"]["test_difficult"]["baselines"]["constant_soft"].__setitem__("value", -0.5),
)
cmd, r = H("report", bl)
add(S, "baseline constant_soft = -0.5; harness report", cmd, r, ["is not a number in [0, 1]", "verdict: ERROR"], [1])

# --- a real `harness check` run of a constant model (FAIL), its metrics.json edited, the same check rerun ---------
colour = colour_data(WORK / "data-colour")
const = colour_model(WORK / "models" / "const.onnx", constant=True)
CHECK_OUT = WORK / "runs" / "check-const"
check_argv = ["check", const, "--data", colour, "--out", CHECK_OUT, *colour_classes(), *SMALL]
cmd, r = H(*check_argv)
add(
    S,
    "real harness check of a constant-answer model (the base: FAIL)",
    cmd,
    r,
    ["verdict: FAIL"],
    [1],
    pick=["test_plain: soft"],
)
real_metrics = next(CHECK_OUT.glob("*/metrics.json"))
truth = json.loads(real_metrics.read_text())["test_sets"]["test_plain"]["soft"]["value"]
edit_json(
    real_metrics, lambda m: [m["test_sets"]["test_plain"][k].__setitem__("value", 1.0) for k in ("soft", "strict")]
)
cmd, r = H(*check_argv)
again = json.loads(real_metrics.read_text())["test_sets"]["test_plain"]["soft"]["value"]
r.extra.append(
    f"(metrics.json soft.value after the rerun: {again:.4g}, "
    + ("recomputed" if again == truth else "NOT recomputed")
    + ")"
)
add(
    S,
    "its metrics.json edited to 1.0, the same harness check rerun",
    cmd,
    r,
    ["verdict: FAIL"],
    [1],
    forbid=["metrics.json is current, skipping"],
    pick=["edited", "stale", "test_plain: soft"],
)
cmd, r = H("verify", CHECK_OUT)
add(S, "harness verify of that rerun check run", cmd, r, ["verified"], [0])

# ================================================================================================================
# 2. the model on disk, run.json and the manifest: harness verify / harness report
# ================================================================================================================

V = "2 model, run.json, manifest"
clean = fresh("pass-clean")
cmd, r = H("verify", clean)
add(V, "clean hand-made PASS run; harness verify", cmd, r, ["verified"], [0])
cmd, r = H("report", clean)
add(V, "clean PASS run; harness report", cmd, r, ["verdict: PASS"], [0])
clean = fresh("pass-clean2")  # a run the gate judges later, untouched by harness report above

swapped = fresh("pass-model-swapped")
(swapped / EVIDENCE_MODEL / "model.onnx").write_bytes(b"another model" * 100)
cmd, r = H("verify", swapped)
add(
    V,
    "model.onnx replaced by another file; harness verify",
    cmd,
    r,
    [EVIDENCE_MODEL + "/model.onnx: changed since the report was written"],
    [1],
)
cmd, r = H("report", swapped)
add(V, "model.onnx replaced; harness report", cmd, r, ["REFUSED " + EVIDENCE_MODEL + "/model.onnx"], [1])
swapped_noreport = WORK / "runs" / "pass-model-swapped-noreport"
shutil.copytree(swapped, swapped_noreport)
(swapped_noreport / "report.json").unlink()
cmd, r = H("report", swapped_noreport)
add(
    V,
    "model.onnx replaced, report.json deleted; harness report",
    cmd,
    r,
    ["is not the model metrics.json was computed from", "verdict: ERROR"],
    [1],
)
gone = fresh("pass-model-deleted", report=False)
(gone / EVIDENCE_MODEL / "model.onnx").unlink()
cmd, r = H("report", gone)
add(V, "model.onnx deleted (no report yet); harness report", cmd, r, ["model.onnx is missing", "verdict: ERROR"], [1])

for fname, how in (("export.json", "edited"), ("config.json", "edited"), ("metrics.json", "deleted")):
    run = fresh(f"pass-{fname}-{how}")
    p = run / EVIDENCE_MODEL / fname
    if how == "edited":
        edit_json(p, lambda d: d.__setitem__("note", "by hand"))
    else:
        p.unlink()
    cmd, r = H("verify", run)
    add(V, f"{fname} {how}; harness verify", cmd, r, [f"{EVIDENCE_MODEL}/{fname}"], [1])

added = fresh("pass-added")
(added / EVIDENCE_MODEL / "cam.json").write_text(json.dumps({"summary": {}, "images": {}}))
cmd, r = H("verify", added)
add(V, "a cam.json added after the report; harness verify", cmd, r, [f"{EVIDENCE_MODEL}/cam.json"], [1])
cmd, r = H("report", added)
add(V, "same; harness report", cmd, r, [f"REFUSED {EVIDENCE_MODEL}/cam.json: added"], [1])

note = fresh("pass-runjson-note")
edit_json(note / "run.json", lambda d: d.__setitem__("note", "edited"))
cmd, r = H("verify", note)
add(
    V,
    "run.json edited (a key no verdict reads); harness verify",
    cmd,
    r,
    ["run.json: changed since the report was written"],
    [1],
)
(note / "report.json").unlink()
cmd, r = H("verify", note)
add(V, "report.json deleted; harness verify", cmd, r, ["no manifest to verify against"], [1])

# --- the protocol: gated set edited, models removed ---------------------------------------------------------------
ungated = fresh("fail-ungated", soft_k=8, strict_k=8)
edit_json(ungated / "run.json", lambda d: d["thresholds"].__setitem__("gated", []))
cmd, r = H("verify", ungated)
add(
    V,
    "FAIL run, run.json thresholds.gated -> []; harness verify",
    cmd,
    r,
    ["run.json: changed since the report", "thresholds.gated (the gated models) no longer matches"],
    [1],
)
cmd, r = H("report", ungated)
add(V, "same; harness report", cmd, r, ["REFUSED run.json: changed since the report was written"], [1])
ungated_gate = WORK / "runs" / "fail-ungated-gate"
shutil.copytree(ungated, ungated_gate)
(ungated / "report.json").unlink()
cmd, r = H("report", ungated)
add(
    V,
    "same, report.json deleted (the seal still tells); harness report",
    cmd,
    r,
    ["verdict: ERROR", "ERROR GATE protocol[run]"],
    [1],
    pick=["the thresholds in force gate nothing"],
)

tfile = WORK / "ungated.toml"
tfile.write_text("[thresholds]\ngated = []\n")
viaflag = fresh("fail-ungated-flag", soft_k=8, strict_k=8)
cmd, r = H("report", viaflag, "--thresholds", tfile)
add(
    V,
    "FAIL run; harness report --thresholds (gated = [])",
    cmd,
    r,
    ["verdict: ERROR", "ERROR GATE protocol[run]"],
    [1],
    pick=["gate nothing"],
)

emptied = fresh("fail-emptied", soft_k=8, strict_k=8)
shutil.rmtree(emptied / EVIDENCE_MODEL)
edit_json(emptied / "run.json", lambda d: d.__setitem__("variants", []))
emptied_gate = WORK / "runs" / "fail-emptied-gate"
shutil.copytree(emptied, emptied_gate)
cmd, r = H("verify", emptied)
add(
    V,
    "model folder deleted, run.json variants -> []; harness verify",
    cmd,
    r,
    ["variants no longer matches", "judges no model at all"],
    [1],
)
(emptied / "report.json").unlink()
cmd, r = H("report", emptied)
add(V, "same, report.json deleted; harness report", cmd, r, ["gates variant 'imagenet-all'"], [2])
edit_json(emptied / "run.json", lambda d: d["thresholds"].__setitem__("gated", []))
cmd, r = H("report", emptied)
add(
    V,
    "same, and thresholds.gated -> [] too; harness report",
    cmd,
    r,
    ["verdict: ERROR", "ERROR GATE protocol[run]"],
    [1],
    pick=["no longer match"],
)
unsealed = fresh("fail-unsealed-empty", soft_k=8, strict_k=8, report=False)
shutil.rmtree(unsealed / EVIDENCE_MODEL)
edit_json(
    unsealed / "run.json",
    lambda d: (d.pop("seal"), d.__setitem__("variants", []), d["thresholds"].__setitem__("gated", [])),
)
cmd, r = H("report", unsealed)
add(
    V,
    "an unsealed run.json (older harness) judging no model; harness report",
    cmd,
    r,
    ["verdict: ERROR"],
    [1],
    pick=["judges no model", "protocol"],
)

made_ungated = fresh("fail-made-ungated", soft_k=8, strict_k=8, thresholds={"gated": []})
cmd, r = H("report", made_ungated)
add(V, "a run made without a gated model (control); harness report", cmd, r, ["verdict: UNGATED"], [0])

# ================================================================================================================
# 3. compare
# ================================================================================================================

C = "3 compare"
cmd, r = H("compare", base_fail, base_fail)
add(C, "harness compare A A", cmd, r, ["both sides are one run"], [0])
copy_of = WORK / "runs" / "fail-copy"
shutil.copytree(base_fail, copy_of)
cmd, r = H("compare", base_fail, copy_of)
add(C, "harness compare A COPY-OF-A", cmd, r, ["both sides are one run", "identical manifests"], [0])
other = fresh("pass-other", soft_k=14)
cmd, r = H("compare", base_fail, other)
add(C, "harness compare of two different runs (control)", cmd, r, ["compare:"], [0, 1], forbid=["one run"])

hand = save(make_report(), WORK / "reports" / "hand")
cls = save(make_report(classes=REPORT_CLASSES[:-1] + ["other"]), WORK / "reports" / "classes")
cmd, r = H("compare", hand, cls)
add(C, "handmade reports with different classes", cmd, r, ["classes"], [2])
imgs = make_report()
for entry in imgs["variants"].values():
    entry["test_sets"][SPLIT]["predictions"][3]["image"] = f"{SPLIT}/someone_else.jpg"
imgs_dir = save(imgs, WORK / "reports" / "images")
cmd, r = H("compare", hand, imgs_dir)
add(C, "handmade reports, different test images", cmd, r, ["someone_else.jpg", image_name(3)], [2])
fp = save(make_report(fingerprint="0" * 64), WORK / "reports" / "fingerprint")
cmd, r = H("compare", hand, fp)
add(C, "handmade reports, different test-set fingerprint", cmd, r, ["fingerprint"], [2])
split = save(make_report(split="test_easy"), WORK / "reports" / "split")
cmd, r = H("compare", hand, split)
add(C, "handmade reports, no common test set", cmd, r, ["no common test set"], [2])
empty = WORK / "reports" / "empty"
empty.mkdir()
cmd, r = H("compare", hand, empty)
add(C, "a folder without report.json", cmd, r, ["harness report"], [2])
cmd, r = H("compare", hand, fresh("pass-for-compare"))
add(C, "a handmade report against a hand-made run (other classes)", cmd, r, ["harness compare: error"], [2])

for case, edit, key in REPORT_CASES:
    bad = copy.deepcopy(make_report())
    edit(bad)
    new = save(bad, WORK / "reports" / ("bad-" + re.sub(r"\W+", "-", case)))
    cmd, r = H("compare", hand, new)
    lines = r.err.strip().splitlines()
    if len(lines) != 1:
        r.extra.append(f"(NOT one line: {len(lines)} lines)")
    add(C, f"wrong-shaped report.json: {case}", cmd, r, [key], [2], forbid=["unexpected"])

# ================================================================================================================
# 4. wrong-shaped metrics.json: harness report (and compare of the report it writes)
# ================================================================================================================

M = "4 wrong-shaped metrics.json"
good_for_shapes = fresh("pass-good-shapes")
for i, (case, edit, key) in enumerate(METRICS_CASES):
    run = fresh("shape-" + re.sub(r"\W+", "-", case), report=False)
    edit_json(metrics_path(run), edit)
    cmd, r = H("report", run)
    errs = [v["detail"] for v in json.loads((run / "report.json").read_text())["verdicts"] if v["status"] == "ERROR"]
    hit = next((x for x in errs if "metrics.json" in x and key in x), None)
    r.extra.append("verdict detail: " + (hit if hit else "NOT found: " + key))
    add(M, f"{case}; harness report", cmd, r, ["verdict: ERROR"], [1], forbid=["unexpected"])
    if i in (0, 5):
        cmd, r = H("compare", good_for_shapes, run)
        add(M, f"{case}; harness compare GOOD THAT", cmd, r, ["compare: REGRESSION"], [1], forbid=["unexpected"])
    if i == 0:
        shape_gate = run

# ================================================================================================================
# 5. hostile inputs to harness run / check / audit
# ================================================================================================================

I = "5 hostile inputs"
tiny = tiny_data(WORK / "data-tiny")
typo = WORK / "typo.toml"
typo.write_text("[thresholds.accuracy.test_difficlut]\nsoft_min = 0.99\n")
cmd, r = H("run", "--profile", "smoke", "--thresholds", typo, "--data", BUNDLED, "--out", WORK / "runs" / "typo-run")
add(
    I,
    "thresholds file naming test_difficlut, bundled dataset; harness run",
    cmd,
    r,
    ["did you mean 'test_difficult'"],
    [2],
    forbid=["not applied"],
)
cmd, r = H("report", base_fail, "--thresholds", typo)
add(I, "same file; harness report", cmd, r, ["test_difficlut"], [2], pick=["did you mean"])
plain = _check_data(WORK / "data-plain")
m_onnx = mean_model(WORK / "models" / "m.onnx")
typo2 = WORK / "typo2.toml"
typo2.write_text("[thresholds.accuracy.test_plian]\nsoft_min = 0.99\n")
cmd, r = H("check", m_onnx, "--data", plain, *_classes(), "--thresholds", typo2, "--out", WORK / "runs" / "typo-chk")
add(I, "thresholds file naming test_plian; harness check", cmd, r, ["did you mean 'test_plain'"], [2])
cam_typo = WORK / "camtypo.toml"
cam_typo.write_text('[thresholds.cam]\nsplit = "test_plian"\n')
cmd, r = H(
    "run",
    "--profile",
    "smoke",
    "--variants",
    "scratch-none",
    "--data",
    tiny,
    "--thresholds",
    cam_typo,
    "--out",
    WORK / "runs" / "camtypo-run",
)
add(I, "thresholds [cam] split = test_plian; harness run", cmd, r, ["did you mean 'test_plain'"], [2])

trun = WORK / "runs" / "training-run"
(trun / "vgg16-scratch-none-s0").mkdir(parents=True)
(trun / "run.json").write_text(json.dumps({"profile": {"name": "smoke"}, "variants": ["scratch-none"]}))
(trun / "vgg16-scratch-none-s0" / "config.json").write_text(json.dumps({"variant": "scratch-none"}))
before = files_of(trun)
cmd, r = H("check", m_onnx, "--data", plain, *_classes(), *SMALL, "--out", trun)
r.extra.append("(the training run " + ("left unchanged)" if files_of(trun) == before else "was NOT left unchanged)"))
add(I, "harness check --out onto a training run", cmd, r, ["harness run", "--out"], [2])
before = files_of(CHECK_OUT)
other_model = colour_model(WORK / "models" / "colour.onnx")
cmd, r = H("check", other_model, "--data", colour, "--out", CHECK_OUT, *colour_classes(), *SMALL)
r.extra.append(
    "(the earlier check " + ("left unchanged)" if files_of(CHECK_OUT) == before else "was NOT left unchanged)")
)
add(I, "harness check --out reused for another model", cmd, r, ["const.onnx", "another --out"], [2])
before = files_of(plain)
cmd, r = H("check", m_onnx, "--data", plain, *_classes(), *SMALL, "--out", plain)
r.extra.append("(the dataset " + ("left unchanged)" if files_of(plain) == before else "was NOT left unchanged)"))
add(I, "harness check --out equal to --data", cmd, r, ["--data"], [2])
cmd, r = H("check", m_onnx, "--data", plain, *_classes(), *SMALL, "--out", plain / "test_plain" / "out")
add(I, "harness check --out inside --data", cmd, r, ["--data"], [2])

one = WORK / "data-one"
for k, c in enumerate(("a", "b", "c")):
    write_image(one / "train" / c / f"{c}.jpg", (70 * k, 60, 90), seed=k)
    write_image(one / "test_plain" / c / f"t_{c}.jpg", (70 * k, 60, 90), seed=10 + k)
cmd, r = H("run", "--profile", "smoke", "--variants", "scratch-none", "--data", one, "--out", WORK / "runs" / "one")
add(I, "one training photo per class; harness run", cmd, r, ["1 photo", "validation"], [2])

foreign = WORK / "resnet.pth"
torch.save({"conv1.weight": torch.zeros(2_200_000), "fc.weight": torch.zeros(10, 4)}, foreign)  # 8.8 MB
cmd, r = H(
    "run",
    "--profile",
    "smoke",
    "--backbone",
    "efficientnet_lite0",
    "--variants",
    "imagenet-none",
    "--data",
    tiny,
    "--weights-file",
    foreign,
    "--out",
    WORK / "runs" / "foreign",
)
add(I, "--weights-file: an 8.8 MB torch file of another architecture (lite0)", cmd, r, ["resnet.pth"], [2])

huge_onnx = mean_model(WORK / "models" / "huge.onnx", input_shape=("N", 3, 100000, 100000))
cmd, r = H("check", huge_onnx, "--data", plain, *_classes(), *SMALL, "--out", WORK / "runs" / "huge-in")
add(I, "ONNX input declared 100000 x 100000; harness check", cmd, r, ["100000 x 100000"], [2])

black = _check_data(WORK / "data-black")
Image.new("RGB", (40, 32), (0, 0, 0)).save(black / "test_plain" / "c" / "c_black.png")
inf_onnx = _inf_on_black_model(WORK / "models" / "inf.onnx")
cmd, r = H("check", inf_onnx, "--data", black, *_classes(), *SMALL, "--out", WORK / "runs" / "inf-out")
add(
    I,
    "model output infinite on one later photo (all-black); harness check",
    cmd,
    r,
    ["test_plain/c/c_black.png", "NaN or infinite"],
    [2],
    forbid=["test_plain: soft"],
)

trunc = _check_data(WORK / "data-trunc")
cut = trunc / "test_plain" / "a" / "cut.jpg"
Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cut)
cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
cmd, r = H("check", m_onnx, "--data", trunc, *_classes(), *SMALL, "--out", WORK / "runs" / "trunc-out")
add(I, "a truncated JPEG in the test set; harness check", cmd, r, ["cut.jpg"], [2])
cmd, r = H("audit", "--data", trunc, "--out", WORK / "runs" / "trunc-audit")
add(I, "same dataset; harness audit", cmd, r, ["cut.jpg"], [2])
garbage = _check_data(WORK / "data-garbage")
(garbage / "test_plain" / "b" / "b_9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)
cmd, r = H("check", m_onnx, "--data", garbage, *_classes(), *SMALL, "--out", WORK / "runs" / "garbage-out")
add(I, "a corrupt PNG (valid signature, garbage body); harness check", cmd, r, ["b_9.png"], [2])
txt = _check_data(WORK / "data-txt")
(txt / "test_plain" / "a" / "notes.txt").write_text("shot on a phone")
cmd, r = H("check", m_onnx, "--data", txt, *_classes(), *SMALL, "--out", WORK / "runs" / "txt-out")
add(I, "a text file in a test class folder; harness check", cmd, r, ["notes.txt", "not an image"], [2])
bomb = _check_data(WORK / "data-bomb")
huge_png(bomb / "test_plain" / "a" / "huge.png", 20000, 10000)  # 200 Mpx, 0.2 MB on disk
cmd, r = H("check", m_onnx, "--data", bomb, *_classes(), *SMALL, "--out", WORK / "runs" / "bomb-out")
add(I, "a 20000 x 10000 px PNG (decompression-bomb size) in the test set; harness check", cmd, r, ["huge.png"], [2])

gifs = _check_data(WORK / "data-gif")
_gif(gifs / "test_plain" / "a" / "moving.gif")
_hidden(gifs / "test_plain" / "a")
cmd, r = H("check", m_onnx, "--data", gifs, *_classes(), *SMALL, "--out", WORK / "runs" / "gif-out")
add(
    I,
    "an animated GIF + .x.png, ._p0.png, .DS_Store in a test class; harness check",
    cmd,
    r,
    ["ignored 3 hidden files", "n=7"],
    [0, 1],
)

cmd, r = H(
    "check",
    WORK / "models" / "vendor-missing.onnx",
    "--data",
    plain,
    *_classes(),
    "--out",
    WORK / "runs" / "missing-model",
)
add(
    I,
    "a missing foreign model; harness check",
    cmd,
    r,
    ["vendor-missing.onnx"],
    [2],
    forbid=["harness export", "delete", "Delete"],
)
corrupt = WORK / "models" / "vendor.onnx"
corrupt.write_bytes(b"\x08\x07" + b"garbage" * 50)
cmd, r = H("check", corrupt, "--data", plain, *_classes(), "--out", WORK / "runs" / "corrupt-model")
add(
    I,
    "a corrupt foreign model; harness check",
    cmd,
    r,
    ["vendor.onnx"],
    [2],
    forbid=["harness export", "delete", "Delete"],
)

meta = harness_like_model(WORK / "models" / "h.onnx", ("a", "b", "c"), exporter="torchscript")
proto = onnx.load(str(meta))
for p in proto.metadata_props:
    if p.key == "harness.classes":
        p.value = "a, b, c"  # not a JSON list
onnx.save(proto, str(meta))
cmd, r = H("check", meta, "--data", plain, *SMALL, "--out", WORK / "runs" / "meta-bad")
add(I, "broken harness.classes metadata, no classes given; harness check", cmd, r, ["classes = "], [2])
cmd, r = H("check", meta, "--data", plain, *_classes(), *SMALL, "--out", WORK / "runs" / "meta-fixed")
add(I, "same model, --set classes=[...] as the message says; harness check", cmd, r, ["verdict:"], [0, 1])

single = _check_data(WORK / "data-single", test_classes=("b",), per_class=3)
cmd, r = H("check", m_onnx, "--data", single, *_classes(), *SMALL, "--out", WORK / "runs" / "single")
add(
    I,
    "a single-class test set (constant answer scores 1.0); harness check",
    cmd,
    r,
    ["cannot be judged above the constant answer"],
    [1],
    pick=["verdict:"],
)

# ================================================================================================================
# 6. the pytest gate (each its own process)
# ================================================================================================================

P = "6 pytest gate"
cmd, r = G(clean)
add(P, "clean hand-made PASS run", cmd, r, ["passed", "harness gate: PASS"], [0])
cmd, r = G(gate_edited)
add(
    P,
    "FAIL run, metrics.json summary edited to 1.0",
    cmd,
    r,
    ["metrics.json: changed since the report"],
    [2],
    pick=["harness gate:", "Interrupted"],
)
gate_noreport = WORK / "runs" / "gate-edited-noreport"
shutil.copytree(noreport, gate_noreport)
(gate_noreport / "report.json").unlink()
cmd, r = G(gate_noreport)
add(P, "same edit, report.json deleted", cmd, r, ["soft.value = 1.0 but"], [1], pick=[" failed, ", "harness gate:"])
cmd, r = G(swapped)
add(P, "PASS run, model.onnx replaced", cmd, r, ["model.onnx: changed since the report"], [2], pick=["harness gate:"])
cmd, r = G(ungated_gate)
add(P, "FAIL run, run.json gated -> []", cmd, r, ["run.json: changed since the report"], [2], pick=["harness gate:"])
emptied_noreport = WORK / "runs" / "gate-emptied-noreport"
shutil.copytree(emptied_gate, emptied_noreport)
(emptied_noreport / "report.json").unlink()
edit_json(emptied_noreport / "run.json", lambda d: d["thresholds"].__setitem__("gated", []))
cmd, r = G(emptied_noreport)
add(
    P,
    "model folder deleted, variants and gated -> [], no report.json",
    cmd,
    r,
    ["FAILED suites/test_gate.py::test_protocol[run]"],
    [1],
    pick=["ERROR (evidence missing", " failed, ", "harness gate:"],
)
locked = fresh("pass-locked")
holder = subprocess.Popen(["sleep", "600"])  # a live process of this machine holds the lock (not this one: the
try:  # in-process harness commands would take a lock held by their own pid as theirs)
    (locked / ".harness.lock").write_text(
        json.dumps(
            {
                "pid": holder.pid,
                "host": os.uname().nodename,
                "command": "harness run --out " + str(locked),
                "started": "2025-01-01T00:00:00+00:00",
            }
        )
    )
    cmd, r = G(locked)
    add(
        P,
        "PASS run locked by a live harness process (a run still training)",
        cmd,
        r,
        ["is locked by", str(holder.pid)],
        [2],
    )
    cmd, r = H("report", locked)
    add(P, "same locked run; harness report", cmd, r, ["in use by harness pid " + str(holder.pid)], [2])
finally:
    holder.kill()
    holder.wait()
incomplete = fresh("pass-incomplete", report=False)
(incomplete / EVIDENCE_MODEL / "metrics.json").unlink()
cmd, r = G(incomplete)
add(
    P,
    "incomplete run (metrics.json missing, no report yet)",
    cmd,
    r,
    ["FAILED suites/test_gate.py::test_accuracy", "harness gate: ERROR"],
    [1],
    forbid=["xfail", "XFAIL"],
    pick=[" failed, "],
)
noaudit = fresh("pass-noaudit", audit=False)
cmd, r = G(noaudit)
add(
    P,
    "a PASS run without audit.json (the audit evidence missing)",
    cmd,
    r,
    ["FAILED suites/test_gate.py::test_label_suspects", "harness gate:"],
    [1],
    pick=[" failed, "],
)
cmd, r = H("report", noaudit)
add(
    P,
    "same run; harness report (the audit ablations ERROR, the verdict PASS)",
    cmd,
    r,
    ["verdict: PASS"],
    [0],
    pick=["ablations:"],
)
cmd, r = G(shape_gate)
add(
    P,
    "wrong-shaped metrics.json (null summary)",
    cmd,
    r,
    ["soft.k = None is not a finite number"],
    [1],
    pick=[" failed, ", "harness gate:"],
)

# ================================================================================================================
# the table
# ================================================================================================================

crash_logs = sorted(CRASH_LOGS.glob("harness-error-*.log"))
elapsed = time.monotonic() - START


def cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def trim(s: str, n: int = 160) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


rows = []
for c in CASES:
    msg = " ⏎ ".join(short(x) for x in c.lines())
    flag = "" if c.ok() else " **UNEXPECTED**"
    if c.defects():
        flag += " **DEFECT: " + ", ".join(c.defects()) + "**"
    rows.append(
        f"| {cell(c.group + ': ' + c.name)} | `{cell(trim(c.command, 200))}` | {cell(trim(msg))}{flag} "
        f"| {c.result.code} |"
    )
defects = [(c, d) for c in CASES for d in c.defects()]
unexpected = [c for c in CASES if not c.ok()]
mode = (
    "each `harness` command as its own process"
    if ARGS.subprocess
    else (
        "`harness` commands in-process through `harness.cli.main` (the console script's entry point); the pytest gate "
        "as its own process"
    )
)
md = [
    "# Issue 27: case -> message -> exit code",
    "",
    f"Built by `cd {REPO} && .venv/bin/python {Path(__file__).resolve()}` "
    f"({'--subprocess, ' if ARGS.subprocess else ''}{len(CASES)} cases, {elapsed:.0f} s; {mode}). "
    "`T` is the script's temp folder. Exit codes: 0 PASS/OK, 1 FAIL/ERROR/refused evidence/regression, "
    "2 user error (one line, nothing written). A message is the output line(s) holding the case's key text, "
    "trimmed to 160 characters; ⏎ separates lines. "
    f"`$SMALL` is `{' '.join(SMALL)}` (tests/test_hostile_inputs.SMALL: a cheap check).",
    "",
    "| case | command | message | exit code |",
    "|---|---|---|---|",
    *rows,
    "",
    f"Cases not as expected (exit code or key text): {len(unexpected)}"
    + ("" if not unexpected else ": " + "; ".join(c.name for c in unexpected)),
    f"Defects (Traceback / 'a harness bug' / raw traceback / training started): {len(defects)}"
    + ("" if not defects else ": " + "; ".join(f"{c.name}: {d}" for c, d in defects)),
    f"Traceback files left in the temp folder (harness-error-*.log): {len(crash_logs)}",
    "",
]
OUT_MD.write_text("\n".join(md), encoding="utf-8")
print(
    f"\n{len(CASES)} cases in {elapsed:.0f} s; unexpected {len(unexpected)}; defects {len(defects)}; "
    f"crash logs {len(crash_logs)} -> {OUT_MD}"
)
if ARGS.keep:
    print(f"kept {WORK}")
else:
    shutil.rmtree(WORK, ignore_errors=True)
sys.exit(1 if (unexpected or defects or crash_logs) else 0)
