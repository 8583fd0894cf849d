"""The confidence level of an interval: validated in one place, calibration sizes from it.

A leaf module (it imports only :mod:`latlab.errors`) shared by the conformal wrappers, the
training split and the bundle, so that a confidence is checked with one message and the
calibration-set sizes derived from it agree everywhere.
"""

from __future__ import annotations

import math

from latlab.errors import DataError


def check_confidence(confidence: object, what: str = "confidence") -> float:
    """``confidence`` as a float; :class:`DataError` unless it is a number in (0, 1).

    ``what`` names the value in the message (``--confidence`` in the CLI).
    """
    try:
        c = float(confidence)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number in (0, 1), got {confidence!r}") from None
    if not 0.0 < c < 1.0 or not math.isfinite(c):
        shown = f"{confidence:g}" if isinstance(confidence, float) else repr(confidence)
        raise DataError(f"{what} must be in (0, 1) (e.g. 0.9), got {shown}")
    return c


def min_calibration_size(confidence: float) -> int:
    """Smallest calibration set whose split-conformal quantile at ``confidence`` is finite.

    Split conformal at level ``1 - a`` takes the ``ceil((n + 1)(1 - a))``-th smallest of ``n``
    scores, which exists only when ``n >= 1/a - 1`` (9 at 90 %).
    """
    return max(1, math.ceil(1.0 / (1.0 - confidence) - 1.0 - 1e-9))


def recommended_calibration_size(confidence: float) -> int:
    """Twice :func:`min_calibration_size` (18 at 90 %): the size training asks for, so that the
    quantile does not rest on the single largest residual."""
    return 2 * min_calibration_size(check_confidence(confidence))
