"""harness: a benchmark and acceptance-test harness for image classifiers trained on very small datasets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.version import __version__

__all__ = ["CheckResult", "__version__", "check_model"]


@dataclass(frozen=True)
class CheckResult:
    """What `check_model` found: the overall verdict, the run directory and its report (report.json's content)."""

    verdict: str  # PASS | FAIL | ERROR
    run_dir: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def html(self) -> Path:
        return self.run_dir / "report.html"

    def failures(self) -> list[dict[str, Any]]:
        """The gated verdicts that did not pass (criterion, id, value, threshold, detail)."""
        return [v for v in self.report["verdicts"] if v["gated"] and v["status"] not in ("PASS", "SKIP")]


def check_model(
    model: str | Path,
    data: str | Path = "data/small-book-images",
    spec: str | Path | None = None,
    sets: Sequence[str] = (),
    profile: str = "check",
    thresholds: str | Path | None = None,
    out: str | Path | None = None,
) -> CheckResult:
    """Gate an ONNX image classifier on a labelled dataset, as `harness check MODEL.onnx --data DIR` does.

    `spec` is a TOML file with the model's input/output contract, `sets` KEY=VALUE overrides of it (or of the check
    profile). Raises ConfigError / DataError (harness.config, harness.data) with a message naming the file and field.
    """
    # Imported on first use, not at the top: every `import harness.<module>` runs this file, and harness.check loads
    # torch and the whole pipeline (`harness --version` and `harness doctor` must run without torch).
    from harness.check import check_model as check_onnx_model

    report, run_dir = check_onnx_model(
        Path(model),
        Path(data),
        Path(spec) if spec else None,
        list(sets),
        profile,
        Path(thresholds) if thresholds else None,
        Path(out) if out else None,
    )
    return CheckResult(report["verdict"], Path(run_dir), report)
