"""The seam between training and the conformal wrappers of :mod:`latlab.predictors.conformal`.

Every call that depends on the wrappers' interface goes through here, so the pipeline, the
bundle and the MLflow model share one adapter. The wrappers turn any fitted point predictor
into calibrated intervals: ``make_conformal(method, predictor, **options)`` ->
``calibrate(networks, latencies_ms)``, ``predict``, ``predict_interval(networks, confidence)``,
``save(dir)`` / ``load_conformal(dir)``, ``warnings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latlab.errors import BundleError, DataError
from latlab.predictors.base import IntervalPredictor, LatencyPredictor, OutOfDistribution

#: ``--conformal`` methods (``none`` switches intervals off).
CONFORMAL_METHODS = ("split", "cm-tv", "cm-lv", "cm-o", "cps", "cv+", "oob", "sources")
#: Methods calibrated on the training networks themselves (out-of-fold, or for ``sources``
#: the transfer predictor's source devices), not on a split.
CROSS_METHODS = ("cv+", "oob", "sources")
NO_CONFORMAL = "none"
DEFAULT_METHOD = "split"


def check_method(method: str | None) -> str | None:
    """The method, ``None`` for ``none``/``None``; :class:`DataError` for unknown names."""
    if method is None or method == NO_CONFORMAL:
        return None
    if method not in CONFORMAL_METHODS:
        known = ", ".join((*CONFORMAL_METHODS, NO_CONFORMAL))
        raise DataError(f"unknown conformal method {method!r} (known: {known})")
    return method


def cross_min_size(confidence: float) -> int:
    """Fewest training networks with bounded CV+ / jackknife+ intervals at ``confidence``."""
    from latlab.predictors.conformal.cross import jackknife_plus_min_size

    return jackknife_plus_min_size(confidence)


def small_data_method(rows: int, confidence: float) -> str | None:
    """What the default split method becomes on a table too small to carve a calibration set
    from: ``cv+`` (every training network calibrates, out of fold) when its intervals are
    bounded for ``rows`` networks, else ``None`` (no intervals)."""
    return "cv+" if rows >= cross_min_size(confidence) else None


def wrap(method: str, predictor: LatencyPredictor, **options: Any) -> IntervalPredictor:
    """A conformal wrapper of a *fitted* ``predictor`` (not yet calibrated); the conformal
    package (it imports crepes) is imported when first needed."""
    from latlab.predictors.conformal import make_conformal

    return make_conformal(method, predictor, **options)


def load(directory: Path) -> IntervalPredictor:
    """A saved, calibrated wrapper (its base predictor included)."""
    from latlab.predictors.conformal import load_conformal

    try:
        return load_conformal(directory)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"corrupt conformal calibration in {directory}: {exc}") from None


def base_dir(directory: Path) -> Path | None:
    """Where a saved wrapper keeps its base predictor (``base/``), if it does."""
    inner = Path(directory) / "base"
    return inner if (inner / "predictor.json").is_file() else None


def calibrate(
    wrapper: IntervalPredictor,
    networks: list[Any],
    latencies_ms: Any,
    train: tuple[list[Any], Any] | None = None,
) -> IntervalPredictor:
    """Calibrate on the calibration split; the training split is passed along for methods
    whose difficulty model is fitted on training data (it spares calibration points)."""
    if train is not None:
        return wrapper.calibrate(
            networks, latencies_ms, train_networks=train[0], train_latencies_ms=train[1]
        )
    return wrapper.calibrate(networks, latencies_ms)


def predict_interval(
    wrapper: IntervalPredictor, networks: list[Any], confidence: float, point_ms: Any = None
) -> tuple[Any, Any]:
    """Interval bounds; reuses ``point_ms`` (the point predictions) where the wrapper can."""
    return wrapper.predict_interval(networks, confidence, point_ms=point_ms)


def ood_mask(wrapper: IntervalPredictor, networks: list[Any]) -> Any:
    """Which networks lie outside the calibration distribution (methods that can tell, such
    as ``cm-o``), else ``None``."""
    return wrapper.ood_mask(networks) if isinstance(wrapper, OutOfDistribution) else None


def warnings_of(wrapper: IntervalPredictor | None) -> list[str]:
    return [] if wrapper is None else [str(w) for w in wrapper.warnings]
