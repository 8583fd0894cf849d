"""The conformal wrapper contract: calibrate once, intervals at any confidence, save/load.

A :class:`ConformalPredictor` wraps a point predictor that is already fitted on the training
split. ``calibrate`` stores nonconformity scores of a disjoint calibration split;
``predict_interval`` turns them into intervals at any confidence without recalibrating.

Scores live in **log space** (``log t - log p``, possibly divided by a difficulty estimate
sigma): latency errors are relative, and ``exp`` of a symmetric log interval is a positive
interval ``[p·e^{-q·s}, p·e^{q·s}]`` around the point prediction ``p``.

With ``n`` calibration scores the split-conformal quantile at confidence ``c`` is the
``⌈(n+1)c⌉``-th smallest score; it exists only when ``n >= 1/(1-c) - 1``. Below that the honest
interval is unbounded (``[0, inf)``) and a warning says so; small ``n`` also makes the realised
coverage of one calibration vary (its standard deviation is about ``sqrt(c(1-c)/n)``), which a
second warning quantifies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings as _warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latlab.confidence import check_confidence, min_calibration_size
from latlab.errors import BundleError, DataError
from latlab.fileio import atomic_write_bytes
from latlab.predictors.base import LatencyPredictor, Network, check_training_data
from latlab.registry import Registry

log = logging.getLogger(__name__)

CONFORMAL_FILE = "conformal.json"
BASE_DIR = "base"
SCHEMA_VERSION = 1

#: Below this many calibration points per unit of miscoverage (n·(1-c)), warn that the
#: realised coverage of one calibration may stray (n = 200 at 90 % confidence).
_STABLE_TAIL_COUNT = 20

#: method name -> ConformalPredictor subclass (lazy ``"module:class"`` entries: a method's
#: module is imported when it is first used; plug-ins register in the ``latlab.conformal``
#: entry-point group).
METHODS: Registry[type[ConformalPredictor]] = Registry(
    "conformal method",
    group="latlab.conformal",
    check=lambda obj: isinstance(obj, type) and issubclass(obj, ConformalPredictor),
    entries={
        "split": "latlab.predictors.conformal.network:SplitConformal",
        "cm-tv": "latlab.predictors.conformal.network:TreeVarianceConformal",
        "cm-lv": "latlab.predictors.conformal.network:ResidualKnnConformal",
        "cm-o": "latlab.predictors.conformal.network:DistanceKnnConformal",
        "cps": "latlab.predictors.conformal.layers:LayerCps",
        "cv+": "latlab.predictors.conformal.cross:CvPlusConformal",
        "oob": "latlab.predictors.conformal.oob:OutOfBagConformal",
        "sources": "latlab.predictors.conformal.sources:SourceFewShotConformal",
    },
)


def register_method(cls: type[ConformalPredictor]) -> type[ConformalPredictor]:
    """Class decorator: register ``cls`` under its ``method`` name."""
    METHODS.register(cls.method, cls)
    return cls


def import_crepes() -> Any:
    """Import crepes without letting it change the process's warning filters.

    crepes 0.9 calls ``warnings.simplefilter("always", UserWarning)`` at import time, which
    would make every UserWarning of every library repeat for the rest of the process;
    ``catch_warnings`` restores the filters as they were.
    """
    with _warnings.catch_warnings():
        import crepes
        import crepes.extras

    return crepes


def conformal_quantile(scores: np.ndarray, confidence: float) -> float:
    """The split-conformal quantile of nonnegative ``scores``: the ``⌈(n+1)c⌉``-th smallest,
    ``inf`` when ``n`` is too small.

    An order statistic taken here rather than through crepes' ``ConformalRegressor``: crepes
    indexes ``alphas[int((1-c)(n+1)) - 1]``, and ``(1 - 0.9) * 10`` is 0.999... in floating
    point, so with n = 9 at 90 % it returned an unbounded interval where the quantile exists.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    rank = math.ceil((len(s) + 1) * confidence - 1e-9)
    return float(s[rank - 1]) if 1 <= rank <= len(s) else math.inf


