"""Analytical and learned latency predictors, layer-wise composition, conformal wrappers.

Every predictor is registered by name in :data:`PREDICTORS` (a lazy registry: a predictor's
module is imported when the predictor is first used, see
:data:`~latlab.predictors.base.BUILTIN_PREDICTORS`): ``flops`` (FLOPs proxy), ``fcnn`` (torch
MLP), ``gbm`` (LightGBM), ``rf`` (random forest), ``gcn`` (torch-geometric GCN), ``layer-sum``
(per-layer lookup table fitted on network latencies), ``linear`` (ridge on log summary
features: extrapolates, applies across search spaces), ``kernel``, the layer-wise ANNETTE
models, ``lxnorop`` and ``transfer``; plug-ins add theirs through the ``latlab.predictors``
entry-point group. Heavy libraries (torch, lightgbm) are imported when a predictor fits or
loads, not here.
"""

import importlib
from types import ModuleType

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
    "load_predictor",
    "make_predictor",
    "register_predictor",
]

#: Submodules reachable as attributes (``latlab.predictors.gbm``) without importing them here.
_SUBMODULES = {
    "fcnn": "fcnn",
    "flops": "flops",
    "forest": "forest",
    "gbm": "gbm",
    "gcn": "gcn",
    "kernel": "kernel",
    "layersum": "layersum",
    "linear": "linear",
    "layerwise": "layerwise",
    "lxnorop": "bnn.predictor",
    "precision": "precision",
    "transfer": "transfer",
}


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"latlab.predictors.{_SUBMODULES[name]}")
    raise AttributeError(f"module 'latlab.predictors' has no attribute {name!r}")
