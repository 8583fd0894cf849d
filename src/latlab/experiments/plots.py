"""The report figures of the experiments (matplotlib, Agg backend, written as PNG files).

Each function draws one figure from plain arrays and writes it atomically (a temporary file
renamed into place), so a report directory never holds a half-written PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latlab.fileio import atomic_write_with
from latlab.training.plots import pyplot


def save(fig: Any, path: Path, dpi: float | None = 90, palette: bool = False) -> Path:
    """Write ``fig`` to ``path`` (PNG) through a temporary file, then close it.

    ``dpi=None`` keeps the figure's own; ``palette`` re-encodes as a 256-colour palette PNG
    (line plots need few colours, and committed report folders stay small: about a third of
    the RGBA size)."""
    plt = pyplot()

    def write(tmp: str) -> None:
        # savefig picks the format from the name: the temporary file is a .tmp
        fig.savefig(tmp, dpi="figure" if dpi is None else dpi, format="png")
        if palette:
            from PIL import Image

            with Image.open(tmp) as im:
                small = im.convert("RGB").quantize(colors=256)
            small.save(tmp, optimize=True, format="PNG")

    try:
        atomic_write_with(path, write)
    finally:
        plt.close(fig)
    return path


def grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    errors: Mapping[str, Sequence[float | None]] | None = None,
    *,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
) -> Any:
    """One group of bars per entry of ``groups`` (devices), one bar per series (predictors)."""
    plt = pyplot()
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.2))
    for i, (name, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        err = None
        if errors is not None and name in errors:
            err = np.array([0.0 if a is None else a for a in errors[name]], dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), v, width, yerr=err, label=name, capsize=2)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def scatter_grid(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    xlabel: str = "measured latency (ms)",
    ylabel: str = "predicted latency (ms)",
    band: float = 0.10,
) -> Any:
    """Predicted vs measured, one panel per predictor, with the exact line and ±band."""
    plt = pyplot()
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, (y, p)) in zip(axes.flat, panels.items(), strict=False):
        ax.scatter(y, p, s=3, alpha=0.3, edgecolors="none")
        both = np.concatenate([y, p])
        both = both[np.isfinite(both) & (both > 0)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (1e-3, 1.0)
        line = np.array([lo, hi])
        ax.plot(line, line, "k-", lw=0.8)
        ax.plot(line, (1 + band) * line, "k:", lw=0.7)
        ax.plot(line, (1 - band) * line, "k:", lw=0.7)
        within = 100 * np.mean(np.abs(p - y) <= band * y) if len(y) else float("nan")
        ax.set_title(f"{name}: {within:.1f} % within ±{100 * band:.0f} %", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], *, title: str) -> Any:
    """Training and validation loss per epoch, one line pair per run (log y axis)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i}"
        if c.get("train_loss"):
            ax.plot(np.arange(1, len(c["train_loss"]) + 1), c["train_loss"], color=color,
                    lw=1, label=f"{name} train")  # fmt: skip
        if c.get("val_loss"):
            ax.plot(np.arange(1, len(c["val_loss"]) + 1), c["val_loss"], color=color, lw=1,
                    ls="--", label=f"{name} validation")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE of the standardised target)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def deviation_plots(deviations: Mapping[str, np.ndarray], *, unit: str, title: str) -> Any:
    """Violin (left) and box plot (right) of absolute deviations per predictor."""
    plt = pyplot()
    names = list(deviations)
    data = [np.asarray(deviations[n], dtype=float) for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.violinplot(data, showmedians=True)
    right.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    for ax, kind in ((left, "violin"), (right, "box")):
        ax.set_xticks(np.arange(1, len(names) + 1), names)
        ax.set_ylabel(f"|predicted − measured| ({unit})")
        ax.set_title(f"{kind} plot")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
