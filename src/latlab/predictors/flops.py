"""The FLOPs proxy: latency as a linear function of MACs and memory traffic.

The naive baseline every comparison reports. ``t = a·MACs + b·bytes + c`` with non-negative
coefficients and intercept, fitted by least squares weighted by ``1/t²`` so that *relative*
errors are what is minimised (as for every latlab predictor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

from latlab.errors import FeatureError
from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat


def macs_bytes(networks: list[Network]) -> np.ndarray:
    """(n, 2) array of MACs and activation+weight bytes, in units of 1e6 for conditioning."""
    rows = []
    for g in as_graphs(networks):
        t = g.totals
        if t.unknown_ops:
            raise FeatureError(
                f"network {g.reference!r} has ops without cost rules "
                f"({', '.join(t.unknown_ops)}): its MACs and bytes are unknown"
            )
        rows.append((t.macs / 1e6, (t.bytes_read + t.bytes_written + t.weight_bytes) / 1e6))
    return np.asarray(rows, dtype=float)


class FlopsPredictor(LatencyPredictor):
    """Linear latency model on MACs (and, with ``use_bytes``, bytes moved)."""

    name = "flops"
    param_space = HyperparameterSpace({"use_bytes": cat(True, False)})

    def __init__(self, use_bytes: bool = True) -> None:
        self.use_bytes = use_bytes

    def _features(self, networks: list[Network]) -> np.ndarray:
        x = macs_bytes(networks)
        return x if self.use_bytes else x[:, :1]

    def _fit(self, networks: list[Network], y: np.ndarray, eval_set: Any) -> None:
        # The intercept (a fixed per-inference overhead) is fitted as the coefficient of a
        # constant column so that it is non-negative too: LinearRegression(positive=True)
        # constrains only the coefficients, and a negative intercept predicts latencies <= 0
        # for networks smaller than the training set's.
        x = self._features(networks)
        reg = LinearRegression(positive=True, fit_intercept=False)
        reg.fit(np.hstack([x, np.ones((len(x), 1))]), y, sample_weight=1.0 / y**2)
        self.coef_ = reg.coef_[:-1].astype(float)
        self.intercept_ = float(reg.coef_[-1])

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return self._features(networks) @ self.coef_ + self.intercept_

    def _state(self, directory: Path) -> dict[str, Any]:
        return {"coef": self.coef_.tolist(), "intercept": self.intercept_}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.coef_ = np.asarray(state["coef"], dtype=float)
        self.intercept_ = float(state["intercept"])
