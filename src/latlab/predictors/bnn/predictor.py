"""The LXNOROP model as a latency predictor (``make_predictor("lxnorop")``).

Fits a target's clock constants on measured networks with the same relative-error NNLS as
``latlab bnn calibrate`` (any measured binary networks, not only the micro-benchmark suite),
or, with ``fit_constants=False``, predicts from the target's datasheet constants as they are.
Predictions are milliseconds per inference, like every latlab predictor.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latlab.datasets.references import resolve
from latlab.predictors.base import LatencyPredictor, Network
from latlab.predictors.bnn.calibrate import (
    effective_cache_bytes,
    features,
    fit_clocks,
    target_from_fit,
)
from latlab.predictors.bnn.targets import (
    Target,
    detect_host,
    get_target,
    target_from_dict,
)
from latlab.predictors.bnn.tasks import forward


class LxnoropPredictor(LatencyPredictor):
    """Latency from XNOROP/LXNOROP counts and a target's clock constants.

    ``target``: ``host`` (this machine with ``threads`` cores, half its L2 as cache level), a
    catalog name or a target file. ``fit_constants``: fit the clocks on the training data
    (True) or keep the target's (False: training data only validated).
    """

    name = "lxnorop"
    min_train_rows = 2

    def __init__(self, target: str = "host", fit_constants: bool = True, threads: int = 1) -> None:
        self.target = target
        self.fit_constants = fit_constants
        self.threads = threads

    def _base(self) -> Target:
        if self.target == "host":
            return replace(detect_host(cores=self.threads), cache_bytes=effective_cache_bytes())
        return get_target(self.target)

    def _fit(self, networks: list[Network], y: np.ndarray, eval_set: Any) -> None:
        base = self._base()
        if not self.fit_constants:
            self.target_ = base
            return
        x = np.stack([features(resolve(n), base.cache_bytes, base.bus_width) for n in networks])
        coef = fit_clocks(x, y * 1e-3 * base.cp_hz)  # any networks: equal weights
        self.target_ = target_from_fit(base, coef, base.cache_bytes, name=f"{base.name}-fitted")

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return np.array([forward(n, self.target_, warn=False).latency_ms for n in networks])

    def _state(self, directory: Path) -> dict[str, Any]:
        return {"target": self.target_.to_dict()}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.target_ = target_from_dict(state["target"], "saved lxnorop predictor")
