"""Analytical and learned latency predictors, layer-wise composition, conformal wrappers.

Importing the package registers every predictor by name (see :data:`PREDICTORS`): ``flops``
(FLOPs proxy), ``fcnn`` (torch MLP), ``gbm`` (LightGBM), ``rf`` (random forest), ``gcn``
(torch-geometric GCN), ``layer-sum`` (per-layer lookup table fitted on network latencies).
Heavy libraries (torch, lightgbm) are imported when a predictor fits
or loads, not here.
"""

from latlab.predictors import fcnn, flops, forest, gbm, gcn, kernel, layersum, layerwise
from latlab.predictors.base import (
    PREDICTORS,
    LatencyPredictor,
    load_predictor,
    make_predictor,
    register_predictor,
)
from latlab.predictors.bnn import predictor as lxnorop

__all__ = [
    "PREDICTORS",
    "LatencyPredictor",
    "fcnn",
    "flops",
    "forest",
    "gbm",
    "gcn",
    "kernel",
    "layersum",
    "layerwise",
    "load_predictor",
    "lxnorop",
    "make_predictor",
    "register_predictor",
    "transfer",
]

# Registered on its own line at the end, so that branches adding predictors above merge cleanly.
import latlab.predictors.precision  # noqa: F401  (registers cross-precision; same reason)
from latlab.predictors import transfer
