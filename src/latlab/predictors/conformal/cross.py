"""CV+ / jackknife+ intervals: every training network is also a calibration network.

Split conformal spends a calibration set that the model never trains on; with few networks
(k = 10 few-shot, or 900 networks of a heavy-tailed device) that set is either missing or too
small for its quantile to be stable. CV+ (Barber, Candès, Ramdas & Tibshirani, "Predictive
inference with the jackknife+", Ann. Statist. 2021) uses the data fully: the training networks
are split into K folds, the base predictor is refitted K times without one fold, and each
network's score is its out-of-fold absolute log residual ``R_i = |log t_i - log mu_{-k(i)}(x_i)|``.
For a new network x the interval is

    [ the floor(a(n+1))-th smallest of  log mu_{-k(i)}(x) - R_i ,
      the ceil((1-a)(n+1))-th smallest of  log mu_{-k(i)}(x) + R_i ]     (a = 1 - confidence)

in log ms. Its worst-case coverage is at least ``1 - 2a - sqrt(2/n)`` (``1 - 2a`` for the
jackknife+, K = n) and close to ``1 - a`` in practice. Ties and heavy tails do not break
it: the scores are ranks of exchangeable out-of-fold residuals, with no distributional
assumption. The full model's point prediction is kept, and the interval is widened to contain
it when it does not (which only adds coverage).

Cost: K extra fits at calibration and K predictions per served network (the fold models are
saved with the bundle under ``folds/``). Bounded at 90 % from n = 9 networks on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latlab.errors import DataError
from latlab.predictors.base import LatencyPredictor, Network, load_predictor, make_predictor
from latlab.predictors.conformal.base import ConformalPredictor

FOLDS_DIR = "folds"


def jackknife_plus_bounds(
    centers: np.ndarray, scores: np.ndarray, confidence: float, log_point: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The jackknife+ interval in log ms from leave-out centres ``(n, networks)`` (``centers[i]``:
    the model fitted without calibration network i, at each new network) and the ``n`` scores;
    widened to contain ``log_point`` (the full model's prediction). Shared by CV+ and the
    out-of-bag jackknife+ (:mod:`.oob`)."""
    n = len(scores)
    a = 1.0 - confidence
    r = np.asarray(scores, dtype=np.float64)[:, None]
    lo_rank = math.floor(a * (n + 1))
    hi_rank = math.ceil((1 - a) * (n + 1))
    width = centers.shape[1]
    low = np.sort(centers - r, axis=0)[lo_rank - 1] if lo_rank >= 1 else np.full(width, -np.inf)
    high = np.sort(centers + r, axis=0)[hi_rank - 1] if hi_rank <= n else np.full(width, np.inf)
    return np.minimum(low, log_point), np.maximum(high, log_point)


def jackknife_plus_min_size(confidence: float) -> int:
    """Fewest calibration networks with bounded jackknife+ intervals at ``confidence``:
    ``ceil((1-a)(n+1)) <= n``  <=>  ``n >= 1/a - 1``."""
    return math.ceil(1 / (1 - confidence) - 1 - 1e-9)


def _refit(base: LatencyPredictor, networks: list[Network], y: np.ndarray) -> LatencyPredictor:
    model = make_predictor(base.name, **base.get_params(deep=False))
    model.fit(networks, y)
    return model


class JackknifePlusConformal(ConformalPredictor):
    """What CV+ and the out-of-bag jackknife+ share: the bound from leave-out centres
    (``_centers``: ``(n, networks)`` log ms, subclasses say how they get them) and its size."""

    def _centers(self, networks: list[Network]) -> np.ndarray:
        raise NotImplementedError

    def min_calibration_size(self, confidence: float) -> int:
        return jackknife_plus_min_size(confidence)

    def _log_bounds(
        self, networks: list[Network], point: np.ndarray, c: float
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.scores_ is not None
        centers = self._centers(networks)
        return jackknife_plus_bounds(centers, self.scores_, c, np.log(self.clamp(point)))


class CvPlusConformal(JackknifePlusConformal):
    """CV+ on absolute log residuals (jackknife+ when ``folds`` >= the number of networks).

    ``calibrate(networks, latencies_ms)`` takes the base's **training** networks (not a
    held-out split); ``folds`` (default 10) and ``seed`` set the fold assignment.
    """

    method = "cv+"
    defaults: ClassVar[dict[str, Any]] = {"folds": 10, "seed": 0}

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        n = len(networks)
        k = min(int(self.options["folds"]), n)
        if k < 2:
            raise DataError(f"cv+ needs at least 2 networks and 2 folds, got {n} networks")
        rng = np.random.default_rng(int(self.options["seed"]))
        fold_of = rng.permutation(np.arange(n) % k)
        self.models_: list[LatencyPredictor] = []
        scores = np.zeros(n)
        for f in range(k):
            inside = np.flatnonzero(fold_of != f)
            out = np.flatnonzero(fold_of == f)
            model = _refit(self.base, [networks[i] for i in inside], y[inside])
            self.models_.append(model)
            pred = model.predict([networks[i] for i in out])
            scores[out] = np.abs(self.log_residuals(y[out], pred))
        self.fold_of_ = fold_of.astype(np.int64)
        self.scores_ = scores

    def _centers(self, networks: list[Network]) -> np.ndarray:
        folds = np.log(np.stack([self.clamp(m.predict(networks)) for m in self.models_]))
        return folds[self.fold_of_]  # (n, n_networks): mu_{-k(i)}(x)

    def _state(self, directory: Path) -> dict[str, Any]:
        for f, model in enumerate(self.models_):
            model.save(directory / FOLDS_DIR / str(f))
        return {"fold_of": self.fold_of_.tolist(), "folds": len(self.models_)}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.fold_of_ = np.asarray(state["fold_of"], dtype=np.int64)
        self.models_ = [
            load_predictor(directory / FOLDS_DIR / str(f)) for f in range(int(state["folds"]))
        ]
