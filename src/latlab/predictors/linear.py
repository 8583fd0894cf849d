"""Ridge regression of log latency on log vector features: the predictor that extrapolates.

Trees (gbm, rf) cannot predict beyond the latencies they were trained on, and a space's own
encodings (one-hot, op counts) do not exist for networks of another space. The cross-space
transfer (:mod:`latlab.predictors.transfer`, ``source_predictor="auto"`` when the target
networks are of another search space than the pretrain table) therefore models each source
device with this predictor: ``log t = w · z(x) + b`` on the standardised ``summary`` features
(``log(1 + ·)`` of MACs, FLOPs, parameters, bytes, depth, per-kind layer counts and MACs:
what every network's IR has), a power law in those quantities that stays smooth outside the
training range. The penalty is chosen by scikit-learn's efficient leave-one-out CV (RidgeCV).
Fitting 15,625 networks takes well under a second after encoding.

State: coefficients, intercept and scaling as JSON; no pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.common import check_target, encode_target
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat
from latlab.predictors.vector_features import VectorFeatures, VectorRowsPredictor

#: Penalties RidgeCV chooses from (features are standardised).
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 22))


class LinearPredictor(VectorRowsPredictor, LatencyPredictor):
    """RidgeCV on standardised vector features (``features``, default ``summary``: every
    network has it, so the model applies across search spaces)."""

    name = "linear"
    param_space = HyperparameterSpace({"features": cat("summary", "auto")})

    def __init__(self, features: str = "summary", target: str = "log") -> None:
        self.features = features
        self.target = target

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        from sklearn.linear_model import RidgeCV
        from sklearn.preprocessing import StandardScaler

        check_target(self.target)
        self.features_, x = VectorFeatures.fit(self.features, as_graphs(networks))
        scaler = StandardScaler().fit(x)  # constant features keep a scale of 1
        reg = RidgeCV(alphas=ALPHAS).fit(scaler.transform(x), encode_target(y, self.target))
        self.mean_ = np.asarray(scaler.mean_, dtype=np.float64)
        self.scale_ = np.asarray(scaler.scale_, dtype=np.float64)
        self.coef_ = np.asarray(reg.coef_, dtype=np.float64)
        self.intercept_ = float(reg.intercept_)
        self.alpha_ = float(reg.alpha_)

    def _predict_rows(self, x: np.ndarray) -> np.ndarray:
        # The fitted scaler and ridge as one affine map (their state is the JSON below).
        return np.asarray(((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_)

    def _state(self, directory: Path) -> dict[str, Any]:
        return {
            "features": self.features_.to_state(),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
            "alpha": self.alpha_,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.features_ = VectorFeatures.from_state(state["features"])
        self.mean_ = np.asarray(state["mean"], dtype=np.float64)
        self.scale_ = np.asarray(state["scale"], dtype=np.float64)
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.intercept_ = float(state["intercept"])
        self.alpha_ = float(state["alpha"])
