"""FCNN: a fully connected network (torch MLP) predicting latency from vector features.

The FCNN latency estimator of Beglaryan & Ringhofer predicts the latency of fully connected
networks (1-5 hidden layers, <= 50 neurons) from the zero-padded vector of their layer widths
with an MLP: three hidden layers with normalisation and regularisation, trained with Adam on
the mean squared error, early-stopped on a validation split. The paper's text was not
available to us; what it leaves open was chosen as follows and is a constructor parameter:

* hidden widths ``(256, 128, 64)``, each ``Linear -> BatchNorm1d -> ReLU -> Dropout(0.1)``;
  Adam (lr 1e-3, weight decay 1e-5), mini-batches of 64, up to 500 epochs, early stopping after
  40 epochs without a 0.1 % improvement of the validation loss, ReduceLROnPlateau (x0.5 after
  15 flat epochs), the best epoch's weights kept;
* inputs standardised with the training set's mean and standard deviation;
* the target: MSE on the *standardised log latency* by default (``target="log"``, so that the
  relative error is what is minimised, see :mod:`latlab.predictors.common`); ``target="raw"``
  is the paper's MSE on milliseconds.

Inputs (``features``, :mod:`latlab.predictors.vector_features`): the padded width vector for
``fcnn`` networks, the nb201 one-hot + summary for NAS-Bench-201 cells, the network summary
otherwise.
Saved as ``fcnn.safetensors`` (weights) + JSON (architecture, scalers, encoder state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.errors import DataError
from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.common import check_target, decode_target, encode_target, internal_split
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, flt, widths
from latlab.predictors.vector_features import AUTO, VectorFeatures

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "fcnn.safetensors"
NORMS = ("batch", "layer", "none")
_STD_FLOOR = 1e-8


def build_mlp(n_in: int, hidden: tuple[int, ...], norm: str, dropout: float) -> torch.nn.Module:
    """``Linear -> norm -> ReLU -> Dropout`` per hidden width, then ``Linear(-> 1)``."""
    from torch import nn

    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h))
        elif norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _batches(n: int, size: int, generator: Any) -> list[Any]:
    """Shuffled index batches; a trailing batch of one row joins the previous one (BatchNorm
    cannot normalise a single row)."""
    import torch

    perm = torch.randperm(n, generator=generator)
    parts = list(torch.split(perm, size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2] = torch.cat([parts[-2], parts.pop()])
    return parts


class FcnnPredictor(LatencyPredictor):
    """Torch MLP on standardised vector features (see the module docstring for defaults)."""

    name = "fcnn"
    #: ``n_jobs`` (sklearn's name, as gbm/rf take it) was ``num_threads`` before.
    renamed_params: ClassVar[Mapping[str, str]] = {"num_threads": "n_jobs"}
    param_space = HyperparameterSpace(
        {
            "hidden_layers": cat(
                "64-32",
                "128-64",
                "256-128",
                "128-64-32",
                "256-128-64",
                "512-256-128",
                "256-256-256",
                "512-256-128-64",
                convert=widths,
            ),
            "norm": cat("batch", "layer", "none"),
            "dropout": flt(0.0, 0.4),
            "learning_rate": flt(1e-4, 1e-2, log=True),
            "weight_decay": flt(1e-7, 1e-3, log=True),
            "batch_size": cat(16, 32, 64, 128, 256),
        },
        epoch_based=True,
    )

    def __init__(
        self,
        features: str = AUTO,
        hidden_layers: tuple[int, ...] = (256, 128, 64),
        norm: str = "batch",
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        max_epochs: int = 500,
        patience: int = 40,
        lr_patience: int = 15,
        val_fraction: float = 0.1,
        target: str = "log",
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.features = features
        self.hidden_layers = hidden_layers
        self.norm = norm
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr_patience = lr_patience
        self.val_fraction = val_fraction
        self.target = target
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers

    def _hidden(self) -> tuple[int, ...]:
        hidden = tuple(int(h) for h in self.hidden_layers)
        if not hidden or min(hidden) < 1:
            raise DataError(f"hidden_layers must be positive widths, got {self.hidden_layers!r}")
        return hidden

    def _module(self) -> torch.nn.Module:
        if self.norm not in NORMS:
            raise DataError(f"norm must be one of {NORMS}, got {self.norm!r}")
        return build_mlp(self.n_inputs_, self._hidden(), self.norm, float(self.dropout))

    def _inputs(self, graphs: list[Any]) -> torch.Tensor:
        import torch

        x = (self.features_.transform(graphs) - self.x_mean_) / self.x_std_
        return torch.from_numpy(x.astype(np.float32))

    # ------------------------------------------------------------------ contract

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        import torch

        from latlab.predictors.torch_utils import seeded, torch_threads, train_epochs

        check_target(self.target)
        graphs = as_graphs(networks)
        self.features_, x_raw = VectorFeatures.fit(self.features, graphs)
        self.n_inputs_ = x_raw.shape[1]
        self.x_mean_ = x_raw.mean(axis=0)
        std = x_raw.std(axis=0)
        std[std < _STD_FLOOR] = 1.0
        self.x_std_ = std
        z = encode_target(y, self.target)
        self.y_mean_, self.y_std_ = float(z.mean()), float(z.std()) or 1.0
        x_all = torch.from_numpy(((x_raw - self.x_mean_) / self.x_std_).astype(np.float32))
        t_all = torch.from_numpy(((z - self.y_mean_) / self.y_std_).astype(np.float32))
        if eval_set is not None:
            x_tr, t_tr = x_all, t_all
            x_va = self._inputs(as_graphs(eval_set[0]))
            zv = encode_target(eval_set[1], self.target)
            t_va = torch.from_numpy(((zv - self.y_mean_) / self.y_std_).astype(np.float32))
        else:
            tr, va = internal_split(len(y), self.val_fraction, self.random_state)
            x_tr, t_tr = x_all[tr], t_all[tr]
            x_va, t_va = x_all[va], t_all[va]
        with seeded(self.random_state), torch_threads(self.n_jobs):
            model = self._module()
            gen = torch.Generator().manual_seed(int(self.random_state))
            opt = torch.optim.Adam(
                model.parameters(),
                lr=float(self.learning_rate),
                weight_decay=float(self.weight_decay),
                fused=True,
            )
            mse = torch.nn.MSELoss()
            size = max(2, int(self.batch_size))

            def step(idx: torch.Tensor) -> torch.Tensor:
                return mse(model(x_tr[idx]).squeeze(-1), t_tr[idx])

            def val() -> float:
                return float(mse(model(x_va).squeeze(-1), t_va))

            self.train_log_ = train_epochs(
                model,
                opt,
                step,
                lambda epoch: _batches(len(t_tr), size, gen),
                val,
                max_epochs=int(self.max_epochs),
                patience=int(self.patience),
                lr_patience=int(self.lr_patience),
            ).as_dict()
        self.model_ = model

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return self.predict_encoded(self.encode(as_graphs(networks)))

    encoding = "rows"
    feature_state_keys = ("features", "x_mean", "x_std", "y_mean", "y_std", "n_inputs")

    def encode(self, graphs: Sequence[NetworkGraph]) -> list[Any]:
        """One standardised float32 input row per network (what the serving cache keeps)."""
        self._check_fitted()
        return list(self._inputs(list(graphs)).numpy())

    def predict_encoded(self, items: Sequence[Any]) -> np.ndarray:
        import torch

        from latlab.predictors.torch_utils import torch_threads

        self._check_fitted()
        if len(items) == 0:
            return np.zeros(0)
        x = torch.from_numpy(np.vstack(items))
        with torch.inference_mode(), torch_threads(self.n_jobs):
            out = self.model_(x).squeeze(-1).double().numpy()
        return np.asarray(decode_target(out * self.y_std_ + self.y_mean_, self.target))

    def _state(self, directory: Path) -> dict[str, Any]:
        from latlab.predictors.torch_utils import save_state_dict

        save_state_dict(self.model_, directory / WEIGHTS_FILE)
        return {
            "features": self.features_.to_state(),
            "n_inputs": self.n_inputs_,
            "x_mean": self.x_mean_.tolist(),
            "x_std": self.x_std_.tolist(),
            "y_mean": self.y_mean_,
            "y_std": self.y_std_,
            "train_log": self.train_log_,
            "weights_file": WEIGHTS_FILE,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        from latlab.predictors.torch_utils import load_state_dict

        self.features_ = VectorFeatures.from_state(state["features"])
        self.n_inputs_ = int(state["n_inputs"])
        self.x_mean_ = np.asarray(state["x_mean"], dtype=np.float64)
        self.x_std_ = np.asarray(state["x_std"], dtype=np.float64)
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])
        self.train_log_ = state.get("train_log", {})
        self.model_ = self._module()
        load_state_dict(self.model_, directory, state.get("weights_file", WEIGHTS_FILE))
