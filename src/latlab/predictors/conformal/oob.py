"""Out-of-bag jackknife+ for random forests (``oob``): calibration without refits or a split.

A forest already holds what CV+ buys with K refits: every tree is fitted on a bootstrap sample,
so each training network is *out of bag* for about a third of the trees, and the average of
those trees is a prediction of a model that never saw it. The jackknife+-after-bootstrap
(Kim, Xu & Barber, "Predictive inference is free with the jackknife+-after-bootstrap",
NeurIPS 2020) turns that into intervals: each training network's score is its out-of-bag
absolute log residual ``R_i = |log t_i - log mu_{-i}(x_i)|`` (``mu_{-i}``: the mean of the
trees that did not draw i), and a new network's interval is the jackknife+ one
(:func:`.cross.jackknife_plus_bounds`) with centres ``mu_{-i}(x)``. All training networks
calibrate (nothing is carved out of a 900-network budget), and ranks of exchangeable
out-of-bag residuals need no assumption on ties or tails. This is the out-of-bag calibration
for forests of the seed's conformal paper, with the leave-out centres that make it a
jackknife+ rather than a plain residual quantile.

Only for ``rf`` (the forest predictor, which exposes its trees' predictions and bootstrap
samples); ``calibrate`` takes the forest's own training networks, in training order. Cost:
one prediction per tree and an ``(n, trees)`` average per served network; the bag matrix is
saved with the calibration (bit-packed, in ``conformal.json``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from latlab.errors import DataError
from latlab.predictors.base import Network
from latlab.predictors.conformal.cross import JackknifePlusConformal


@runtime_checkable
class BaggedForest(Protocol):
    """What ``oob`` needs of its base: a bagged forest's per-tree predictions and bootstrap
    samples (the ``rf`` predictor, :class:`latlab.predictors.forest.ForestPredictor`)."""

    name: str

    def tree_predictions(self, networks: list[Network]) -> np.ndarray:
        """``(trees, networks)``: each tree's prediction in the fitted target space."""
        ...

    def in_bag(self) -> np.ndarray:
        """``(trees, training networks)`` bool: which networks each tree's sample drew."""
        ...

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        """Milliseconds from predictions in the fitted target space."""
        ...


class OutOfBagConformal(JackknifePlusConformal):
    """Jackknife+-after-bootstrap on a fitted random forest (``rf``)."""

    method = "oob"
    defaults: ClassVar[dict[str, Any]] = {}

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        in_bag = self.forest().in_bag()
        if in_bag.shape[1] != len(networks):
            raise DataError(
                f"conformal 'oob' calibrates on the forest's {in_bag.shape[1]} training "
                f"networks, got {len(networks)}"
            )
        out = ~in_bag.T  # (n, trees): tree t never saw network i
        never = np.flatnonzero(out.sum(axis=1) == 0)
        if len(never):
            raise DataError(
                f"{len(never)} training networks are in every tree's bootstrap sample: "
                "train the forest with more trees for out-of-bag calibration"
            )
        self.out_of_bag_ = out
        self.scores_ = np.abs(self.log_residuals(y, self.oob_predictions(networks)))

    def forest(self) -> BaggedForest:
        """The base as the bagged forest ``oob`` needs; refuses any other predictor."""
        base = self.base
        if not isinstance(base, BaggedForest):
            raise DataError(
                f"conformal 'oob' needs a random forest (predictor rf), not {base.name!r}: "
                "use cv+ for other predictors"
            )
        return base

    def oob_predictions(self, networks: list[Network]) -> np.ndarray:
        """``mu_{-i}(x_i)`` in ms for the training networks (in training order): each
        predicted by the trees that did not draw it (scikit-learn's ``oob_prediction_``)."""
        forest = self.forest()
        trees = forest.tree_predictions(networks)
        w = self.out_of_bag_.astype(np.float64)
        encoded = (w * trees.T).sum(axis=1) / w.sum(axis=1)
        return np.asarray(forest.decode(encoded), dtype=np.float64)

    def _centers(self, networks: list[Network]) -> np.ndarray:
        """``(n, networks)``: log ms of the out-of-bag average of every training network."""
        forest = self.forest()
        trees = forest.tree_predictions(networks)
        w = self.out_of_bag_.astype(np.float64)
        encoded = (w @ trees) / w.sum(axis=1, keepdims=True)
        return np.log(self.clamp(forest.decode(encoded)))

    def _state(self, directory: Path) -> dict[str, Any]:
        bits = np.packbits(self.out_of_bag_, axis=None)
        return {
            "shape": list(self.out_of_bag_.shape),
            "out_of_bag": base64.b64encode(bits.tobytes()).decode("ascii"),
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        n, trees = (int(v) for v in state["shape"])
        raw = np.frombuffer(base64.b64decode(state["out_of_bag"]), dtype=np.uint8)
        self.out_of_bag_ = np.unpackbits(raw, count=n * trees).astype(bool).reshape(n, trees)
