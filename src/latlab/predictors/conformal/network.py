"""Network-level conformal methods: split, CM_TV, CM_LV, CM_O (Wess et al., IEEE Access 2024).

All four calibrate on networks and their measured latencies, so their coverage is a
network-level guarantee by construction (marginal, for networks exchangeable with the
calibration set). They differ in the *width* they give each network:

* ``split`` -- one width for all: the conformal quantile of ``|log t - log p|``.
* ``cm-tv`` -- normalised by a random forest's tree variance (crepes ``DifficultyEstimator``
  with ``learner=``): the forest is fitted on the networks' vector features to the time per
  operation, ``log(t / MACs)``, as in the paper's CM_TV; networks on which its trees disagree
  get wider intervals.
* ``cm-lv`` -- normalised by the mean absolute log residual of the base predictor on the k
  nearest training networks (crepes k-NN-on-residuals difficulty): where the base erred
  before, the interval is wider.
* ``cm-o`` -- normalised by the summed distance to the k nearest training networks in feature
  space (crepes k-NN-distance difficulty), and networks farther from the training networks
  than any calibration network (by ``ood_margin`` = 1.5 times the largest calibration distance)
  are flagged in ``warnings`` and by ``ood_mask``: the paper's CM_O "outside the benchmarked
  space" check.

Difficulty estimators are fitted on the base's training data when ``calibrate`` receives it
(``train_networks``/``train_latencies_ms``); otherwise on a seeded half of the calibration
set, the other half calibrating. crepes min-max scales difficulties to ``[0, 1]`` on the
fitting set and adds ``beta``; the scores are ``|log t - log p| / sigma`` and the interval
half-width ``q · sigma``.

Saved with skops (the difficulty estimator, and the OOD neighbour index) loading only the
types in :data:`TRUSTED_TYPES`; the feature encoder as JSON state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latlab.errors import BundleError, DataError, FeatureError
from latlab.fileio import atomic_write_bytes, inside
from latlab.predictors.base import Network, as_graphs
from latlab.predictors.conformal.base import (
    ConformalPredictor,
    conformal_quantile,
    import_crepes,
)
from latlab.predictors.skops_io import load_trusted_skops
from latlab.predictors.vector_features import VectorFeatures

DIFFICULTY_FILE = "difficulty.skops"

#: Types skops does not trust by default that a saved difficulty estimator may contain; a
#: file needing anything else is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    "crepes.extras.DifficultyEstimator",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
)

AUTO = "auto"


def auto_spec(graphs: list[Any]) -> str:
    """The encoder spec ``features="auto"`` picks: for networks of one search space its one-hot
    + summary (nb201, fbnet, ofa), else its vector features (widths for fully connected
    networks), the summary (any network) otherwise."""
    from latlab.datasets.spaces import space_of

    space = space_of(graphs)
    if space is not None and space.onehot:
        return f"{space.onehot}+summary"
    return (space.vector_features if space is not None else None) or "summary"


class SplitConformal(ConformalPredictor):
    """Split conformal on absolute log residuals: one relative width for every network."""

    method = "split"
    defaults: ClassVar[dict[str, Any]] = {}

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        self.scores_ = np.abs(self.log_residuals(y, self.base.predict(networks)))


class NormalizedConformal(ConformalPredictor):
    """Normalised conformal regression: scores ``|log t - log p| / sigma(network)``."""

    defaults: ClassVar[dict[str, Any]] = {
        "features": AUTO,
        "k": 25,
        "beta": 1.0,
        "seed": 0,
    }

    # -------------------------------------------------------------- difficulty

    def _fit_difficulty(self, graphs: list[Any], y: np.ndarray, x: np.ndarray) -> Any:
        """A fitted crepes ``DifficultyEstimator`` on the fit set (features ``x``)."""
        raise NotImplementedError

    #: Transform of crepes' raw difficulty (``sqrt`` turns a tree variance into a spread).
    _power: ClassVar[float] = 1.0

    def _raw_sigma(self, x: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.difficulty_.apply(x), dtype=np.float64) - self.difficulty_.beta
        return np.maximum(raw, 0.0) ** self._power

    def _sigma(self, graphs: list[Any]) -> np.ndarray:
        return self._raw_sigma(self.encoder_.transform(graphs)) + self.floor_

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        if train is not None:
            fit_nets, fit_y = train
            cal_nets, cal_y = networks, y
        else:
            if len(networks) < 4:
                raise DataError(
                    f"{self.method} needs the training data (train_networks) or at least 4 "
                    f"calibration networks to fit its difficulty estimator, got {len(networks)}"
                )
            rng = np.random.default_rng(int(self.options["seed"]))
            perm = rng.permutation(len(networks))
            half = len(networks) // 2
            a, b = np.sort(perm[:half]), np.sort(perm[half:])
            fit_nets, fit_y = [networks[i] for i in a], y[a]
            cal_nets, cal_y = [networks[i] for i in b], y[b]
            self.warn(
                f"{self.method}: no training data given; the difficulty estimator used half of "
                f"the {len(networks)} calibration networks, {len(cal_nets)} remain to calibrate"
            )
        fit_graphs = as_graphs(fit_nets)
        features = str(self.options["features"])
        spec = auto_spec(fit_graphs) if features == AUTO else features
        self.encoder_, x_fit = VectorFeatures.fit(spec, fit_graphs)
        k = int(self.options["k"])
        if k < 1:
            raise DataError(f"{self.method}: k must be at least 1, got {k}")
        self.k_ = min(k, max(1, len(fit_nets) - 1))
        self.difficulty_ = self._fit_difficulty(fit_graphs, fit_y, x_fit)
        # The floor added to every difficulty, relative to the typical (median) one: without
        # it the nearest networks get near-zero difficulty and extreme relative widths.
        typical = float(np.median(self._raw_sigma(x_fit)))
        self.floor_ = float(self.options["beta"]) * typical if typical > 0 else 1.0
        cal_graphs = as_graphs(cal_nets)
        sigma = self._sigma(cal_graphs)
        r = self.log_residuals(cal_y, self.base.predict(cal_nets))
        self.scores_ = np.abs(r) / sigma
        self._after_calibration(cal_graphs, x_fit)

    def _after_calibration(self, cal_graphs: list[Any], x_fit: np.ndarray) -> None:
        pass

    def _half_width(self, networks: list[Network], point: np.ndarray, c: float) -> np.ndarray:
        assert self.scores_ is not None
        q = conformal_quantile(self.scores_, c)
        sigma = self._sigma(as_graphs(networks))
        with np.errstate(invalid="ignore"):
            return np.where(np.isinf(q), np.inf, q * sigma)

    def difficulty(self, networks: list[Network]) -> np.ndarray:
        """The difficulty estimate sigma of each network (larger: wider interval)."""
        self._check_calibrated()
        return self._sigma(as_graphs(list(networks)))

    # -------------------------------------------------------------- persistence

    def _skops_objects(self) -> dict[str, Any]:
        return {"difficulty": self.difficulty_}

    def _state(self, directory: Path) -> dict[str, Any]:
        import skops.io as sio

        atomic_write_bytes(directory / DIFFICULTY_FILE, sio.dumps(self._skops_objects()))
        return {
            "encoder": self.encoder_.to_state(),
            "k": self.k_,
            "floor": self.floor_,
            "file": DIFFICULTY_FILE,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        path = inside(directory, state.get("file", DIFFICULTY_FILE), "difficulty file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BundleError(
                f"saved conformal predictor lacks {path.name} in {path.parent}"
            ) from None
        crepes = import_crepes()  # first, so that skops' import cannot reset warning filters
        objects = load_trusted_skops(data, path, TRUSTED_TYPES)
        if not isinstance(objects, dict) or not isinstance(
            objects.get("difficulty"), crepes.extras.DifficultyEstimator
        ):
            raise BundleError(f"{path} holds no difficulty estimator")
        self.difficulty_ = objects["difficulty"]
        self.encoder_ = VectorFeatures.from_state(state["encoder"])
        self.k_ = int(state["k"])
        self.floor_ = float(state["floor"])
        self._restore_objects(objects, state)

    def _restore_objects(self, objects: dict[str, Any], state: dict[str, Any]) -> None:
        pass


class TreeVarianceConformal(NormalizedConformal):
    """CM_TV: difficulty = tree variance of a random forest fitted to log time per op."""

    method = "cm-tv"
    _power = 0.5
    defaults: ClassVar[dict[str, Any]] = {
        **NormalizedConformal.defaults,
        "n_estimators": 100,
        "min_samples_leaf": 3,
        "max_features": 0.5,
    }

    def _fit_difficulty(self, graphs: list[Any], y: np.ndarray, x: np.ndarray) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        crepes = import_crepes()
        ops = np.array([max(float(g.totals.macs), 1.0) for g in graphs])
        forest = RandomForestRegressor(
            n_estimators=int(self.options["n_estimators"]),
            min_samples_leaf=int(self.options["min_samples_leaf"]),
            max_features=self.options["max_features"],
            random_state=int(self.options["seed"]),
            n_jobs=1,
        ).fit(x, np.log(y / ops))
        return crepes.extras.DifficultyEstimator().fit(x, learner=forest, scaler=False, beta=0.0)


class ResidualKnnConformal(NormalizedConformal):
    """CM_LV: difficulty = mean |log residual| of the base on the k nearest fit networks."""

    method = "cm-lv"

    def _fit_difficulty(self, graphs: list[Any], y: np.ndarray, x: np.ndarray) -> Any:
        crepes = import_crepes()
        r = self.log_residuals(y, self.base.predict(graphs))
        return crepes.extras.DifficultyEstimator().fit(
            x, residuals=r, k=self.k_, scaler=False, beta=0.0
        )


class DistanceKnnConformal(NormalizedConformal):
    """CM_O: difficulty = distance to the k nearest fit networks; flags far-away networks.

    The out-of-distribution check uses standardised, unclipped features (crepes clips its
    min-max scaled features to the fit range, which hides how far outside a network is): a
    network whose mean distance to its k nearest fit networks exceeds ``ood_margin`` times the
    ``ood_quantile`` of the calibration networks' distances is reported in ``warnings``. (With
    no margin, 1 in n + 1 networks of the calibration distribution itself would exceed the
    largest of n calibration distances; the margin keeps the flag for networks truly outside.)
    """

    method = "cm-o"
    defaults: ClassVar[dict[str, Any]] = {
        **NormalizedConformal.defaults,
        "features": "summary",
        "beta": 3.0,
        "ood_quantile": 1.0,
        "ood_margin": 1.5,
    }

    def _fit_difficulty(self, graphs: list[Any], y: np.ndarray, x: np.ndarray) -> Any:
        from sklearn.neighbors import NearestNeighbors
        from sklearn.preprocessing import StandardScaler

        crepes = import_crepes()
        self.ood_scaler_ = StandardScaler().fit(x)
        self.ood_nn_ = NearestNeighbors(n_neighbors=self.k_).fit(self.ood_scaler_.transform(x))
        return crepes.extras.DifficultyEstimator().fit(x, k=self.k_, scaler=False, beta=0.0)

    def _distance(self, x: np.ndarray) -> np.ndarray:
        dist, _ = self.ood_nn_.kneighbors(self.ood_scaler_.transform(x))
        return np.asarray(dist.mean(axis=1), dtype=np.float64)

    def _after_calibration(self, cal_graphs: list[Any], x_fit: np.ndarray) -> None:
        q = float(self.options["ood_quantile"])
        if not 0 < q <= 1:
            raise DataError(f"cm-o: ood_quantile must be in (0, 1], got {q!r}")
        margin = float(self.options["ood_margin"])
        if margin < 1:
            raise DataError(f"cm-o: ood_margin must be at least 1, got {margin!r}")
        d = self._distance(self.encoder_.transform(cal_graphs))
        self.ood_threshold_ = margin * float(np.quantile(d, q))

    def ood_mask(self, networks: list[Network]) -> np.ndarray:
        """True for networks farther from the training networks than the calibration ones."""
        self._check_calibrated()
        graphs = as_graphs(list(networks))
        try:
            x = self.encoder_.transform(graphs)
        except FeatureError:
            # Networks the features cannot describe are outside by definition.
            return np.ones(len(graphs), dtype=bool)
        return self._distance(x) > self.ood_threshold_

    def _half_width(self, networks: list[Network], point: np.ndarray, c: float) -> np.ndarray:
        half = super()._half_width(networks, point, c)
        graphs = as_graphs(networks)
        d = self._distance(self.encoder_.transform(graphs))
        far = np.flatnonzero(d > self.ood_threshold_)
        if far.size:
            worst = int(far[np.argmax(d[far])])
            self.warn(
                f"cm-o: {far.size} of {len(graphs)} networks lie outside the calibration "
                f"distribution (e.g. {graphs[worst].reference}: distance {d[worst]:.3g} > "
                f"{self.ood_threshold_:.3g}); their intervals are not covered by the guarantee"
            )
        return half

    def _skops_objects(self) -> dict[str, Any]:
        return {
            "difficulty": self.difficulty_,
            "ood_scaler": self.ood_scaler_,
            "ood_nn": self.ood_nn_,
        }

    def _state(self, directory: Path) -> dict[str, Any]:
        return {**super()._state(directory), "ood_threshold": self.ood_threshold_}

    def _restore_objects(self, objects: dict[str, Any], state: dict[str, Any]) -> None:
        self.ood_scaler_ = objects["ood_scaler"]
        self.ood_nn_ = objects["ood_nn"]
        self.ood_threshold_ = float(state["ood_threshold"])
