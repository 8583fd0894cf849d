"""Figures of the ANNETTE comparison: predicted against measured latency, per set and per net.

matplotlib with the non-interactive Agg backend (no display on a server); every figure is
written through a temporary file and a rename so that an interrupted run leaves none
half-written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from latlab.experiments.plots import save
from latlab.training.plots import pyplot


def network_scatter(sets: dict[str, pd.DataFrame], predictors: Sequence[str], path: Path) -> None:
    """One panel per predictor: predicted vs measured ms (log-log), coloured by network set.

    ``sets`` maps a set name (held-out generated, nb201, zoo) to a frame with ``measured_ms``
    and one column per predictor.
    """
    plt = pyplot()
    cols = min(5, len(predictors))
    rows = -(-len(predictors) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    colours = dict(zip(sets, ("tab:blue", "tab:green", "tab:red", "tab:orange"), strict=False))
    for ax, name in zip(axes.flat, predictors, strict=False):
        lo, hi = np.inf, 0.0
        for label, df in sets.items():
            if name not in df or not len(df):
                continue
            t, p = df["measured_ms"].to_numpy(float), df[name].to_numpy(float)
            ok = np.isfinite(p) & (p > 0)
            ax.scatter(t[ok], p[ok], s=9, alpha=0.7, color=colours[label], label=label)
            if ok.any():
                lo = min(lo, t[ok].min(), p[ok].min())
                hi = max(hi, t[ok].max(), p[ok].max())
        if hi > 0:
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("measured (ms)", fontsize=8)
        ax.set_ylabel("predicted (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(predictors) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=60, palette=True)


def zoo_bars(zoo: pd.DataFrame, predictors: Sequence[str], path: Path) -> None:
    """One panel per zoo network: each predictor's prediction as a bar, measured as a line."""
    plt = pyplot()
    n = len(zoo)
    cols = min(4, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    x = np.arange(len(predictors))
    for ax, (_, row) in zip(axes.flat, zoo.iterrows(), strict=False):
        vals = [float(row[p]) for p in predictors]
        ax.bar(x, vals, color="tab:blue", alpha=0.8)
        ax.axhline(float(row["measured_ms"]), color="tab:red", lw=1.2, label="measured")
        ax.set_title(str(row["network"]).removeprefix("zoo:"), fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(predictors, rotation=60, fontsize=7)
        ax.set_ylabel("ms", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if n:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=60, palette=True)


def zoo_layer_scatter(layers: pd.DataFrame, model: str, path: Path) -> None:
    """One panel per zoo network: predicted vs measured time of its convolution groups."""
    plt = pyplot()
    nets = list(dict.fromkeys(layers["network"])) if len(layers) else []
    cols = min(4, max(len(nets), 1))
    rows = max(1, -(-len(nets) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for ax, net in zip(axes.flat, nets, strict=False):
        d = layers[layers["network"] == net]
        t, p = d["measured_ms"].to_numpy(float), d[model].to_numpy(float)
        ok = (t > 0) & (p > 0)
        ax.scatter(t[ok], p[ok], s=7, alpha=0.7)
        if ok.any():
            lo, hi = min(t[ok].min(), p[ok].min()), max(t[ok].max(), p[ok].max())
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{str(net).removeprefix('zoo:')} ({model})", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(nets) :]:
        ax.axis("off")
    fig.supxlabel("measured layer time (ms, profiler)", fontsize=8)
    fig.supylabel("predicted (ms)", fontsize=8)
    fig.tight_layout()
    save(fig, path, dpi=60, palette=True)
