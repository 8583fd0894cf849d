"""Layer-wise latency predictors (ANNETTE): per-layer-type models + mapping model, summed.

Registered as ``roofline``, ``refined``, ``statistical``, ``mixed`` and ``lut`` (the layer model
each uses; see :mod:`.models`). They follow the contract of every latlab predictor, with one
twist in what they train on: ``fit(networks, latencies_ms)`` expects **benchmark networks**,
typically the table ``latlab bench --export`` writes:

* a network with a single benchmarked layer (a ``kernel:`` reference with one part besides
  ``padding`` -- the part's last layer is the benchmarked one, e.g. the Gemm of ``fc`` -- or any
  one-layer network) is a layer-model training point: its latency is that layer's time;
* the session probe (``kernel:padding?c=1``) gives the per-network overhead (its end-to-end
  latency), added once per predicted network; ``overhead_ms`` overrides it;
* other networks (multi-layer benchmarks) only add their layer pairs to the mapping model's
  training data (labels from onnxruntime's optimised graph, see ``mapping``).

Prediction for any network: the mapping model groups its layers into mapped layers (what the
runtime fuses); each mapped layer is predicted by the model of its head layer's type (the first
conv/dwconv/fc of the group, else the layer naming a fused transformer kernel -- the
LayerNorm of a SkipLayerNormalization, the Erf of a GELU -- else its first layer; see
:func:`~.layer_inputs.group_head`; fused BN/activations/residual adds cost nothing extra),
falling back to the roofline of the layer's kind and then to the roofline of
all benchmarks, so every layer gets an estimate. The network estimate is the sum plus the
overhead. :meth:`LayerwisePredictor.predict_layers` returns the per-layer table.

**Precision** (``precision="int8"`` or ``"bf16"``; ``latlab train`` takes it from the target
column's precision suffix, ``-int8`` for a device benched with ``--precision int8``, unless
``--param precision=...`` is given: :func:`latlab.training.pipeline.precision_params`):
training and predicted networks are taken at that precision
(:func:`latlab.encoders.quantize.at_precision`: weights and activations at 8/16 bits, bytes
recounted), so every model's memory term ``D`` is the quantised network's, and the
compute term counts int8/bf16 operations in fp32-lane units
(:func:`~.layer_inputs.lane_ops`: a quarter/half of an fp32 op), so a peak fitted at fp32
predicts int8 compute four times faster and one fitted on int8 benchmarks is in the same units.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.encoders.layer_features import ANNETTE_FEATURES
from latlab.errors import DataError
from latlab.predictors.base import LatencyPredictor, Network, as_graphs
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, flt, integer
from latlab.predictors.layerwise.layer_inputs import group_head, group_record, key_chain
from latlab.predictors.layerwise.mapping import MappingModel, labelled_pairs
from latlab.predictors.layerwise.memo import Memo, structure_key
from latlab.predictors.layerwise.models import MODELS, UNROLLED, Roofline, Work

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SESSION_PROBE = "kernel:padding?c=1"  # = latlab.datasets.bench.suites.SESSION_PROBE
_LABEL_CACHE: dict[str, dict[tuple[str, str], str]] = {}

#: (head, feature record) of the mapped layers of the networks predicted lately, keyed by
#: (structure, member layers): every layer-wise model predicts the same groups (:mod:`.memo`).
#: 50,000 records (a few kB each) hold the main job's 128 networks; a NAS loop stays bounded.
_GROUP_RECORDS: Memo[tuple[int, dict[str, Any]]] = Memo(50_000)

#: Columns of :meth:`LayerwisePredictor.predict_layers`.
LAYER_COLUMNS: tuple[str, ...] = (
    "network_index",
    "network",
    "group",
    "layers",
    "layer_indices",
    "head",
    "op",
    "kind",
    "key",
    "model",
    "predicted_ms",
    *ANNETTE_FEATURES,
    "bytes",
)


def benchmarked_layers(graph: NetworkGraph) -> list[int] | None:
    """IR layers of the one part a single-layer benchmark measures (the ``fc`` part's Flatten
    and Gemm, a ``gelu`` part's five primitive ops), None for other networks."""
    ops = graph.meta.get("kernel_ops")
    if ops is not None:
        from latlab.datasets.bench.kernels import part_layers

        parts = [i for i, op in enumerate(ops) if op != "padding"]
        if len(parts) != 1:
            return None
        return part_layers(graph)[parts[0]]
    return [0] if len(graph.layers) == 1 else None


def benchmarked_layer(graph: NetworkGraph) -> int | None:
    """Index of the head layer (:func:`~.layer_inputs.group_head`) of a single-layer benchmark."""
    members = benchmarked_layers(graph)
    return None if members is None else group_head(graph.layers, members)


def runtime_labels(graph: NetworkGraph) -> dict[tuple[str, str], str]:
    """Fusion labels of ``graph``'s layer pairs from this machine's onnxruntime (cached)."""
    from latlab.datasets.bench.trace import fusion_labels, runtime_mapping

    key = graph.reference + "#" + graph.digest
    if key not in _LABEL_CACHE:
        labels = fusion_labels(runtime_mapping(graph))
        _LABEL_CACHE[key] = {(lab.producer_name, lab.consumer_name): lab.label for lab in labels}
    return _LABEL_CACHE[key]


def runtime_mapping_model(
    networks: int,
    max_depth: int = 6,
    random_state: int = 0,
    extra: Sequence[NetworkGraph] = (),
) -> tuple[MappingModel, int]:
    """(mapping model, labelled pairs) fitted on this machine's onnxruntime fusions of the
    first ``networks`` multi-layer benchmarks (and ``extra`` graphs)."""
    from latlab.datasets.bench.suites import multilayer_suite
    from latlab.datasets.references import resolve

    graphs = [resolve(r) for r in multilayer_suite(networks, 0)] + list(extra)
    pairs = labelled_pairs(graphs, [runtime_labels(g) for g in graphs])
    return MappingModel(max_depth, random_state).fit(pairs), len(pairs)


def file_labels(path: str) -> tuple[list[NetworkGraph], list[dict[tuple[str, str], str]]]:
    """Graphs and labels from a fusion table (``latlab bench --export-fusion``)."""
    import pandas as pd

    from latlab.datasets.references import resolve

    p = Path(path)
    if not p.is_file():
        raise DataError(f"fusion table {path!r} not found")
    df = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    missing = {"network", "producer", "consumer", "label"} - set(df.columns)
    if missing:
        raise DataError(f"fusion table {path!r} lacks columns {sorted(missing)}")
    graphs, labels = [], []
    for ref, grp in df.groupby("network", sort=False):
        graphs.append(resolve(str(ref)))
        labels.append({(str(r.producer), str(r.consumer)): str(r.label) for r in grp.itertuples()})
    return graphs, labels


class LayerwisePredictor(LatencyPredictor):
    """Base of the ANNETTE predictors (see the module docstring); ``layer_model`` per class."""

    name = "layerwise"
    layer_model: ClassVar[str] = "roofline"
    min_train_rows = 2
    train_only_references = (SESSION_PROBE,)

    def __init__(
        self,
        mapping: str = "runtime",
        mapping_networks: int = 160,
        mapping_max_depth: int = 6,
        min_points: int = 10,
        quantile: float = 1.0,
        min_time_ms: float = 0.002,
        n_estimators: int = 100,
        min_samples_leaf: int = 1,
        lut_scale: bool = True,
        layout_features: bool = True,
        overhead_ms: float | None = None,
        random_state: int = 0,
        precision: str = "fp32",
    ) -> None:
        self.precision = precision
        self.mapping = mapping
        self.mapping_networks = mapping_networks
        self.mapping_max_depth = mapping_max_depth
        self.min_points = min_points
        self.quantile = quantile
        self.min_time_ms = min_time_ms
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.lut_scale = lut_scale
        self.layout_features = layout_features
        self.overhead_ms = overhead_ms
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def _model_params(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "min_time_ms": self.min_time_ms,
            "n_estimators": self.n_estimators,
            "min_samples_leaf": self.min_samples_leaf,
            "min_points": self.min_points,
            "scale": self.lut_scale,
            "layout_features": self.layout_features,
            "random_state": self.random_state,
        }

    def _graphs(self, networks: Sequence[Network]) -> list[NetworkGraph]:
        """The networks' IRs at the predictor's ``precision`` (bit widths, bytes): a model of
        an int8 device trains on, and predicts, int8 layers (memory term at one byte an
        element, compute in int8 lane units)."""
        from latlab.encoders.quantize import at_precision

        return [at_precision(g, self.precision) for g in as_graphs(list(networks))]

    def _fit(self, networks: list[Network], y: np.ndarray, eval_set: Any) -> None:
        graphs = self._graphs(networks)
        records: list[dict[str, Any]] = []
        times: list[float] = []
        probes: list[float] = []
        multi: list[NetworkGraph] = []
        for g, t in zip(graphs, y, strict=True):
            if g.reference == SESSION_PROBE:
                probes.append(float(t))
                continue
            members = benchmarked_layers(g)
            if members is None:
                multi.append(g)
                continue
            records.append(group_record(g.layers, members)[1])
            times.append(float(t))
        if not records:
            raise DataError(
                "no single-layer benchmarks among the training networks: layer-wise predictors "
                "train on benchmark tables (latlab bench --export)"
            )
        self.models_ = self._fit_models(records, np.asarray(times))
        self.mapping_ = self._fit_mapping(multi)
        if self.overhead_ms is not None:
            self.overhead_ms_ = float(self.overhead_ms)
        else:
            self.overhead_ms_ = float(np.median(probes)) if probes else 0.0
        counts: dict[str, int] = defaultdict(int)
        for r in records:
            counts[r["key"]] += 1
        self.training_ = {
            "layer_points": len(records),
            "points_per_type": dict(sorted(counts.items())),
            "multi_layer_networks": len(multi),
            "session_probes": len(probes),
        }

    def _fit_models(self, records: list[dict[str, Any]], t: np.ndarray) -> dict[str, Roofline]:
        params = self._model_params()
        main = MODELS[self.layer_model]
        by: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            by[r["key"]].append(i)
            if r["kind"] != r["key"]:
                by[r["kind"]].append(i)
            by["*"].append(i)
        models: dict[str, Roofline] = {}
        for key, idx in sorted(by.items()):
            specific = key != "*" and all(records[i]["key"] == key for i in idx)
            cls = main if specific and len(idx) >= self.min_points else Roofline
            work = Work([records[i] for i in idx])
            models[key] = cls(key, **params).fit(work, t[idx])
        return models

    def _fit_mapping(self, multi: list[NetworkGraph]) -> MappingModel | None:
        if self.mapping == "none":
            return None
        if self.mapping == "runtime":
            model, self.mapping_pairs_ = runtime_mapping_model(
                self.mapping_networks, self.mapping_max_depth, self.random_state, multi
            )
            return model
        graphs, labels = file_labels(self.mapping)
        pairs = labelled_pairs(graphs, labels)
        self.mapping_pairs_ = len(pairs)
        model = MappingModel(self.mapping_max_depth, self.random_state)
        return model.fit(pairs)

    # ------------------------------------------------------------------ prediction

    def _groups(self, graph: NetworkGraph) -> list[list[int]]:
        if self.mapping_ is None:
            return [[i] for i in range(len(graph.layers))]
        return self.mapping_.groups(graph)

    def predict_layers(self, networks: Sequence[Network]) -> pd.DataFrame:
        """One row per (network, mapped layer): the per-layer estimates behind ``predict``.

        Columns (:data:`LAYER_COLUMNS`): ``network_index`` (position in ``networks``),
        ``network`` (reference), ``group`` (mapped-layer number in the network), ``layers``
        (IR layer names fused into it) and ``layer_indices``, ``head`` (the layer whose model
        predicts the group), its ``op``, ``kind`` and layer-type ``key``, ``model`` (which
        fitted model answered: ``KEY:MODEL``, e.g. ``conv:mixed`` or ``*:roofline`` for the
        pooled fallback), ``predicted_ms``, the head's ANNETTE features (``h w c f k_h k_w
        stride num_ops num_inputs num_outputs num_weights``) and ``bytes`` moved.
        ``predict(networks)[i]`` equals the sum of ``predicted_ms`` over network ``i`` plus
        ``overhead_ms_`` (also in ``df.attrs["overhead_ms"]``).
        """
        self._check_fitted()
        graphs = self._graphs(networks)
        return self._layer_frame([(g, self._groups(g)) for g in graphs])

    def predict_groups(self, graph: Network, groups: Sequence[Sequence[int]]) -> np.ndarray:
        """Predicted ms of given layer groups of one network (e.g. the runtime's own groups,
        to compare layer models with profiled kernels independently of the mapping model)."""
        self._check_fitted()
        g = self._graphs([graph])[0]
        frame = self._layer_frame([(g, [list(m) for m in groups])])
        return frame["predicted_ms"].to_numpy(dtype=float)

    def _layer_frame(self, items: list[tuple[NetworkGraph, list[list[int]]]]) -> pd.DataFrame:
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for ni, (g, groups) in enumerate(items):
            structure = structure_key(g)
            for gi, members in enumerate(groups):
                head, shared = _GROUP_RECORDS.get(
                    (structure, tuple(members)), partial(group_record, g.layers, members)
                )
                rec = dict(shared)  # the memo's record stays as computed
                rec.update(
                    network_index=ni,
                    network=g.reference,
                    group=gi,
                    layers=tuple(g.layers[i].name for i in members),
                    layer_indices=tuple(members),
                    head=g.layers[head].name,
                )
                rows.append(rec)
        if not rows:
            out = pd.DataFrame(columns=list(LAYER_COLUMNS))
            out.attrs["overhead_ms"] = self.overhead_ms_
            return out
        pred = np.zeros(len(rows))
        used = [""] * len(rows)
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            key = next(k for k in key_chain(r["key"], r["kind"]) if k in self.models_)
            by_model[key].append(i)
        for key, idx in by_model.items():
            model = self.models_[key]
            pred[idx] = model.predict(Work([rows[i] for i in idx]))
            for i in idx:
                used[i] = f"{key}:{model.kind}"
        for i, r in enumerate(rows):
            r["predicted_ms"] = float(pred[i])
            r["model"] = used[i]
        out = pd.DataFrame(rows)[list(LAYER_COLUMNS)]
        out.attrs["overhead_ms"] = self.overhead_ms_
        return out

    def _predict(self, networks: list[Network]) -> np.ndarray:
        layers = self.predict_layers(networks)
        sums = np.zeros(len(networks))
        if len(layers):
            np.add.at(
                sums,
                layers["network_index"].to_numpy(dtype=int),
                layers["predicted_ms"].to_numpy(dtype=float),
            )
        return sums + self.overhead_ms_

    # ------------------------------------------------------------------ persistence

    def _state(self, directory: Path) -> dict[str, Any]:
        models = {}
        for i, (key, model) in enumerate(sorted(self.models_.items())):
            models[key] = model.state(directory, f"layer_model_{i}")
        return {
            "layer_model": self.layer_model,
            "overhead_ms": self.overhead_ms_,
            "training": self.training_,
            "cpu_mapping": {k: list(v) for k, v in UNROLLED.items()},
            "models": models,
            "mapping": None if self.mapping_ is None else self.mapping_.state(directory),
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        params = self._model_params()
        self.overhead_ms_ = float(state["overhead_ms"])
        self.training_ = dict(state.get("training", {}))
        self.models_ = {}
        for key, st in state["models"].items():
            model = MODELS[st["model"]](key, **params)
            model.restore(st, directory)
            self.models_[key] = model
        if state.get("mapping") is None:
            self.mapping_ = None
        else:
            self.mapping_ = MappingModel(self.mapping_max_depth, self.random_state)
            self.mapping_.restore(state["mapping"], directory)


# What can be tuned in a layer-wise predictor is how peaks are read off the benchmarks
# (``quantile``), which points are too short to trust (``min_time_ms``), and the statistical
# models' forests.
_PEAKS = {"quantile": flt(0.8, 1.0), "min_time_ms": flt(0.0005, 0.02, log=True)}
_FOREST = {"n_estimators": integer(50, 400, step=50), "min_samples_leaf": integer(1, 10)}


class RooflinePredictor(LayerwisePredictor):
    """Layer-wise roofline: ``t = max(f/P_peak, D/B_peak)`` per layer type."""

    name = "roofline"
    layer_model = "roofline"
    param_space = HyperparameterSpace(dict(_PEAKS))


class RefinedRooflinePredictor(LayerwisePredictor):
    """Layer-wise refined roofline (utilisation from unrolling, fitted on sweeps)."""

    name = "refined"
    layer_model = "refined"
    param_space = HyperparameterSpace(dict(_PEAKS))


class StatisticalPredictor(LayerwisePredictor):
    """Layer-wise random forests on the ANNETTE vector (time per operation)."""

    name = "statistical"
    layer_model = "statistical"
    param_space = HyperparameterSpace({**_PEAKS, **_FOREST})


class MixedPredictor(LayerwisePredictor):
    """Layer-wise mixed model: refined roofline times a statistical efficiency."""

    name = "mixed"
    layer_model = "mixed"
    param_space = HyperparameterSpace({**_PEAKS, **_FOREST, "min_points": integer(3, 50)})


class LutPredictor(LayerwisePredictor):
    """Layer-wise look-up table: nearest benchmarked configuration, scaled by work.

    Not ``layer-sum`` (:mod:`latlab.predictors.layersum`), the BRP-NAS baseline: that table is
    *fitted* from whole-network latencies (non-negative least squares, one exact entry per
    layer signature, no fusion); this one holds *measured* per-layer benchmarks, answers an
    unseen shape by its nearest entry, and sums the layers its mapping model groups."""

    name = "lut"
    layer_model = "lut"
    param_space = HyperparameterSpace({"lut_scale": cat(True, False), **_PEAKS})
