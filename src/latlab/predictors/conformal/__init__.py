"""Conformal intervals around any latency predictor (crepes underneath).

Usage (the base is already fitted on the training split)::

    cp = make_conformal("split", base).calibrate(cal_networks, cal_ms,
                                                 train_networks=train, train_latencies_ms=y)
    low, high = cp.predict_interval(networks, confidence=0.9)
    cp.warnings            # calibration too small, networks outside the distribution, ...
    cp.save(path); load_conformal(path)

Methods (``--conformal``): ``split``, ``cm-tv``, ``cm-lv``, ``cm-o`` (network level, see
:mod:`.network`) and ``cps`` (layer-wise predictive systems summed to networks, then
recalibrated at network level, see :mod:`.layers`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latlab.confidence import check_confidence, min_calibration_size
from latlab.errors import BundleError, DataError
from latlab.predictors.base import LatencyPredictor, Network, load_predictor
from latlab.predictors.conformal.base import (
    BASE_DIR,
    METHODS,
    ConformalPredictor,
    read_conformal_doc,
)

__all__ = [
    "METHODS",
    "ConformalPredictor",
    "coverage_report",
    "load_conformal",
    "make_conformal",
    "min_calibration_size",
]


def make_conformal(method: str, base: LatencyPredictor, **options: Any) -> ConformalPredictor:
    """A conformal wrapper of ``base`` (fitted); raises :class:`DataError` listing the methods."""
    cls = METHODS.get(method)
    if cls is None:
        raise DataError(
            f"unknown conformal method {method!r} (known: {', '.join(sorted(METHODS))})"
        )
    if not getattr(base, "fitted_", False):
        raise DataError(
            f"conformal {method!r} wraps a fitted predictor: fit {type(base).__name__} first"
        )
    return cls(base, **options)


def load_conformal(directory: str | os.PathLike[str]) -> ConformalPredictor:
    """Rebuild a saved conformal predictor (its base via :func:`load_predictor`); no pickle."""
    d = Path(directory)
    doc = read_conformal_doc(d)
    cls = METHODS.get(str(doc["method"]))
    if cls is None:
        raise BundleError(f"{d} names unknown conformal method {doc['method']!r}")
    base = load_predictor(d / BASE_DIR)
    try:
        cp = cls.restored(base, d, doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"corrupt conformal predictor in {d}: {exc}") from None
    return cp


def coverage_report(
    conformal: ConformalPredictor,
    networks: Sequence[Network],
    latencies_ms: Any,
    confidence: float = 0.9,
    *,
    point_ms: Any = None,
) -> dict[str, float]:
    """Empirical coverage and width of the intervals on held-out networks.

    Returns ``coverage`` (% of measured latencies inside their interval),
    ``mean_relative_width`` (% : mean of ``(high - low) / measured``), ``median_relative_width``,
    ``n`` and ``confidence``. An unbounded interval has infinite width.
    """
    c = check_confidence(confidence)
    y = np.asarray(latencies_ms, dtype=np.float64).reshape(-1)
    if len(y) != len(networks):
        raise DataError(f"{len(networks)} networks but {len(y)} latencies: lengths must match")
    if len(y) == 0:
        raise DataError("coverage of no networks is undefined")
    low, high = conformal.predict_interval(networks, c, point_ms=point_ms)
    inside = (y >= low) & (y <= high)
    width = (high - low) / y
    return {
        "n": float(len(y)),
        "confidence": c,
        "coverage": float(100 * inside.mean()),
        "mean_relative_width": float(100 * np.mean(width)),
        "median_relative_width": float(100 * np.median(width)),
    }
