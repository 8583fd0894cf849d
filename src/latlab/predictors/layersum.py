"""The layer-wise sum model fitted from whole-network latencies: a per-layer lookup table.

BRP-NAS compares its GCN with a *layer-wise predictor*: the latency of a network as the sum of
the latencies of its layers, each looked up in a table. BRP-NAS measures the table entries one
layer at a time; a table of network latencies (the NAS-Bench-201 table) has no per-layer
measurements, so here the entries are *fitted*: every distinct layer (its
:meth:`~latlab.encoders.ir.Layer.signature`: op, shapes, attributes, weights) is one column of
a count matrix, and the per-layer times are the non-negative least-squares solution of
``t = Σ count_layer · time_layer + overhead``, weighted by ``1/t²`` so that relative errors are
minimised (as for every latlab predictor). Non-negativity keeps each entry a latency.

Two kinds of table (``layers``):

* ``"<space>-ops"`` (``"auto"`` picks it when every network belongs to a search space with an
  op-count encoding, :attr:`SearchSpace.counts`); for ``"nb201-ops"`` (NAS-Bench-201 cells) one
  entry per cell operation, counted over **all six edges** of the cell -- as BRP-NAS's
  layer-wise model sums every op of the cell -- plus one per operation on a *live* edge (on an
  input-output path; :class:`~latlab.encoders.vector.Nb201OpCountEncoder`). The first is the
  cost of an op the device runs whether or not its result is used, the second the extra cost
  of a used one: frameworks that drop dead ops pay only the second. The graph latlab builds
  has the dead ops pruned, so its layers alone cannot show what the device ran.
* ``"ir"`` (any network): one entry per distinct layer of latlab's graph.

What the model cannot do is what the BRP-NAS comparison shows: a sum of independent layer
times ignores fusion, caching and scheduling between layers. A layer type never seen in
training has no entry; it is counted as zero time and logged as a warning (the prediction is
then a lower bound), never silently hidden.

Not the other look-up table, ``lut`` (:class:`latlab.predictors.layerwise.LutPredictor`): that
one is trained on *per-layer benchmark measurements* (``latlab bench``), looks a layer up as the
nearest benchmarked configuration in ANNETTE's feature space (scaled by its work, so unseen
shapes get an estimate) and sums *mapped* layers after its fusion model. This one needs only
whole-network latencies, has one exact entry per layer signature (or cell op), and no fusion.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat

log = logging.getLogger(__name__)


def layer_key(layer: Any) -> str:
    """A readable, stable key of a layer's signature (op and shapes first)."""
    op, ins, outs, attrs, weights, wbits, abits = layer.signature()
    return f"{op}|{ins}|{outs}|{attrs}|{weights}|{wbits}|{abits}"


OPS_SUFFIX = "-ops"


def _space_counts(space_name: str, graphs: list[Any]) -> list[dict[str, int]]:
    """Each network's op counts from its space's count encoder (:attr:`SearchSpace.counts`)."""
    from latlab.datasets.spaces import get_space
    from latlab.encoders.vector import make_vector_encoder
    from latlab.errors import FeatureError

    space = get_space(space_name)
    if space.counts is None:
        raise FeatureError(f"layer-sum: search space {space_name!r} has no op-count encoding")
    bad = next((g for g in graphs if not space.owns(g)), None)
    if bad is not None:
        raise FeatureError(
            f"layer-sum with layers='{space_name}{OPS_SUFFIX}': {bad.reference!r} is no "
            f"{space_name} network"
        )
    enc = make_vector_encoder(space.counts)
    names = [str(n) for n in enc.get_feature_names_out()]
    x = enc.transform(graphs)
    return [{n: int(v) for n, v in zip(names, row, strict=True) if v} for row in x]


def _ops_space(graphs: list[Any]) -> str | None:
    """The space whose op counts ``auto`` uses: the one all ``graphs`` belong to, if it has
    an op-count encoding."""
    from latlab.datasets.spaces import space_of

    space = space_of(graphs)
    if space is None or space.counts is None or not space.counts_additive:
        return None
    if not all(space.owns(g) for g in graphs):
        return None
    return space.name


