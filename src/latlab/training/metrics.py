"""Accuracy metrics of latency predictions, defined once for every report.

Errors are relative to the *measurement* ``t``: ``|p - t| / t``. ``acc<k>`` is the percentage
of networks whose prediction is within ±k % of the measured latency (BRP-NAS's "±k %
accuracy", with the band around the measurement); ``mape``/``rmspe`` are mean and root mean
squared relative errors in percent; ``mae``/``rmse`` are in the unit of the inputs (ms);
``spearman``/``kendall`` are rank correlations (what a NAS loop ranking candidates needs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latlab.errors import DataError

#: Accuracy bands reported by :func:`regression_metrics` (percent).
ACCURACY_BANDS: tuple[int, ...] = (1, 5, 10, 20)

#: Keys of :func:`regression_metrics`, in report order.
METRIC_KEYS: tuple[str, ...] = (
    "n",
    "mae",
    "rmse",
    "mape",
    "rmspe",
    *(f"acc{b}" for b in ACCURACY_BANDS),
    "spearman",
    "kendall",
)


def _as_arrays(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    if len(t) != len(p):
        raise DataError(f"{len(t)} measurements but {len(p)} predictions: lengths must match")
    if len(t) == 0:
        raise DataError("cannot compute metrics of no predictions")
    bad = np.flatnonzero(~np.isfinite(t) | (t <= 0))
    if bad.size:
        raise DataError(
            f"measured latency {t[bad[0]]!r} at row {int(bad[0])} is not finite and > 0 "
            f"({bad.size} such rows): relative errors are undefined"
        )
    badp = np.flatnonzero(~np.isfinite(p))
    if badp.size:
        raise DataError(f"prediction {p[badp[0]]!r} at row {int(badp[0])} is not finite")
    return t, p


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """All point-prediction metrics of one set of predictions (see the module docstring).

    Percentages (``mape``, ``rmspe``, ``acc*``) are in percent. Rank correlations are NaN when
    either side is constant (scipy's convention) and for fewer than two networks.
    """
    from scipy.stats import kendalltau, spearmanr

    t, p = _as_arrays(y_true, y_pred)
    err = p - t
    rel = np.abs(err) / t
    out: dict[str, float] = {
        "n": len(t),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(100 * np.mean(rel)),
        "rmspe": float(100 * np.sqrt(np.mean(rel**2))),
    }
    # A tiny tolerance so that a prediction exactly on the band edge counts as inside it
    # despite floating-point rounding of (p - t) / t.
    for b in ACCURACY_BANDS:
        out[f"acc{b}"] = float(100 * np.mean(rel <= b / 100 + 1e-12))
    if len(t) >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(spearmanr(t, p).statistic)
        out["kendall"] = float(kendalltau(t, p).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


#: Keys of :func:`interval_metrics`.
INTERVAL_KEYS: tuple[str, ...] = ("coverage", "mean_relative_width", "confidence")

#: Metric names older bundles wrote, and the name each has now (one name for the interval
#: width everywhere: training, the conformal wrappers' coverage report and the experiments).
RENAMED_KEYS: dict[str, str] = {"mean_rel_width": "mean_relative_width"}


def upgrade_metric_keys(metrics: Any) -> Any:
    """``metrics`` (nested dicts, as in a bundle manifest) with old key names renamed."""
    if isinstance(metrics, dict):
        return {RENAMED_KEYS.get(k, k): upgrade_metric_keys(v) for k, v in metrics.items()}
    return metrics


def interval_metrics(y_true: Any, low: Any, high: Any, confidence: float) -> dict[str, float]:
    """Empirical coverage and mean relative width of prediction intervals, in percent.

    ``coverage`` is the percentage of networks whose measured latency lies in ``[low, high]``
    (to be compared with ``100 * confidence``); ``mean_relative_width`` is the mean of
    ``(high - low) / t`` in percent -- relative to the measurement like every other latlab
    error, so that intervals of fast and slow networks weigh alike; narrower is better at equal
    coverage (infinite for unbounded intervals). ``confidence`` is echoed as given (a fraction).
    """
    t, _ = _as_arrays(y_true, y_true)
    lo = np.asarray(low, dtype=float).reshape(-1)
    hi = np.asarray(high, dtype=float).reshape(-1)
    if len(lo) != len(t) or len(hi) != len(t):
        raise DataError(f"{len(t)} measurements but {len(lo)}/{len(hi)} interval bounds")
    # Unbounded intervals (too few calibration points for the confidence) are legitimate:
    # they cover, and their width is infinite. NaN bounds are not.
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise DataError("interval bounds contain NaN")
    if np.any(hi < lo):
        i = int(np.flatnonzero(hi < lo)[0])
        raise DataError(f"interval at row {i} has upper bound {hi[i]!r} below lower {lo[i]!r}")
    inside = (t >= lo) & (t <= hi)
    return {
        "coverage": float(100 * np.mean(inside)),
        "mean_relative_width": float(100 * np.mean((hi - lo) / t)),
        "confidence": float(confidence),
    }


def metrics_by_group(
    groups: Any,
    y_true: Any,
    y_pred: Any,
    low: Any = None,
    high: Any = None,
    confidence: float | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`regression_metrics` (and :func:`interval_metrics` when bounds are given) per group.

    ``groups`` labels every row (the network family, for per-family breakdowns); groups are
    returned in sorted order.
    """
    g = np.asarray([str(x) for x in groups])
    t, p = _as_arrays(y_true, y_pred)
    if len(g) != len(t):
        raise DataError(f"{len(g)} group labels for {len(t)} rows: lengths must match")
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(g.tolist())):
        mask = g == name
        row = regression_metrics(t[mask], p[mask])
        if low is not None and high is not None:
            lo = np.asarray(low, dtype=float).reshape(-1)[mask]
            hi = np.asarray(high, dtype=float).reshape(-1)[mask]
            row.update(interval_metrics(t[mask], lo, hi, float(confidence or 0)))
        out[name] = row
    return out
