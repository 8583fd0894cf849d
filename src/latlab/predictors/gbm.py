"""Gradient-boosted trees (LightGBM) on vector features.

Fits ``log(latency)`` (see :mod:`latlab.predictors.common`) with early stopping: on
``eval_set`` when given; otherwise a seeded ``val_fraction`` of the training set picks the
number of boosting rounds and the model is then refitted on all training rows with that many
rounds. Training is deterministic (``deterministic=True``, row-wise histograms, fixed seeds).
Saved as LightGBM's own text format (``booster.txt``), never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import BundleError
from latlab.fileio import atomic_write_text
from latlab.predictors.base import (
    LatencyPredictor,
    Network,
    as_graphs,
    read_model_file,
)
from latlab.predictors.common import (
    check_target,
    encode_target,
    internal_split,
    resolve_n_jobs,
)
from latlab.predictors.hyperparameter_space import HyperparameterSpace, flt, integer
from latlab.predictors.vector_features import AUTO, VectorFeatures, VectorRowsPredictor

BOOSTER_FILE = "booster.txt"


class GbmPredictor(VectorRowsPredictor, LatencyPredictor):
    """LightGBM regression on vector features (``features``: see :mod:`.vector_features`).

    Parameters follow LightGBM's names; ``n_estimators`` is the maximum number of rounds
    (early stopping picks the number used), ``n_jobs=None`` uses every usable CPU.
    """

    name = "gbm"
    param_space = HyperparameterSpace(
        {
            "learning_rate": flt(0.005, 0.3, log=True),
            "num_leaves": integer(4, 127, log=True),
            "min_child_samples": integer(1, 60, log=True),
            "subsample": flt(0.4, 1.0),
            "colsample_bytree": flt(0.3, 1.0),
            "reg_lambda": flt(1e-3, 30.0, log=True),
        }
    )

    def __init__(
        self,
        features: str = AUTO,
        n_estimators: int = 3000,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 5,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 200,
        val_fraction: float = 0.1,
        target: str = "log",
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.features = features
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.val_fraction = val_fraction
        self.target = target
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _params(self) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "min_child_samples": int(self.min_child_samples),
            "min_child_weight": 1e-3,
            "bagging_fraction": float(self.subsample),
            "bagging_freq": 1 if float(self.subsample) < 1 else 0,
            "feature_fraction": float(self.colsample_bytree),
            "lambda_l2": float(self.reg_lambda),
            "num_threads": resolve_n_jobs(self.n_jobs),
            "seed": int(self.random_state),
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _train(
        self,
        x: np.ndarray,
        z: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray] | None,
        rounds: int,
    ) -> Any:
        import lightgbm as lgb

        train_set = lgb.Dataset(x, z, free_raw_data=True)
        callbacks: list[Any] = []
        valid_sets = []
        if valid is not None:
            valid_sets = [lgb.Dataset(valid[0], valid[1], reference=train_set)]
            callbacks.append(lgb.early_stopping(int(self.early_stopping_rounds), verbose=False))
        return lgb.train(
            self._params(),
            train_set,
            num_boost_round=int(rounds),
            valid_sets=valid_sets,
            callbacks=callbacks,
        )

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        check_target(self.target)
        self.features_, x = VectorFeatures.fit(self.features, as_graphs(networks))
        z = encode_target(y, self.target)
        if eval_set is not None:
            xv = self.features_.transform(as_graphs(eval_set[0]))
            valid = (xv, encode_target(eval_set[1], self.target))
            booster = self._train(x, z, valid, self.n_estimators)
        else:
            tr, va = internal_split(len(y), self.val_fraction, self.random_state)
            probe = self._train(x[tr], z[tr], (x[va], z[va]), self.n_estimators)
            booster = self._train(x, z, None, max(1, probe.best_iteration or self.n_estimators))
        # Keep exactly what is saved (the best iteration's trees), so that the fitted and the
        # reloaded predictor are the same model and predict bit-identically.
        self.booster_ = _booster_from_text(booster.model_to_string())

    def _predict_rows(self, x: np.ndarray) -> np.ndarray:
        return self.booster_.predict(x, num_threads=resolve_n_jobs(self.n_jobs))

    def _state(self, directory: Path) -> dict[str, Any]:
        atomic_write_text(directory / BOOSTER_FILE, self.booster_.model_to_string())
        return {"features": self.features_.to_state(), "model_file": BOOSTER_FILE}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        data = read_model_file(directory, state.get("model_file", BOOSTER_FILE))
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise BundleError(f"corrupt LightGBM model in {directory}: not text") from None
        try:
            self.booster_ = _booster_from_text(text)
        except lgb.basic.LightGBMError as exc:
            raise BundleError(f"corrupt LightGBM model in {directory}: {exc}") from None
        self.features_ = VectorFeatures.from_state(state["features"])


def _booster_from_text(text: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_str=text)
