"""Latency as a non-negative sum of op costs, fitted on a few networks: transfer's own source.

Few-shot transfer (:mod:`latlab.predictors.transfer`) ranks a new device's networks like the
source devices it resembles. A device of a kind no source shows (a batch-256 GPU when the
table holds only CPUs and phones) resembles none of them, yet in a space whose op counts are
additive latency terms (:attr:`~latlab.datasets.spaces.base.SearchSpace.additive_counts`:
NAS-Bench-201's cells run the same shapes in every cell of a stage) its latency is close to
``intercept + sum_op cost_op * count_op`` -- six unknowns, which ten networks pin down
(``tests/test_transfer_additive.py``: ``titanx_256`` with every GPU held out of pretraining,
k = 10, ranked at Spearman > 0.97 with it and ~0.8 without; the ``transfer-kinds`` report).

It enters transfer as one more pseudo-source per count encoder (beside the ``macs``/``bytes``
proxies): its value on the k training networks is its *leave-one-out* prediction, so the
ensemble weighs it by how well it predicts networks it did not see, not by an in-sample fit
of six parameters to ten points; on every other network it is the fit on all k.
Non-negative because an op cannot take negative time, which is also what keeps ten points
from fitting noise with cancelling costs (scipy's NNLS: no tuning parameter). Ten count
columns at once (edge and live counts together) overfit ten networks; nb201 therefore offers
two five-column hypotheses, edge counts (a runtime that executes every op) and live counts
(one that prunes ops whose result reaches no output), each its own pseudo-source. Every space
also offers the raw network summary (``summary-linear``: per-kind layer counts and MACs,
bytes, not their logs), a layer-sum over op kinds that any IR has: on FBNet it ranks the
batch-1 GPUs and the phone that prunes dead code better than any source device does.
Networks of no single search space get none (the summary refuses ops without cost rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Floor of a prediction, as a fraction of the smallest training latency (an all-zero fit or
#: an empty network must still give a finite log).
_FLOOR = 0.05


def additive_specs(graphs: Sequence[Any]) -> tuple[str, ...]:
    """The count encoders of the networks' search space whose latency is a sum of op costs
    (:attr:`~latlab.datasets.spaces.base.SearchSpace.additive_counts`: nb201's edge and live op
    counts and, in every space, the raw summary); none for networks of no single space."""
    from latlab.datasets.spaces import space_of

    space = space_of(graphs)
    return () if space is None else tuple(space.additive_counts)


def _design(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.hstack([x / scale, np.ones((len(x), 1))])


def fit_additive(x: np.ndarray, y_ms: np.ndarray) -> dict[str, Any]:
    """Non-negative costs of the count columns ``x`` (k, m) and an intercept for latencies
    ``y_ms`` (k,). JSON-able state for :func:`predict_additive`."""
    from scipy.optimize import nnls

    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    coef, _ = nnls(_design(x, scale), y_ms)
    return {"coef": coef.tolist(), "scale": scale.tolist(), "floor": float(_FLOOR * y_ms.min())}


def predict_additive(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Predicted ms of count rows ``x`` (n, m), floored above zero."""
    coef, scale = np.asarray(state["coef"]), np.asarray(state["scale"])
    return np.maximum(_design(x, scale) @ coef, float(state["floor"]))


def loo_additive(x: np.ndarray, y_ms: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions (ms): network i predicted by the fit on the other k - 1."""
    out = np.empty(len(y_ms))
    for i in range(len(y_ms)):
        keep = np.arange(len(y_ms)) != i
        out[i] = predict_additive(fit_additive(x[keep], y_ms[keep]), x[i : i + 1])[0]
    return out
