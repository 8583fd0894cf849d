"""Exact, fast GCN inference by evaluating each distinct node state once.

In an un-normalised GCN (``h_i' = act(norm(W · Σ_j A_ij h_j + b))``, dropout off at inference)
a node's state after ``ℓ`` layers depends only on the multiset of its neighbours' states after
``ℓ - 1`` layers -- the colour refinement of the Weisfeiler-Lehman test. Across thousands of
networks from one search space most nodes share their colour at the early layers (the whole
NAS-Bench-201 space, 140,625 cell nodes, has 8 input colours, 301 after one layer and ~32,000
after three), so computing every layer on one representative per colour, and the last layer
only at the global nodes the readout reads, gives the same predictions with a fraction of the
matrix products.

Colours are ids of multisets: each colour of layer ``ℓ - 1`` gets two random 64-bit words and a
node's key is the wrapping sum of its neighbours' words (an order-free multiset hash, 128 bits:
a collision between different multisets has probability ~1e-29 per pair). Identical keys mean
identical states, and the aggregation of a representative uses its own neighbours' exact
states, so no approximation is made anywhere.

The sum is taken over the representative's neighbours in edge order, so predictions can differ
from the batched training path in the last float32 bits -- never between two calls on the same
input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: Seed of the colour words (any fixed value: colours are only ids).
_SEED = 0x6C61746C6162


def _row_ids(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index of each distinct row of ``a`` and every row's id (ids in sorted order)."""
    a = np.ascontiguousarray(a)
    rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def concat_graphs(datas: Sequence[Any]) -> tuple[Any, ...]:
    """``(x, src, dst, global_nodes, graph_features)`` of many encoded graphs (torch-geometric
    ``Data`` or :class:`~latlab.encoders.graph.EncodedGraph`), offsets applied.

    ``src -> dst`` are the message directions (torch-geometric's ``edge_index`` rows). A plain
    concatenation: ``Batch.from_data_list`` does the same with per-attribute bookkeeping that
    costs more than the model on small graphs.
    """
    import torch

    sizes = torch.tensor([int(d.num_nodes) for d in datas])
    offsets = torch.cumsum(sizes, 0) - sizes
    x = torch.cat([d.x for d in datas])
    counts = torch.tensor([d.edge_index.shape[1] for d in datas])
    edge_index = torch.cat([d.edge_index for d in datas], dim=1)
    edge_index = edge_index + torch.repeat_interleave(offsets, counts)
    glob = torch.cat([d.global_index for d in datas]) + offsets
    has_gf = getattr(datas[0], "graph_features", None) is not None
    gf = torch.cat([d.graph_features for d in datas]) if has_gf else None
    return x, edge_index[0], edge_index[1], glob, gf


def _aggregation(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Sparse CSR count matrix with ``m[r, c] += 1`` for every pair."""
    import warnings

    import torch

    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want
        warnings.simplefilter("ignore", UserWarning)
        m = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, cols])),
            torch.ones(len(rows), dtype=torch.float32),
            shape,
            check_invariants=False,
        ).coalesce()
        return m.to_sparse_csr()


def predict_compressed(
    model: torch.nn.Module, datas: Sequence[Any], max_nodes: int = 1 << 20
) -> np.ndarray:
    """The model's outputs (standardised target) for encoded graphs, via colour refinement.

    ``model`` is :class:`latlab.predictors.gcn.GcnModel`'s module in eval mode. Graphs are
    processed in chunks of at most ``max_nodes`` nodes (bounding memory on big networks).
    """
    out = np.empty(len(datas), dtype=np.float64)
    start = 0
    while start < len(datas):
        stop, nodes = start, 0
        while stop < len(datas) and (stop == start or nodes + datas[stop].num_nodes <= max_nodes):
            nodes += int(datas[stop].num_nodes)
            stop += 1
        out[start:stop] = _predict_chunk(model, datas[start:stop])
        start = stop
    return out


def _predict_chunk(model: Any, datas: Sequence[Any]) -> np.ndarray:
    import torch

    x, src_t, dst_t, glob_t, gf = concat_graphs(datas)
    src, dst, glob = src_t.numpy(), dst_t.numpy(), glob_t.numpy()
    first, color = _row_ids(x.numpy())
    h = x[torch.from_numpy(first)]
    rng = np.random.default_rng(_SEED)
    n_layers = len(model.convs)
    for layer, (conv, norm) in enumerate(zip(model.convs, model.norms, strict=True)):
        words = rng.integers(0, np.iinfo(np.uint64).max, size=(len(h), 2), dtype=np.uint64)
        last = layer == n_layers - 1
        key = np.zeros((len(color), 2), dtype=np.uint64)
        np.add.at(key, dst, words[color[src]])
        if last:
            first, graph_color = _row_ids(key[glob])
            reps = glob[first]
        else:
            first, new_color = _row_ids(key)
            reps = first
        pos = np.full(len(color), -1, dtype=np.int64)
        pos[reps] = np.arange(len(reps))
        keep = pos[dst] >= 0
        agg = _aggregation(pos[dst[keep]], color[src[keep]], (len(reps), len(h)))
        # Multiply by W on whichever side has fewer rows: (S·H)·W == S·(H·W).
        if len(reps) <= len(h):
            z = conv.lin(torch.sparse.mm(agg, h))
        else:
            z = torch.sparse.mm(agg, conv.lin(h))
        h = torch.relu(norm(z + conv.bias))
        if not last:
            color = new_color
    readout = h[torch.from_numpy(graph_color)]
    if gf is not None:
        readout = torch.cat([readout, gf], dim=1)
    return model.head(readout).squeeze(-1).double().numpy()
