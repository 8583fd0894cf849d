"""latlab: predictable DNN inference latency.

Measure networks on a device, train a latency predictor per device, compare learned predictors
with analytical models, get calibrated intervals, and serve predictions to a NAS loop.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``latlab.load_bundle`` without importing the training stack at ``import latlab``."""
    if name == "load_bundle":
        from latlab.training.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'latlab' has no attribute {name!r}")