def layer_counts(networks: list[Network], layers: str = "ir") -> list[dict[str, int]]:
    """How many times each table entry occurs in each network (``layers``: ``ir`` or
    ``<space>-ops``, e.g. ``nb201-ops``)."""
    graphs = as_graphs(networks)
    if layers.endswith(OPS_SUFFIX):
        return _space_counts(layers[: -len(OPS_SUFFIX)], graphs)
    out = []
    for g in graphs:
        counts: dict[str, int] = {}
        for layer in g.layers:
            k = layer_key(layer)
            counts[k] = counts.get(k, 0) + 1
        out.append(counts)
    return out


class LayerSumPredictor(LatencyPredictor):
    """Network latency as a sum of fitted per-layer lookup-table times plus an overhead."""

    name = "layer-sum"
    #: Per-op table over every nb201 cell edge (auto on nb201) or per distinct IR layer.
    param_space = HyperparameterSpace({"layers": cat("auto", "ir")})

    def __init__(self, layers: str = "auto") -> None:
        self.layers = layers

    def _kind(self, networks: list[Network]) -> str:
        from latlab.datasets.spaces import SPACES
        from latlab.errors import DataError

        named = self.layers.endswith(OPS_SUFFIX) and self.layers[: -len(OPS_SUFFIX)] in SPACES
        if self.layers not in ("auto", "ir") and not named:
            raise DataError(
                f"layer-sum: unknown layers={self.layers!r} (auto, ir, <space>-ops such as "
                "nb201-ops)"
            )
        if self.layers != "auto":
            return self.layers
        space = _ops_space(as_graphs(networks))
        return f"{space}{OPS_SUFFIX}" if space else "ir"

    def _matrix(self, counts: list[dict[str, int]], keys: list[str]) -> np.ndarray:
        col = {k: i for i, k in enumerate(keys)}
        x = np.zeros((len(counts), len(keys) + 1))
        x[:, -1] = 1.0  # the per-inference overhead, a non-negative coefficient too
        for row, c in enumerate(counts):
            for k, n in c.items():
                j = col.get(k)
                if j is not None:
                    x[row, j] = n
        return x

    def _fit(self, networks: list[Network], y: np.ndarray, eval_set: Any) -> None:
        self.kind_ = self._kind(networks)
        counts = layer_counts(networks, self.kind_)
        keys = sorted({k for c in counts for k in c})
        x = self._matrix(counts, keys)
        # Columns with the same count in every training network cannot be told apart from
        # the overhead; the non-negative solution then shares the time among them, which
        # sums to the same prediction for every network with those counts.
        reg = LinearRegression(positive=True, fit_intercept=False)
        reg.fit(x, y, sample_weight=1.0 / y**2)
        self.keys_ = keys
        self.times_ = reg.coef_[:-1].astype(float)
        self.overhead_ = float(reg.coef_[-1])

    def _predict(self, networks: list[Network]) -> np.ndarray:
        counts = layer_counts(networks, self.kind_)
        known = set(self.keys_)
        unseen = {k for c in counts for k in c if k not in known}
        if unseen:
            log.warning(
                "layer-sum: %d layer type(s) not in the lookup table count as 0 ms (e.g. %s)",
                len(unseen),
                sorted(unseen)[0],
            )
        return self._matrix(counts, self.keys_) @ np.append(self.times_, self.overhead_)

    def table(self) -> dict[str, float]:
        """The fitted lookup table: layer key -> ms (with ``"overhead"``)."""
        return {
            **dict(zip(self.keys_, self.times_.tolist(), strict=True)),
            "overhead": self.overhead_,
        }

    def _state(self, directory: Path) -> dict[str, Any]:
        return {
            "kind": self.kind_,
            "keys": self.keys_,
            "times": self.times_.tolist(),
            "overhead": self.overhead_,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.kind_ = str(state["kind"])
        self.keys_ = list(state["keys"])
        self.times_ = np.asarray(state["times"], dtype=float)
        self.overhead_ = float(state["overhead"])
