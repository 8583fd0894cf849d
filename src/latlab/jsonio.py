"""JSON-able copies of results: one NaN rule for every file and every ``--json`` output.

A leaf module (it imports nothing from latlab), shared by the predictors' saved state, the
bundle manifest, the experiments' reports and the CLI: numpy scalars and arrays become Python
numbers and lists, tuples become lists, mapping keys become strings, and a non-finite float
(NaN, inf) becomes ``None`` -- JSON has no NaN, and ``json.dumps(..., allow_nan=False)`` after
this never fails on a number.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """A JSON-able copy of ``value`` (see the module docstring for the rules)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.generic):
        return value.item()
    return value


def dumps(value: Any, indent: int | None = 1, **options: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``; strict JSON (no NaN ever written)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False, **options)
