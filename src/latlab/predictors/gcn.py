"""GCN: a graph convolutional network (torch-geometric) predicting latency from the graph.

Defaults are BRP-NAS's latency predictor (Dudziak et al., NeurIPS 2020; SamsungLabs/eagle,
``lat_gcn_nasbench201_desktop.yaml``): 4 graph convolutions of 600 units, each followed by
LayerNorm, ReLU and dropout (0.002); the readout is the hidden state of a global node connected
to every node, fed to a linear layer; AdamW (lr 4e-4, weight decay 5e-4), up to 250 epochs,
ReduceLROnPlateau (x0.5 after 10 flat epochs, relative threshold 1 %) and early stopping
(35 epochs) both from epoch 20, the best validation epoch's weights kept, L1 loss.

Where latlab differs from BRP-NAS, and why:

* target: the L1 loss is on the standardised *log* latency (BRP-NAS: raw latency), so relative
  errors are what is minimised (``target="raw"`` restores the raw scale);
* mini-batches of 32 graphs (BRP-NAS: single graphs): 30x fewer optimiser steps per epoch on
  a CPU; batches are torch-geometric ``Batch`` objects from a seeded ``DataLoader``.

The convolution is ``GCNConv(normalize=False)``: ``A·X·W + b`` with the encoders' adjacency
(self-loops included), which is BRP-NAS's propagation (see :mod:`latlab.encoders.graph`).
In training, message passing runs on a sparse CSR adjacency and the last convolution is
evaluated only at the global nodes (the only rows the readout reads: ``(A_g·X)·W + b`` equals
the full layer's global rows). Prediction evaluates every distinct node state once
(:mod:`latlab.predictors.gcn_infer`: exact, and ~10x less work on a whole search space).

Graphs (``graph``): ``"nb201-cell"`` -- the NAS-Bench-201 cell with every edge op as a node
(:class:`Nb201CellGraphEncoder` with ``prune=False``: ``none`` and ``skip_connect`` kept);
``"nb201-brp"`` -- BRP-NAS's pruned cell (``none`` removed, ``skip_connect`` bypassed, nodes off
the input-output paths dropped); ``"generic"`` -- one node per layer of any network
(:class:`GraphEncoder`: op one-hot + scaled attributes); any other name a search space
registers (``fbnet-blocks``, ``ofa-blocks``: its block chain). ``"auto"`` picks the graph of
the training networks' space (:attr:`SearchSpace.graph`: ``nb201-cell`` for nb201) and
``generic`` otherwise.

Why ``nb201-cell`` and not BRP-NAS's pruned graph by default: in the shared nb201 latency
table, archs with the same pruned graph differ in latency -- the measured networks execute the
ops that pruning removes (``none`` is a multiplication by zero, dead convolutions still run).
Predicting each pruned graph's median latency perfectly would reach only ~77 % ±10 % accuracy
on ``1080ti_1`` (~70 % on the CPUs; ``latlab.experiments.brpnas`` reports this ceiling per
device), so the pruned graph cannot reach BRP-NAS's reported ~96 % on these measurements.

``graph_features`` concatenates the network's standardised summary (27 static features) to
the global node's state at the readout; ``"auto"`` enables it for generic graphs only
(BRP-NAS's cell graph has none).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latlab.encoders.base import encoder_from_state, encoder_to_state
from latlab.encoders.ir import NetworkGraph
from latlab.errors import DataError
from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.common import check_target, decode_target, encode_target, internal_split
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, flt, integer

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "gcn.safetensors"
#: ``graph=`` values: ``auto`` or a name in :data:`latlab.encoders.graph.GRAPH_ENCODERS`.
AUTO_GRAPH = "auto"
LOSSES = ("l1", "mse")


def choose_graph(graph: str, graphs: Sequence[NetworkGraph]) -> str:
    """The graph encoding ``graph="auto"`` resolves to for these training networks."""
    from latlab.datasets.spaces import load_all, space_of
    from latlab.encoders.graph import GRAPH_ENCODERS

    if graph != AUTO_GRAPH and graph not in GRAPH_ENCODERS:
        load_all()  # a lazily registered space's graph encoder
    if graph != AUTO_GRAPH and graph not in GRAPH_ENCODERS:
        known = ", ".join([AUTO_GRAPH, *sorted(GRAPH_ENCODERS)])
        raise DataError(f"graph must be one of {known}, got {graph!r}")
    if graph != AUTO_GRAPH:
        return graph
    space = space_of(graphs)
    return (space.graph if space is not None else None) or "generic"


def make_graph_encoder(kind: str, graph_features: bool) -> Any:
    """The graph encoder registered as ``kind`` (:data:`~latlab.encoders.graph.GRAPH_ENCODERS`;
    search spaces register theirs)."""
    from latlab.encoders.graph import make_graph_encoder as make

    return make(kind, graph_features)


class GcnModel:
    """Builds the torch module; the class is defined inside :meth:`build` so that importing
    this module (every ``import latlab.predictors``) does not import torch."""

    @staticmethod
    def build(
        n_node: int, n_graph: int, hidden: int, layers: int, dropout: float
    ) -> torch.nn.Module:
        import torch
        from torch import nn
        from torch_geometric.nn import GCNConv

        class _Gcn(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.convs = nn.ModuleList(
                    GCNConv(
                        n_node if i == 0 else hidden,
                        hidden,
                        normalize=False,
                        add_self_loops=False,
                        bias=True,
                    )
                    for i in range(layers)
                )
                self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
                self.dropout = nn.Dropout(dropout)
                self.head = nn.Linear(hidden + n_graph, 1)

            def forward(
                self,
                x: torch.Tensor,
                adj: torch.Tensor,
                readout: torch.Tensor,
                graph_features: torch.Tensor | None,
            ) -> torch.Tensor:
                for conv, norm in zip(self.convs[:-1], self.norms[:-1], strict=True):
                    x = self.dropout(torch.relu(norm(conv(x, adj))))
                last = self.convs[-1]
                # The last convolution at the global nodes only: (A_g X) W + b.
                h = last.lin(torch.sparse.mm(readout, x)) + last.bias  # type: ignore[operator]
                h = self.dropout(torch.relu(self.norms[-1](h)))
                if graph_features is not None:
                    h = torch.cat([h, graph_features], dim=1)
                return self.head(h).squeeze(-1)

        return _Gcn()


def collate(datas: Sequence[Any]) -> tuple[Any, ...]:
    """One model input from encoded graphs (see :func:`batch_inputs`)."""
    from torch_geometric.data import Batch

    return batch_inputs(Batch.from_data_list(list(datas)))


def batch_inputs(batch: Any) -> tuple[Any, ...]:
    """``(x, adj, readout, graph_features)`` of a torch-geometric ``Batch``.

    ``adj`` is the ``(N, N)`` CSR matrix with ``adj[i, j] = 1`` for a message ``j -> i``
    (torch-geometric's ``edge_index`` transposed), ``readout`` its rows at the global nodes
    (``(B, N)``, one global node per graph).
    """
    import torch

    n = int(batch.num_nodes)
    src, dst = batch.edge_index
    ones = torch.ones(src.numel(), dtype=torch.float32)
    g = batch.global_index
    pos = torch.full((n,), -1, dtype=torch.long)
    pos[g] = torch.arange(len(g))
    keep = pos[dst] >= 0
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(
            torch.stack([dst, src]), ones, (n, n), check_invariants=False
        ).coalesce()
        readout = torch.sparse_coo_tensor(
            torch.stack([pos[dst[keep]], src[keep]]),
            ones[keep],
            (len(g), n),
            check_invariants=False,
        ).coalesce()
        csr = adj.to_sparse_csr(), readout.to_sparse_csr()
    gf = batch.graph_features if "graph_features" in batch else None
    return batch.x, csr[0], csr[1], gf


class GcnPredictor(LatencyPredictor):
    """BRP-NAS-style GCN (see the module docstring for the defaults and the graphs)."""

    name = "gcn"
    #: ``n_jobs`` (sklearn's name, as gbm/rf take it) was ``num_threads`` before.
    renamed_params: ClassVar[Mapping[str, str]] = {"num_threads": "n_jobs"}
    param_space = HyperparameterSpace(
        {
            "num_layers": integer(2, 6),
            "hidden": cat(128, 256, 400, 600),
            "dropout": flt(0.0, 0.3),
            "learning_rate": flt(5e-5, 5e-3, log=True),
            "weight_decay": flt(1e-6, 1e-2, log=True),
            "batch_size": cat(16, 32, 64, 128),
        },
        epoch_based=True,
    )

    def __init__(
        self,
        graph: str = "auto",
        graph_features: bool | str = "auto",
        num_layers: int = 4,
        hidden: int = 600,
        dropout: float = 0.002,
        learning_rate: float = 4e-4,
        weight_decay: float = 5e-4,
        batch_size: int = 32,
        max_epochs: int = 250,
        patience: int = 35,
        lr_patience: int = 10,
        warmup_epochs: int = 20,
        loss: str = "l1",
        val_fraction: float = 0.1,
        target: str = "log",
        predict_max_nodes: int = 1 << 20,
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.graph = graph
        self.graph_features = graph_features
        self.num_layers = num_layers
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr_patience = lr_patience
        self.warmup_epochs = warmup_epochs
        self.loss = loss
        self.val_fraction = val_fraction
        self.target = target
        self.predict_max_nodes = predict_max_nodes
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers

    def _module(self) -> torch.nn.Module:
        if int(self.num_layers) < 1 or int(self.hidden) < 1:
            raise DataError(
                f"num_layers and hidden must be >= 1, got {self.num_layers}, {self.hidden}"
            )
        return GcnModel.build(
            self.n_node_features_,
            self.n_graph_features_,
            int(self.hidden),
            int(self.num_layers),
            float(self.dropout),
        )

    def _encode(self, networks: Sequence[Network]) -> list[Any]:
        return list(self.encoder_.transform(as_graphs(networks)))

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        import torch

        z = (encode_target(y, self.target) - self.y_mean_) / self.y_std_
        return torch.from_numpy(z.astype(np.float32))

    # ------------------------------------------------------------------ contract

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        import torch
        from torch_geometric.loader import DataLoader

        from latlab.predictors.torch_utils import seeded, torch_threads, train_epochs

        check_target(self.target)
        if self.loss not in LOSSES:
            raise DataError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        graphs = as_graphs(networks)
        self.graph_kind_ = choose_graph(self.graph, graphs)
        gf = self.graph_features
        if gf == "auto":
            gf = self.graph_kind_ == "generic"
        elif not isinstance(gf, bool):
            raise DataError(f"graph_features must be True, False or 'auto', got {gf!r}")
        self.encoder_ = make_graph_encoder(self.graph_kind_, bool(gf)).fit(graphs)
        self.n_node_features_ = int(self.encoder_.num_node_features)
        self.n_graph_features_ = int(self.encoder_.num_graph_features)
        z = encode_target(y, self.target)
        self.y_mean_, self.y_std_ = float(z.mean()), float(z.std()) or 1.0
        datas = self.encoder_.transform(graphs)
        t_all = self._targets(y)
        for d, t in zip(datas, t_all, strict=True):
            d.y = t.reshape(1)
        if eval_set is not None:
            train, val = datas, self._encode(eval_set[0])
            t_val = self._targets(eval_set[1])
        else:
            tr, va = internal_split(len(y), self.val_fraction, self.random_state)
            train = [datas[i] for i in tr]
            val = [datas[i] for i in va]
            t_val = t_all[va]
        loss_fn = torch.nn.L1Loss() if self.loss == "l1" else torch.nn.MSELoss()
        with seeded(self.random_state), torch_threads(self.n_jobs):
            self.model_ = model = self._module()
            opt = torch.optim.AdamW(
                model.parameters(),
                lr=float(self.learning_rate),
                weight_decay=float(self.weight_decay),
                fused=True,  # one kernel for all parameters: 7x faster steps on a CPU
            )
            gen = torch.Generator().manual_seed(int(self.random_state))
            loader = DataLoader(
                train, batch_size=max(1, int(self.batch_size)), shuffle=True, generator=gen
            )
            val_batch = collate(val)

            def step(batch: Any) -> torch.Tensor:
                return loss_fn(model(*batch_inputs(batch)), batch.y)

            def val_loss() -> float:
                return float(loss_fn(model(*val_batch), t_val))

            self.train_log_ = train_epochs(
                model,
                opt,
                step,
                lambda epoch: loader,
                val_loss,
                max_epochs=int(self.max_epochs),
                patience=int(self.patience),
                lr_patience=int(self.lr_patience),
                warmup_epochs=int(self.warmup_epochs),
                threshold=0.01,
            ).as_dict()

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return self.predict_encoded(self.encode(as_graphs(networks)))

    encoding = "graphs-light"
    feature_state_keys = (
        "graph_kind",
        "encoder",
        "n_node_features",
        "n_graph_features",
        "y_mean",
        "y_std",
    )

    def encode(self, graphs: Sequence[NetworkGraph]) -> list[Any]:
        """The encoder's light graph of each network (what the serving cache keeps)."""
        self._check_fitted()
        return list(self.encoder_.transform_light(list(graphs)))

    def predict_encoded(self, items: Sequence[Any]) -> np.ndarray:
        import torch

        from latlab.predictors.gcn_infer import predict_compressed
        from latlab.predictors.torch_utils import torch_threads

        self._check_fitted()
        if len(items) == 0:
            return np.zeros(0)
        self.model_.eval()
        with torch.inference_mode(), torch_threads(self.n_jobs):
            out = predict_compressed(self.model_, list(items), max(1, int(self.predict_max_nodes)))
        return np.asarray(decode_target(out * self.y_std_ + self.y_mean_, self.target))

    def _state(self, directory: Path) -> dict[str, Any]:
        from latlab.predictors.torch_utils import save_state_dict

        save_state_dict(self.model_, directory / WEIGHTS_FILE)
        return {
            "graph_kind": self.graph_kind_,
            "encoder": encoder_to_state(self.encoder_),
            "n_node_features": self.n_node_features_,
            "n_graph_features": self.n_graph_features_,
            "y_mean": self.y_mean_,
            "y_std": self.y_std_,
            "train_log": self.train_log_,
            "weights_file": WEIGHTS_FILE,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        from latlab.predictors.torch_utils import load_state_dict

        self.graph_kind_ = str(state["graph_kind"])
        self.encoder_ = encoder_from_state(state["encoder"])
        self.n_node_features_ = int(state["n_node_features"])
        self.n_graph_features_ = int(state["n_graph_features"])
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])
        self.train_log_ = state.get("train_log", {})
        self.model_ = self._module()
        load_state_dict(self.model_, directory, state.get("weights_file", WEIGHTS_FILE))
