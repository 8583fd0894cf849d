"""Encoders of search spaces defined by discrete choices (FBNet, OFA, and any space like them).

A space whose networks are a sequence of discrete choices puts them in the graph's ``meta``
(the contract these encoders read; they never touch ``graph.layers``):

* ``meta["choices"]`` -- one option index per position, ``-1`` for an inactive position (an
  OFA block beyond its stage's depth);
* ``meta["tokens"]`` -- the tokens to count (FBNet: the 22 block names; OFA: ``k5``, ``e4``,
  ``k5_e4`` of every active block);
* ``meta["blocks"]`` -- per block position ``(token, stage)`` or ``None`` when inactive, and
  ``meta["scalars"]`` -- numbers every block node carries (OFA: resolution / 224).

The encoders are parametrised by the space's vocabulary (constructor parameters, saved as
JSON with the predictor), so one class serves every such space; the space module registers
them under its own names (``fbnet-onehot``, ``ofa-counts``, ``fbnet-blocks``, ...).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latlab.encoders.base import EncoderStateMixin, batch_rows, check_graphs, feature_names
from latlab.encoders.graph import (
    GLOBAL_EDGES,
    EncodedGraph,
    check_choice,
    light_to_data,
    wire_edges,
)
from latlab.encoders.ir import NetworkGraph
from latlab.errors import FeatureError

if TYPE_CHECKING:
    from torch_geometric.data import Data


def _meta(graph: NetworkGraph, key: str, family: str, encoder: str) -> Any:
    value = graph.meta.get(key)
    if value is None or graph.family != family:
        raise FeatureError(
            f"{encoder}: network {graph.reference!r} is not a {family} network "
            f"(no meta {key!r}): this encoder only encodes {family} networks"
        )
    return value


class ChoiceOneHotEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """One-hot of each position's option: ``sum(len(options[p]))`` binary features; an inactive
    position (``-1``) is all zeros. Reads ``meta["choices"]``. Stateless."""

    def __init__(
        self,
        family: str = "",
        positions: Sequence[str] = (),
        options: Sequence[Sequence[str]] = (),
    ) -> None:
        self.family = family
        self.positions = positions
        self.options = options

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> ChoiceOneHotEncoder:
        self.transform(graphs)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return feature_names(
            [f"{p}={o}" for p, opts in zip(self.positions, self.options, strict=True) for o in opts]
        )

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        name = type(self).__name__
        gs = check_graphs(graphs, name)
        sizes = np.array([len(o) for o in self.options], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        given = batch_rows(gs, "choices")
        if (
            given is not None
            and given[1].family == self.family
            and given[0].shape[1:] == (len(sizes),)
        ):
            idx = np.asarray(given[0], dtype=np.int64)
        else:
            idx = self._choices(gs, len(sizes))
        if np.any(idx >= sizes):
            bad = gs[int(np.argwhere(idx >= sizes)[0, 0])]
            raise FeatureError(f"{name}: network {bad.reference!r} has an unknown option")
        out = np.zeros((len(gs), int(sizes.sum())), dtype=np.float64)
        rows, cols = np.nonzero(idx >= 0)
        out[rows, offsets[cols] + idx[rows, cols]] = 1.0
        return out

    def _choices(self, gs: list[NetworkGraph], n_positions: int) -> np.ndarray:
        name = type(self).__name__
        chosen = []
        for g in gs:
            ch = _meta(g, "choices", self.family, name)
            if len(ch) != n_positions:
                raise FeatureError(f"{name}: network {g.reference!r} has {len(ch)} choices")
            chosen.append(ch)
        # one conversion of all rows (row by row costs more than the rest of the encoding)
        return np.fromiter(
            itertools.chain.from_iterable(chosen), dtype=np.int64, count=len(chosen) * n_positions
        ).reshape(len(chosen), n_positions)


class TokenCountEncoder(EncoderStateMixin, TransformerMixin, BaseEstimator):
    """How many times each token of ``vocab`` occurs in ``meta["tokens"]`` (how much of each
    block kind a network has: a sum tree models cannot add up from one-hot columns).
    Stateless."""

    def __init__(self, family: str = "", vocab: Sequence[str] = ()) -> None:
        self.family = family
        self.vocab = vocab

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> TokenCountEncoder:
        self.transform(graphs)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return feature_names([f"count={t}" for t in self.vocab])

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        name = type(self).__name__
        gs = check_graphs(graphs, name)
        col = {t: j for j, t in enumerate(self.vocab)}
        out = np.zeros((len(gs), len(col)), dtype=np.float64)
        given = batch_rows(gs, "tokens")
        if given is not None and given[1].family == self.family:
            counts, batch = given
            for k, t in enumerate(batch.columns["tokens"]):
                j = col.get(t)
                if j is not None:
                    out[:, j] = counts[:, k]
                elif np.any(counts[:, k]):
                    bad = gs[int(np.flatnonzero(counts[:, k])[0])]
                    raise FeatureError(f"{name}: network {bad.reference!r} has unknown token {t!r}")
            return out
        for i, g in enumerate(gs):
            # counted first (in C), then placed: a network repeats few distinct tokens
            for t, n in Counter(_meta(g, "tokens", self.family, name)).items():
                j = col.get(t)
                if j is None:
                    raise FeatureError(f"{name}: network {g.reference!r} has unknown token {t!r}")
                out[i, j] = n
        return out


class BlockChainGraphEncoder(  # type: ignore[call-arg]  # TransformerMixin takes it
    EncoderStateMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """A chain network as a graph of its blocks, for the GCN (the cell graph's analogue).

    Nodes: ``[global], input, block_1 .. block_P, output``. A block node's features are the
    one-hot of its token in ``vocab``, the one-hot of its stage (``n_stages``) and the
    network's ``meta["scalars"]`` (``n_scalars``); input, output and global nodes are flagged.
    Data flows input -> active blocks in order -> output; inactive blocks keep their place as
    featureless, edge-less nodes (as BRP-NAS's pruned cells), so every graph has one size.
    Edges follow the cell encoder's conventions (``direction``, ``global_edges``,
    ``self_loops``). Stateless.
    """

    def __init__(
        self,
        family: str = "",
        vocab: Sequence[str] = (),
        n_blocks: int = 0,
        n_stages: int = 1,
        n_scalars: int = 0,
        global_node: bool = True,
        direction: str = "reverse",
        global_edges: str = "in",
        self_loops: bool = True,
    ) -> None:
        self.family = family
        self.vocab = vocab
        self.n_blocks = n_blocks
        self.n_stages = n_stages
        self.n_scalars = n_scalars
        self.global_node = global_node
        self.direction = direction
        self.global_edges = global_edges
        self.self_loops = self_loops

    def fit(self, graphs: Sequence[NetworkGraph], y: Any = None) -> BlockChainGraphEncoder:
        self.transform_light(graphs)
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [*self.vocab, *(f"stage{s}" for s in range(self.n_stages))]
        names += [f"scalar{i}" for i in range(self.n_scalars)]
        names += ["input", "output"]
        return feature_names([*names, "global"] if self.global_node else names)

    @property
    def num_node_features(self) -> int:
        return len(self.get_feature_names_out())

    @property
    def num_graph_features(self) -> int:
        return 0

    def transform(self, graphs: Sequence[NetworkGraph]) -> list[Data]:
        return light_to_data(self.transform_light(graphs))

    def transform_light(self, graphs: Sequence[NetworkGraph]) -> list[EncodedGraph]:
        import torch

        name = type(self).__name__
        check_choice("direction", self.direction, ("forward", "reverse", "both"))
        check_choice("global_edges", self.global_edges, GLOBAL_EDGES)
        gs = check_graphs(graphs, name)
        col = {t: j for j, t in enumerate(self.vocab)}
        n_vocab, off = len(self.vocab), 1 if self.global_node else 0
        n_nodes = self.n_blocks + 2 + off
        width = self.num_node_features
        flag = n_vocab + self.n_stages + self.n_scalars
        edges: dict[tuple[bool, ...], torch.Tensor] = {}
        out = []
        for g in gs:
            blocks = _meta(g, "blocks", self.family, name)
            scalars = list(g.meta.get("scalars", ()))
            if len(blocks) != self.n_blocks or len(scalars) != self.n_scalars:
                raise FeatureError(f"{name}: network {g.reference!r} does not fit this encoder")
            x = np.zeros((n_nodes, width), dtype=np.float32)
            x[off, flag] = 1.0
            x[off + self.n_blocks + 1, flag + 1] = 1.0
            if self.global_node:
                x[0, flag + 2] = 1.0
            active = tuple(b is not None for b in blocks)
            for p, b in enumerate(blocks):
                if b is None:
                    continue
                token, stage = b
                j = col.get(token)
                if j is None:
                    raise FeatureError(f"{name}: network {g.reference!r} has unknown {token!r}")
                row = x[off + 1 + p]
                row[j] = 1.0
                row[n_vocab + int(stage)] = 1.0
                row[n_vocab + self.n_stages : flag] = scalars
            e = edges.get(active)
            if e is None:
                chain = [off] + [off + 1 + p for p, a in enumerate(active) if a]
                chain.append(off + self.n_blocks + 1)
                flow = np.array(list(itertools.pairwise(chain)), dtype=np.int64)
                wired = wire_edges(
                    flow.reshape(-1, 2),
                    n_nodes,
                    0 if self.global_node else None,
                    self.direction,
                    self.global_edges,
                    self.self_loops,
                )
                e = edges[active] = torch.from_numpy(wired)
            glob = torch.tensor([0], dtype=torch.long) if self.global_node else None
            out.append(EncodedGraph(torch.from_numpy(x), e, n_nodes, glob, None, g.reference))
        return out
