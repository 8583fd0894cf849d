"""Random forest (scikit-learn) on vector features.

Fits ``log(latency)`` (see :mod:`latlab.predictors.common`); ``eval_set`` is not needed (a
forest does not early-stop) and is ignored. Saved with skops; loading trusts exactly the types
listed in :data:`TRUSTED_TYPES` and refuses a file that needs any other type, so a tampered or
foreign file cannot make the loader instantiate arbitrary classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latlab.fileio import atomic_write_bytes
from latlab.predictors.base import (
    LatencyPredictor,
    Network,
    as_graphs,
    read_model_file,
)
from latlab.predictors.common import check_target, decode_target, encode_target, resolve_n_jobs
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, flt, integer
from latlab.predictors.skops_io import TREE_TYPES, load_trusted_skops
from latlab.predictors.vector_features import AUTO, VectorFeatures, VectorRowsPredictor

FOREST_FILE = "forest.skops"

#: The types skops does not trust by default that a saved RandomForestRegressor contains.
#: (skops trusts scikit-learn estimators and numpy arrays itself; the compiled tree is the only
#: extra.) Anything else in a file is refused.
TRUSTED_TYPES: tuple[str, ...] = TREE_TYPES


class ForestPredictor(VectorRowsPredictor, LatencyPredictor):
    """scikit-learn ``RandomForestRegressor`` on vector features (``features``:
    :mod:`.vector_features`).

    ``max_features`` is the fraction (or count, or ``"sqrt"``) of features tried per split;
    ``n_jobs=None`` uses every usable CPU.
    """

    name = "rf"
    param_space = HyperparameterSpace(
        {
            "n_estimators": integer(100, 800, step=100),
            "max_features": flt(0.1, 1.0),
            "min_samples_leaf": integer(1, 20, log=True),
            "max_depth": cat(None, 8, 16, 32),
        }
    )

    def __init__(
        self,
        features: str = AUTO,
        n_estimators: int = 300,
        max_features: float | int | str | None = 0.5,
        min_samples_leaf: int = 1,
        max_depth: int | None = None,
        target: str = "log",
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.features = features
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.target = target
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        from sklearn.ensemble import RandomForestRegressor

        check_target(self.target)
        self.features_, x = VectorFeatures.fit(self.features, as_graphs(networks))
        forest = RandomForestRegressor(
            n_estimators=int(self.n_estimators),
            max_features=self.max_features,
            min_samples_leaf=int(self.min_samples_leaf),
            max_depth=self.max_depth,
            n_jobs=resolve_n_jobs(self.n_jobs),
            random_state=int(self.random_state),
        )
        forest.fit(x, encode_target(y, self.target))
        self.forest_ = forest

    def _predict_rows(self, x: np.ndarray) -> np.ndarray:
        return predict_rows_parallel(self.forest_, x, self.n_jobs)

    # ------------------------------------------------ what out-of-bag calibration needs

    def tree_predictions(self, networks: list[Network]) -> np.ndarray:
        """``(trees, networks)`` each tree's prediction in the fitted target space (log ms
        with ``target="log"``): what leave-out aggregates of the forest are built from."""
        self._check_fitted()
        x = self.features_.transform(as_graphs(networks))
        return np.stack([t.predict(x) for t in self.forest_.estimators_]).astype(np.float64)

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        """Milliseconds from predictions in the fitted target space."""
        return decode_target(np.asarray(encoded, dtype=np.float64), self.target)

    def in_bag(self) -> np.ndarray:
        """``(trees, training networks)`` bool: which training networks each tree's bootstrap
        sample drew (scikit-learn regenerates the samples from each tree's seed)."""
        self._check_fitted()
        n = int(self.forest_._n_samples)  # scikit-learn keeps n only in this attribute
        mask = np.zeros((len(self.forest_.estimators_), n), dtype=bool)
        for t, rows in enumerate(self.forest_.estimators_samples_):
            mask[t, rows] = True
        return mask

    def _state(self, directory: Path) -> dict[str, Any]:
        import skops.io as sio

        atomic_write_bytes(directory / FOREST_FILE, sio.dumps(self.forest_))
        return {"features": self.features_.to_state(), "model_file": FOREST_FILE}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.forest_ = load_trusted_skops(
            read_model_file(directory, state.get("model_file", FOREST_FILE)),
            directory,
            TRUSTED_TYPES,
        )
        self.features_ = VectorFeatures.from_state(state["features"])


def predict_rows_parallel(forest: Any, x: np.ndarray, n_jobs: int | None) -> np.ndarray:
    """``forest.predict(x)`` with rows split across threads, bit-reproducibly.

    scikit-learn's own parallel predict adds the trees' outputs into one buffer in whatever
    order its threads finish, so two calls can differ in the last bits. Here every row's trees
    are summed in tree order by one thread (row chunks run in parallel: tree traversal releases
    the GIL), so the result never depends on scheduling.
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = resolve_n_jobs(n_jobs)
    forest.n_jobs = 1
    if jobs == 1 or len(x) < 2048:
        return np.asarray(forest.predict(x), dtype=np.float64)
    chunks = np.array_split(np.arange(len(x)), jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(lambda idx: forest.predict(x[idx]), chunks))
    return np.concatenate(parts).astype(np.float64)
