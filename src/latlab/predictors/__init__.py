"""Analytical and learned latency predictors, layer-wise composition, conformal wrappers.

Importing the package registers every predictor by name (see :data:`PREDICTORS`).
"""

from latlab.predictors import flops
from latlab.predictors.base import (
    PREDICTORS,
    LatencyPredictor,
    load_predictor,
    make_predictor,
    register_predictor,
)

__all__ = [
    "PREDICTORS",
    "LatencyPredictor",
    "flops",
    "load_predictor",
    "make_predictor",
    "register_predictor",
]