class ConformalPredictor:
    """Base class; subclasses implement ``_calibrate``, ``_scale`` and the state hooks.

    ``warnings`` collects what a user must know about the intervals (calibration set too small
    for a confidence, networks outside the calibration distribution), each message once.
    """

    #: Method name (``split``, ``cm-tv``, ``cm-lv``, ``cm-o``, ``cps``).
    method: ClassVar[str] = "base"
    #: Options the constructor accepts (besides ``base``), with defaults.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, base: LatencyPredictor, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise DataError(
                f"conformal method {self.method!r} has no option {unknown[0]!r} (options: {known})"
            )
        self.base = base
        self.options = {**self.defaults, **options}
        self.warnings: list[str] = []
        self.scores_: np.ndarray | None = None
        self.point_floor_ = float(np.finfo(float).tiny)

    # ------------------------------------------------------------------ public

    @property
    def calibrated(self) -> bool:
        return self.scores_ is not None

    @property
    def n_calibration(self) -> int:
        return 0 if self.scores_ is None else len(self.scores_)

    def calibrate(
        self,
        networks: Sequence[Network],
        latencies_ms: Any,
        *,
        train_networks: Sequence[Network] | None = None,
        train_latencies_ms: Any = None,
        layer_networks: Sequence[Network] | None = None,
        layer_latencies_ms: Any = None,
    ) -> ConformalPredictor:
        """Compute nonconformity scores on a calibration split (disjoint from training).

        ``train_networks``/``train_latencies_ms`` (the base's training data) let difficulty
        estimators be fitted without spending calibration points; without them, methods that
        need a difficulty model fit it on a seeded half of the calibration set and calibrate on
        the other half (and say so in ``warnings``). ``layer_networks``/``layer_latencies_ms``
        are held-out single-layer benchmarks for ``cps`` (other methods ignore them).
        """
        networks = list(networks)
        y = check_training_data(networks, latencies_ms, min_rows=1)
        train: tuple[list[Network], np.ndarray] | None = None
        if train_networks is not None:
            if train_latencies_ms is None:
                raise DataError("train_networks given without train_latencies_ms")
            tn = list(train_networks)
            train = (tn, check_training_data(tn, train_latencies_ms, min_rows=1))
        self.layer_data: tuple[list[Network], np.ndarray] | None = None
        if layer_networks is not None:
            if layer_latencies_ms is None:
                raise DataError("layer_networks given without layer_latencies_ms")
            ln = list(layer_networks)
            self.layer_data = (ln, check_training_data(ln, layer_latencies_ms, min_rows=1))
        self.warnings = []
        # Predictions at or below zero (a linear proxy's negative intercept) carry no usable
        # relative information; they are clamped to half the fastest measured latency, so
        # log residuals stay finite and the intervals of such networks are wide but bounded.
        self.point_floor_ = 0.5 * float(min(y.min(), train[1].min() if train else np.inf))
        self._calibrate(networks, y, train)
        assert self.scores_ is not None
        log.info(
            "%s conformal calibrated on %d networks (%s)",
            self.method,
            self.n_calibration,
            type(self.base).__name__,
        )
        return self

    def predict(self, networks: Sequence[Network]) -> np.ndarray:
        """The base predictor's point prediction (ms)."""
        return self.base.predict(list(networks))

    def predict_interval(
        self,
        networks: Sequence[Network],
        confidence: float = 0.9,
        *,
        point_ms: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(low_ms, high_ms)`` arrays: intervals that hold the measured latency with
        probability ``confidence`` (marginally, over networks like the calibration ones).

        ``point_ms`` may pass the base's predictions for these networks when the caller
        already has them (experiments wrapping one base several times).
        """
        c = check_confidence(confidence)
        self._check_calibrated()
        networks = list(networks)
        if point_ms is None:
            point = self.predict(networks)
        else:
            point = np.asarray(point_ms, dtype=np.float64).reshape(-1)
            if len(point) != len(networks):
                raise DataError(f"{len(networks)} networks but {len(point)} point predictions")
        if len(networks) == 0:
            return np.zeros(0), np.zeros(0)
        self._check_size(c)
        low, high = self._log_bounds(networks, point, c)
        with np.errstate(over="ignore"):
            return np.exp(low), np.exp(high)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the base (``base/``), model files, and ``conformal.json`` last (atomically):
        a folder that holds ``conformal.json`` holds a whole conformal predictor. No pickle."""
        self._check_calibrated()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.base.save(d / BASE_DIR)
        state = self._state(d)
        doc = {
            "schema": SCHEMA_VERSION,
            "method": self.method,
            "options": self.options,
            "scores": np.asarray(self.scores_).tolist(),
            "point_floor": self.point_floor_,
            "state": state,
        }
        atomic_write_bytes(d / CONFORMAL_FILE, json.dumps(doc, indent=1).encode("utf-8"))
        return d

    @classmethod
    def restored(
        cls, base: LatencyPredictor, directory: Path, doc: dict[str, Any]
    ) -> ConformalPredictor:
        """The predictor :meth:`save` wrote as ``doc`` into ``directory``, around ``base``
        (:func:`latlab.predictors.conformal.load_conformal` checks the document first)."""
        cp = cls(base, **dict(doc.get("options", {})))
        cp.scores_ = np.asarray(doc["scores"], dtype=np.float64)
        cp.point_floor_ = float(doc["point_floor"])
        cp._restore(directory, dict(doc.get("state", {})))
        return cp

    # ------------------------------------------------------------------ for subclasses

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        raise NotImplementedError

    def _log_bounds(
        self, networks: list[Network], point: np.ndarray, c: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each network's interval in log ms (default: symmetric around the point)."""
        center = np.log(self.clamp(point))
        half = self._half_width(networks, point, c)
        return center - half, center + half

    def min_calibration_size(self, confidence: float) -> int:
        """Smallest calibration set that gives bounded intervals at ``confidence``."""
        return min_calibration_size(confidence)

    def _half_width(self, networks: list[Network], point: np.ndarray, c: float) -> np.ndarray:
        """Half-width of the log interval for each network."""
        assert self.scores_ is not None
        q = conformal_quantile(self.scores_, c)
        return np.full(len(networks), q)

    def _state(self, directory: Path) -> dict[str, Any]:
        return {}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ helpers

    def clamp(self, point: Any) -> np.ndarray:
        """Point predictions with values below the calibration floor raised to it."""
        return np.maximum(np.asarray(point, dtype=np.float64), self.point_floor_)

    def log_residuals(self, y: np.ndarray, point: np.ndarray) -> np.ndarray:
        """``log t - log p`` with ``p`` clamped (see :meth:`calibrate`)."""
        return np.log(y) - np.log(self.clamp(point))

    def warn(self, message: str) -> None:
        """Record (once) and log a warning about these intervals."""
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("%s", message)

    def _check_calibrated(self) -> None:
        if self.scores_ is None:
            from latlab.errors import NotFittedError

            raise NotFittedError(
                f"{self.method} conformal predictor is not calibrated: call calibrate() first"
            )

    def _check_size(self, c: float) -> None:
        n = self.n_calibration
        need = self.min_calibration_size(c)
        if n < need:
            self.warn(
                f"calibration set of {n} networks is too small for {c:.0%} confidence: it needs "
                f"at least {need} (the intervals are unbounded)"
            )
        elif n * (1 - c) < _STABLE_TAIL_COUNT:
            spread = 100 * math.sqrt(c * (1 - c) / n)
            self.warn(
                f"calibration set of {n} networks is small for {c:.0%} confidence: the coverage "
                f"of one calibration varies by about ±{spread:.1f} % (use at least "
                f"{math.ceil(_STABLE_TAIL_COUNT / (1 - c))} networks)"
            )


def read_conformal_doc(directory: Path) -> dict[str, Any]:
    path = directory / CONFORMAL_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no {CONFORMAL_FILE} in {directory}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"corrupt {path}: {exc}") from None
    if not isinstance(doc, dict) or "method" not in doc or "scores" not in doc:
        raise BundleError(f"corrupt {path}: missing 'method' or 'scores'")
    if int(doc.get("schema", 0)) > SCHEMA_VERSION:
        raise BundleError(
            f"{path} has schema {doc.get('schema')}, newer than this latlab reads "
            f"({SCHEMA_VERSION})"
        )
    return doc
