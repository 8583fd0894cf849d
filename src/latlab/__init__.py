"""latlab: predictable DNN inference latency.

Measure networks on a device, train a latency predictor per device, compare learned predictors
with analytical models, get calibrated intervals, and serve predictions to a NAS loop.
"""

from __future__ import annotations

__version__ = "0.1.0"
