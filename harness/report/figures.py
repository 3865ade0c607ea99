"""The report's matplotlib figures as PNG bytes: training curves, reliability diagram with risk-coverage curve."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from harness.report.format import is_num


def curves_png(runs: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch, seeds overlaid (solid train, dashed validation), phase boundaries marked."""
    histories = [(r.get("seed"), [h for h in (r.get("history") or []) if isinstance(h, Mapping)]) for r in runs]
    histories = [(s, h) for s, h in histories if h]
    if not histories:
        return None

    fig = Figure(figsize=(7.4, 3.0), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for ax, (train_key, val_key, title) in zip(
        axes, (("loss", "val_loss", "loss"), ("accuracy", "val_accuracy", "accuracy"))
    ):
        for i, (seed, hist) in enumerate(histories):
            c = colours[i % len(colours)]
            marker = "o" if len(hist) <= 30 else None
            for key, style, what in ((train_key, "-", "train"), (val_key, "--", "validation")):
                pts = [(x, h.get(key)) for x, h in enumerate(hist, 1) if is_num(h.get(key))]
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        color=c,
                        marker=marker,
                        markersize=3,
                        linewidth=1.2,
                        label=f"s{seed} {what}",
                    )
        # phase boundaries of the first seed (the same for every seed unless a phase stopped early)
        _, hist = histories[0]
        start, phase = 1, hist[0].get("phase")
        spans = []
        for x, h in enumerate(hist[1:], 2):
            if h.get("phase") != phase:
                spans.append((start, x - 1, phase))
                start, phase = x, h.get("phase")
        spans.append((start, len(hist), phase))
        for j, (a, b, name) in enumerate(spans):
            if j:
                ax.axvline(a - 0.5, color="#555", linestyle=":", linewidth=1)
            if name:
                ax.text(
                    (a + b) / 2,
                    1.0,
                    str(name),
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="#333",
                )
        n_epochs = max(len(h) for _, h in histories)
        if n_epochs <= 10:
            ax.set_xticks(range(1, n_epochs + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10, pad=14)
        if title == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0.5, n_epochs + 0.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    # compact legend: one colour per seed, solid = training split, dashed = validation split
    handles = [
        Line2D([], [], color=colours[i % len(colours)], linewidth=2, label=f"seed {seed}")
        for i, (seed, _) in enumerate(histories)
    ]
    handles += [
        Line2D([], [], color="#444", linestyle="-", label="train"),
        Line2D([], [], color="#444", linestyle="--", label="validation"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.27, top=0.85, wspace=0.25)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def reliability_png(cal: Mapping[str, Any], sel: Mapping[str, Any], title: str) -> bytes | None:
    """Reliability diagram (accuracy vs mean confidence per bin, bar width = bin) and risk-coverage curve."""
    bins = [b for b in (cal.get("reliability") or []) if isinstance(b, Mapping)]
    points = [p for p in (sel.get("points") or []) if isinstance(p, Mapping)]
    if not bins and not points:
        return None

    fig = Figure(figsize=(7.4, 2.8), dpi=80)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for b in bins:
        if b.get("count"):
            ax1.bar(
                (b["lo"] + b["hi"]) / 2,
                b["accuracy"],
                width=b["hi"] - b["lo"],
                color="#4c78a8",
                alpha=0.8,
                edgecolor="white",
            )
            ax1.plot([b["confidence"]], [b["accuracy"]], "o", color="#d62728", markersize=3)
    ax1.plot([0, 1], [0, 1], ":", color="#555", linewidth=1)
    ax1.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence (top-1 probability)",
        ylabel="accuracy (soft)",
        title=f"reliability, ECE {cal.get('ece', 0):.3f}",
    )
    if points:
        ax2.step([p["coverage"] for p in points], [p["risk"] for p in points], where="post", color="#4c78a8")
        op = sel.get("operating_point")
        if isinstance(op, Mapping):
            ax2.plot(
                [op["coverage"]],
                [1 - op["accuracy"]],
                "o",
                color="#2ca02c",
                markersize=5,
                label=f"operating point ({sel.get('target', 0.95):.0%} accuracy)",
            )
            ax2.legend(fontsize=7, loc="upper left")
    ax2.set(
        xlim=(0, 1.02),
        ylim=(0, max(0.05, max((p["risk"] for p in points), default=0) * 1.1)),
        xlabel="coverage (share answered)",
        ylabel="risk (soft errors)",
        title=f"risk-coverage, AURC {sel.get('aurc', 0):.3f}",
    )
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
