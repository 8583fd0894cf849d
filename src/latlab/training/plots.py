"""Figures of a set of predictions: predicted vs measured, and the relative-error histogram.

Drawn with matplotlib's non-interactive Agg backend (no display needed); the caller closes
them. Logged to MLflow with every train/evaluate run and used by experiment reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def predicted_vs_measured(y_true: Any, y_pred: Any, title: str = "") -> Any:
    """Log-log scatter of predicted against measured latency with the ±10 % band."""
    plt = pyplot()
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(t, p, s=6, alpha=0.5, edgecolors="none")
    positive = np.concatenate([t[t > 0], p[p > 0]])
    lo, hi = (positive.min(), positive.max()) if positive.size else (1e-3, 1.0)
    line = np.array([lo, hi])
    ax.plot(line, line, "k-", lw=1, label="exact")
    ax.plot(line, 1.1 * line, "k:", lw=0.8, label="±10 %")
    ax.plot(line, 0.9 * line, "k:", lw=0.8)
    if lo > 0:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title} (n={len(t)})" if title else f"n={len(t)}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def error_histogram(y_true: Any, y_pred: Any, title: str = "") -> Any:
    """Histogram of the signed relative error ``(p - t) / t`` in percent."""
    plt = pyplot()
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    rel = 100 * (p - t) / t
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bound = float(np.percentile(np.abs(rel), 99)) if len(rel) else 1.0
    bins = np.linspace(-max(bound, 1.0), max(bound, 1.0), 61)
    ax.hist(np.clip(rel, bins[0], bins[-1]), bins=bins)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("relative error (p - t) / t (%)")
    ax.set_ylabel("networks")
    ax.set_title(title or "relative error")
    fig.tight_layout()
    return fig
