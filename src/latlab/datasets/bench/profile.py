"""White-box view of a run: which IR layers onnxruntime fused, and each kernel's time.

onnxruntime rewrites a model before running it: it folds BatchNormalization into convolutions,
fuses activations (``FusedConv``, ``FusedGemm``), and at the highest level (the level the
measurement protocol uses) moves convolutions and pooling into a blocked ``NCHWc`` layout,
absorbing residual ``Add`` + activation into the convolution and inserting ``ReorderInput`` /
``ReorderOutput`` nodes at the borders of that layout. Its profiler then reports one duration
per *optimised* node. To compare layer models with the profiler, and to label which successive
layers run as one kernel (the mapping model's training data), optimised nodes must be traced
back to the layers of the IR.

The trace uses two optimised graphs, both written by onnxruntime itself
(``SessionOptions.optimized_model_filepath``):

1. the ``EXTENDED`` level graph keeps the original tensor names: every node's outputs are IR
   tensors, so a node covers exactly the IR layers between its input and output tensors (nodes
   whose outputs are all internal, such as an inlined HardSwish function's HardSigmoid, are
   clustered with their consumer);
2. the ``ALL`` level graph (the one that runs) names a converted node ``<T>_nchwc`` after the
   output tensor ``T`` of the extended-level node it replaces, keeps other nodes' names, and
   drops the extended-level nodes it absorbed. An absorbed ``Add`` belongs to the NCHWc
   convolution whose extra *Sum* input is the Add's other operand; an absorbed activation to
   the node that absorbed its producer. Unnamed nodes are matched by op type and inputs.

Every IR layer thus maps to the runtime node(s) that execute it. Layers sharing a node form a
*runtime group* (a mapped layer); a mapping is ``exact`` unless a fallback rule (the latest
predecessor) had to decide. Runtime-inserted nodes (layout reorders) belong to no layer and are
reported separately. Profiler events are matched to nodes by name and op type, in execution
order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_NCHWC = "com.microsoft.nchwc"
_REORDERS = ("ReorderInput", "ReorderOutput")
_ABSORBING = ("Conv", "FusedConv", "FusedGemm", "Gemm", "MatMul", "FusedMatMul")


def _nchwc_source(name: str, by_output: dict[str, int], by_name: dict[str, int]) -> int | None:
    """Extended-level node an NCHWc node ``<T>_nchwc`` / ``<T>_<tag>_nchwc`` replaces.

    onnxruntime names an NCHWc node after the output tensor of the node it converts (a
    BatchNormalization becomes ``<T>_bn_nchwc``): the longest tensor or node name ``T`` with
    ``name == T + "_..._nchwc"`` wins.
    """
    stem = name[: -len("_nchwc")]
    best: tuple[int, int] | None = None
    for table in (by_output, by_name):
        for key, idx in table.items():
            matches = key and (stem == key or stem.startswith(key + "_"))
            if matches and (best is None or len(key) > best[0]):
                best = (len(key), idx)
    return None if best is None else best[1]


@dataclass
class RuntimeNode:
    """One node of the graph onnxruntime runs, traced back to IR layers."""

    index: int
    name: str
    op: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[int, ...] = ()  # IR layer indices it executes (empty: runtime-inserted)
    inserted: bool = False
    exact: bool = True


@dataclass
class RuntimeGroup:
    """IR layers that run as one unit (one or more runtime nodes): a mapped layer."""

    layers: tuple[int, ...]
    nodes: tuple[int, ...]
    exact: bool


@dataclass
class RuntimeMapping:
    """How onnxruntime maps the IR of ``graph`` to the nodes it runs."""

    graph: NetworkGraph
    nodes: list[RuntimeNode]
    groups: list[RuntimeGroup]
    layer_group: dict[int, int]  # IR layer index -> group index (absent: eliminated)

    def group_of(self, layer: int) -> RuntimeGroup | None:
        g = self.layer_group.get(layer)
        return None if g is None else self.groups[g]

    @property
    def eliminated(self) -> list[int]:
        """IR layers no runtime node executes (removed by the optimiser)."""
        return [i for i in range(len(self.graph.layers)) if i not in self.layer_group]

    def layer_names(self, indices: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.graph.layers[i].name for i in indices)


# --------------------------------------------------------------------------- sessions


def _session_options(threads: int, level: str) -> Any:
    import onnxruntime as ort

    from latlab.datasets.measure.onnxruntime_backend import OnnxRuntimeBackend

    so = OnnxRuntimeBackend().session_options(threads)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return so


def _optimised_model(model_bytes: bytes, threads: int, level: str, folder: Path) -> Any:
    """The model onnxruntime builds at ``level`` (weights kept out of the written file)."""
    import onnx
    import onnxruntime as ort

    so = _session_options(threads, level)
    path = folder / f"optimised-{level}.onnx"
    so.optimized_model_filepath = str(path)
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", f"weights-{level}.bin"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return onnx.load(str(path), load_external_data=False)


def _nodes(model: Any) -> list[RuntimeNode]:
    return [
        RuntimeNode(i, n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output))
        for i, n in enumerate(model.graph.node)
    ]


# --------------------------------------------------------------------------- tracing


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _ext_clusters(graph: NetworkGraph, ext: list[RuntimeNode]) -> dict[int, list[int]]:
    """Extended-level node index -> IR layer indices it covers (tensor names are kept)."""
    ir_tensors = set(graph.inputs) | {t for la in graph.layers for t in la.outputs}
    consumers: dict[str, list[int]] = defaultdict(list)
    for n in ext:
        for t in n.inputs:
            consumers[t].append(n.index)
    uf = _UnionFind(len(ext))
    for n in ext:
        if not any(o in ir_tensors for o in n.outputs):
            for o in n.outputs:
                if consumers.get(o):
                    uf.union(n.index, consumers[o][0])
                    break
    clusters: dict[int, list[int]] = defaultdict(list)
    for n in ext:
        clusters[uf.find(n.index)].append(n.index)
    producer = graph.producer
    assigned: dict[int, int] = {}  # IR layer -> cluster root
    covered: dict[int, list[int]] = {}
    for root in sorted(clusters):
        members = clusters[root]
        produced = {o for i in members for o in ext[i].outputs}
        outs = [o for o in produced if o in producer]
        ins = {t for i in members for t in ext[i].inputs if t not in produced}
        layers: list[int] = []
        stack = [producer[o] for o in outs]
        while stack:
            li = stack.pop()
            if li in assigned or li in layers:
                continue
            layers.append(li)
            for t in graph.layers[li].inputs:
                if t in ins or t not in producer:
                    continue
                stack.append(producer[t])
        for li in layers:
            assigned[li] = root
        for i in members:  # every member of a cluster carries the cluster's layers
            covered[i] = sorted(layers)
    return covered


def _trace(graph: NetworkGraph, ext_model: Any, all_model: Any) -> RuntimeMapping:
    ext = _nodes(ext_model)
    run = _nodes(all_model)
    covered = _ext_clusters(graph, ext)
    ext_by_name = {n.name: n.index for n in ext if n.name}
    ext_by_output = {o: n.index for n in ext for o in n.outputs}
    owner: dict[int, int] = {}  # ext index -> runtime node index
    exact_ext: dict[int, bool] = {}
    absorbed: dict[int, list[int]] = defaultdict(list)
    tmap: dict[str, str] = {}  # runtime tensor -> extended-level tensor

    def match(node: RuntimeNode, e: int) -> None:
        owner[e] = node.index
        exact_ext[e] = True
        for k, o in enumerate(node.outputs):
            if k < len(ext[e].outputs):
                tmap[o] = ext[e].outputs[k]

    pending: list[RuntimeNode] = []
    for node in run:
        if node.domain == _NCHWC and node.op in _REORDERS:
            node.inserted = True
            if node.op == "ReorderInput":
                tmap[node.outputs[0]] = tmap.get(node.inputs[0], node.inputs[0])
            else:
                tmap.setdefault(node.inputs[0], node.outputs[0])
            continue
        e = ext_by_name.get(node.name) if node.name else None
        if e is None and node.name.endswith("_nchwc"):
            e = _nchwc_source(node.name, ext_by_output, ext_by_name)
        if e is not None and e not in owner:
            match(node, e)
        else:
            pending.append(node)

    def preds(e: int) -> list[int]:
        return [ext_by_output[t] for t in ext[e].inputs if t in ext_by_output]

    # Exact absorption: the extended-level tensor a runtime node's output stands for is known
    # when the output keeps its name, when a ReorderOutput turns it back into a named tensor,
    # or when a matched NCHWc consumer reads it as its first input. Every extended-level node
    # between the node's own match and that tensor was absorbed into it.
    ext_of = {rn: e for e, rn in owner.items()}
    all_producer = {o: node.index for node in run for o in node.outputs}
    final: dict[int, str] = {}
    for node in run:
        if node.index in ext_of and node.outputs and node.outputs[0] in ext_by_output:
            final[node.index] = node.outputs[0]
    for node in run:
        src = all_producer.get(node.inputs[0]) if node.inputs else None
        if src is None or src not in ext_of or src in final:
            continue
        if node.op == "ReorderOutput" and node.outputs[0] in ext_by_output:
            final[src] = node.outputs[0]
        elif node.index in ext_of and node.op == ext[ext_of[node.index]].op:
            first = ext[ext_of[node.index]].inputs[0]
            if first in ext_by_output:
                final[src] = first
    for rn_index, tensor in final.items():
        start = ext_of[rn_index]
        end = ext_by_output[tensor]
        if end == start or end in owner:
            continue
        path: list[int] = []
        stack, ok = [end], True
        while stack and ok:
            e = stack.pop()
            if e == start or e in path:
                continue
            if e in owner or not preds(e):
                ok = False
                break
            path.append(e)
            stack.extend(preds(e))
        if ok:
            for e in path:
                owner[e] = rn_index
                exact_ext[e] = True
            tmap[run[rn_index].outputs[0]] = tensor

    # Absorbed extended-level nodes (named ones that no runtime node carries).
    for n in ext:
        if n.index in owner or not n.name:
            continue
        cands = [p for p in preds(n.index) if p in owner]
        if not cands:
            continue
        chosen: int | None = None
        exact = True
        if n.op in ("Add", "Sum") and len(cands) > 1:
            for p in cands:
                rn = run[owner[p]]
                if rn.op == "Conv" and rn.domain == _NCHWC and len(rn.inputs) >= 4:
                    other = [t for t in n.inputs if t not in ext[p].outputs]
                    if other and tmap.get(rn.inputs[3], rn.inputs[3]) in other:
                        chosen = p
                        break
        if chosen is None:
            owners = {owner[p] for p in cands}
            chosen = max(cands)
            # Only kernels with fused epilogues (convolutions, GEMMs) absorb a following layer;
            # anything else means a runtime node was not recognised: keep it, but not exact.
            exact = len(owners) == 1 and run[owner[chosen]].op in _ABSORBING
        owner[n.index] = owner[chosen]
        exact_ext[n.index] = exact and exact_ext.get(chosen, True)
        absorbed[owner[chosen]].append(n.index)
    for rn_index, members in absorbed.items():
        last = max(members)
        for o in run[rn_index].outputs[:1]:
            tmap[o] = ext[last].outputs[0]

    # Unnamed (or renamed) runtime nodes: same op type, inputs that map onto the node's inputs.
    activations = set(ext_by_output) | set(graph.inputs)
    for node in pending:
        mapped = {tmap.get(t, t) for t in node.inputs}
        found = None
        for n in ext:
            if n.index in owner or n.op != node.op:
                continue
            acts = [t for t in n.inputs if t in activations]
            if acts and set(acts) <= mapped:
                found = n.index
                break
        if found is None:
            node.inserted = True
            node.exact = False
            continue
        match(node, found)
    for n in ext:  # still unowned: give to the latest owned predecessor (not exact)
        if n.index in owner:
            continue
        cands = [p for p in preds(n.index) if p in owner]
        if cands:
            owner[n.index] = owner[max(cands)]
            exact_ext[n.index] = False

    node_layers: dict[int, set[int]] = defaultdict(set)
    node_exact: dict[int, bool] = defaultdict(lambda: True)
    for e, rn_index in owner.items():
        node_layers[rn_index].update(covered.get(e, []))
        node_exact[rn_index] = node_exact[rn_index] and exact_ext.get(e, True)
    for node in run:
        node.layers = tuple(sorted(node_layers.get(node.index, set())))
        node.exact = node.exact and node_exact[node.index]

    # Groups: IR layers sharing runtime nodes.
    uf = _UnionFind(len(graph.layers))
    for node in run:
        for a, b in zip(node.layers, node.layers[1:], strict=False):
            uf.union(a, b)
    group_members: dict[int, set[int]] = defaultdict(set)
    for node in run:
        for li in node.layers:
            group_members[uf.find(li)].add(li)
    groups: list[RuntimeGroup] = []
    layer_group: dict[int, int] = {}
    for root in sorted(group_members, key=lambda r: min(group_members[r])):
        lays = tuple(sorted(group_members[root]))
        nodes = tuple(n.index for n in run if set(n.layers) & set(lays))
        exact = all(run[i].exact for i in nodes)
        for li in lays:
            layer_group[li] = len(groups)
        groups.append(RuntimeGroup(lays, nodes, exact))
    return RuntimeMapping(graph, run, groups, layer_group)


def _model_bytes(network: str | NetworkGraph, batch: int = 1) -> bytes:
    from latlab.datasets.references import onnx_model

    return onnx_model(network, batch=batch).SerializeToString()


def runtime_mapping(network: str | NetworkGraph, *, threads: int = 1) -> RuntimeMapping:
    """How onnxruntime (CPU, the protocol's session options) maps ``network``'s layers to nodes.

    Builds two sessions (no inference is run). Raises :class:`MeasurementError` naming the
    network when onnxruntime cannot load it.
    """
    from latlab.datasets.references import resolve

    graph = resolve(network)
    try:
        data = _model_bytes(network)
        with tempfile.TemporaryDirectory(prefix="latlab-ort-") as tmp:
            ext_model = _optimised_model(data, threads, "ORT_ENABLE_EXTENDED", Path(tmp))
            all_model = _optimised_model(data, threads, "ORT_ENABLE_ALL", Path(tmp))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeasurementError(f"onnxruntime cannot optimise {graph.reference!r}: {first}") from exc
    return _trace(graph, ext_model, all_model)


# --------------------------------------------------------------------------- fusion labels

FUSED = "fused"
NOT_FUSED = "not_fused"
POSSIBLY_FUSED = "possibly_fused"
LABELS = (FUSED, NOT_FUSED, POSSIBLY_FUSED)


@dataclass(frozen=True)
class FusionLabel:
    """Whether the runtime executes producer and consumer (successive IR layers) as one unit."""

    producer: int
    consumer: int
    producer_name: str
    consumer_name: str
    producer_op: str
    consumer_op: str
    producer_kind: str
    consumer_kind: str
    label: str
    evidence: str


def fusion_labels(
    mapping: RuntimeMapping, timed_nodes: set[int] | None = None
) -> list[FusionLabel]:
    """One label per data-flow edge of the IR (producer layer -> consumer layer).

    ``fused``: both layers belong to the same runtime group by an exact trace. ``not_fused``:
    different groups, exact traces (and, when ``timed_nodes`` is given, the profiler reported
    every node involved). ``possibly_fused``: a layer was eliminated by the optimiser, a
    fallback rule decided, or the profiler did not report a node involved.
    """
    g = mapping.graph
    out: list[FusionLabel] = []
    for p, c in g.edges():
        gp, gc = mapping.group_of(p), mapping.group_of(c)
        if gp is None or gc is None:
            label, why = POSSIBLY_FUSED, "eliminated by the optimiser"
        else:
            exact = gp.exact and gc.exact
            seen = timed_nodes is None or set(gp.nodes + gc.nodes) <= timed_nodes
            if not exact:
                label, why = POSSIBLY_FUSED, "traced by a fallback rule"
            elif not seen:
                label, why = POSSIBLY_FUSED, "a node is missing from the profile"
            elif gp is gc:
                names = ",".join(mapping.nodes[i].name or mapping.nodes[i].op for i in gp.nodes)
                label, why = FUSED, f"one runtime node: {names}"
            else:
                label, why = NOT_FUSED, "separate runtime nodes"
        lp, lc = g.layers[p], g.layers[c]
        out.append(FusionLabel(p, c, lp.name, lc.name, lp.op, lc.op, lp.kind, lc.kind, label, why))
    return out


# --------------------------------------------------------------------------- profiling


@dataclass
class Profile:
    """Per-node kernel times of ``runs`` inferences of a network, traced to its IR layers."""

    network: str
    mapping: RuntimeMapping
    node_samples_us: dict[int, list[float]]
    run_us: list[float]
    settings: dict[str, Any] = field(default_factory=dict)
    #: Per profiled run: the calling thread's CPU time over the wall time of ``session.run``
    #: (recorded to judge how disturbed the runs were; 1.0 on an idle machine).
    cpu_ratio: list[float] = field(default_factory=list)
    #: Per-node statistic of the durations: ``median`` (``wall`` timer) or ``p10`` (``thread``
    #: timer: on a shared machine preemption only ever adds time to a kernel, so the 10th
    #: percentile over the runs is its least disturbed duration; on an idle machine it is
    #: within a few per cent of the median).
    statistic: str = "median"

    def node_median_us(self, index: int) -> float:
        s = self.node_samples_us.get(index)
        return float(np.median(s)) if s else float("nan")

    def node_us(self, index: int) -> float:
        """A node's duration by :attr:`statistic` (NaN when the profiler never reported it)."""
        s = self.node_samples_us.get(index)
        if not s:
            return float("nan")
        return float(np.percentile(s, 10) if self.statistic == "p10" else np.median(s))

    def group_samples_us(self, group: RuntimeGroup) -> np.ndarray:
        """Per-run sums of the group's node times (runs where every node was reported)."""
        series = [self.node_samples_us.get(i, []) for i in group.nodes]
        n = min((len(s) for s in series), default=0)
        if n == 0:
            return np.zeros(0)
        return np.sum([np.asarray(s[:n]) for s in series], axis=0)

    def group_ms(self, group: RuntimeGroup) -> float:
        """The group's time: the sum of its nodes' durations by :attr:`statistic`, in ms."""
        if not group.nodes or any(not self.node_samples_us.get(i) for i in group.nodes):
            return float("nan")
        return sum(self.node_us(i) for i in group.nodes) / 1e3

    def layers_ms(self, layers: Sequence[int]) -> float:
        """Time of the runtime groups executing ``layers`` (ms; NaN if none ran them)."""
        groups = {self.mapping.layer_group[i] for i in layers if i in self.mapping.layer_group}
        if not groups:
            return float("nan")
        return sum(self.group_ms(self.mapping.groups[g]) for g in groups)

    @property
    def inserted_ms(self) -> float:
        """Time of the runtime-inserted nodes (layout reorders) by :attr:`statistic`, ms."""
        nodes = [
            n.index for n in self.mapping.nodes if n.inserted and self.node_samples_us.get(n.index)
        ]
        if not nodes:
            return 0.0
        return self.group_ms(RuntimeGroup((), tuple(nodes), True))

    @property
    def kernels_ms(self) -> float:
        """Sum of every reported node's time by :attr:`statistic`, ms."""
        nodes = tuple(n.index for n in self.mapping.nodes if self.node_samples_us.get(n.index))
        return self.group_ms(RuntimeGroup((), nodes, True))

    @property
    def run_ms(self) -> float:
        """Median of onnxruntime's own ``model_run`` durations (with profiling on), ms."""
        return float(np.median(self.run_us)) / 1e3 if self.run_us else float("nan")

    def node_table(self) -> pd.DataFrame:
        """One row per runtime node: names, op, IR layers, inserted/exact, median/p10/p90 us."""
        import pandas as pd

        g = self.mapping.graph
        rows = []
        for n in self.mapping.nodes:
            s = np.asarray(self.node_samples_us.get(n.index, []), dtype=float)
            rows.append(
                {
                    "node_index": n.index,
                    "node": n.name,
                    "op": n.op,
                    "domain": n.domain,
                    "layers": [g.layers[i].name for i in n.layers],
                    "inserted": n.inserted,
                    "exact": n.exact,
                    "runs": len(s),
                    "median_us": float(np.median(s)) if len(s) else float("nan"),
                    "p10_us": float(np.percentile(s, 10)) if len(s) else float("nan"),
                    "p90_us": float(np.percentile(s, 90)) if len(s) else float("nan"),
                    "samples_us": s.tolist(),
                }
            )
        return pd.DataFrame(rows)

    def group_table(self) -> pd.DataFrame:
        """One row per runtime group (mapped layer): its IR layers, kinds and median time."""
        import pandas as pd

        g = self.mapping.graph
        rows = []
        for gi, grp in enumerate(self.mapping.groups):
            rows.append(
                {
                    "group": gi,
                    "layer_indices": list(grp.layers),
                    "layers": [g.layers[i].name for i in grp.layers],
                    "kinds": [g.layers[i].kind for i in grp.layers],
                    "nodes": [self.mapping.nodes[i].name for i in grp.nodes],
                    "node_indices": list(grp.nodes),
                    "exact": grp.exact,
                    "time_ms": self.group_ms(grp),
                }
            )
        return pd.DataFrame(rows)


def _parse_profile(
    events: list[dict[str, Any]], nodes: list[RuntimeNode], skip: int
) -> tuple[dict[int, list[float]], list[float]]:
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n in nodes:
        by_key[(n.name, n.op)].append(n.index)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    samples: dict[int, list[float]] = defaultdict(list)
    runs: list[float] = []
    for e in events:
        cat = e.get("cat")
        if cat == "Session" and e.get("name") == "model_run":
            runs.append(float(e.get("dur", 0)))
            continue
        if cat != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"])[: -len("_kernel_time")]
        op = str(e.get("args", {}).get("op_name", ""))
        key = (name, op)
        if key not in by_key and re.fullmatch(rf"{re.escape(op)}_\d+", name):
            key = ("", op)  # unnamed nodes are reported as OpType_<internal index>
        idx = by_key.get(key)
        if not idx:
            continue
        k = seen[key]
        seen[key] += 1
        run_no = k // len(idx)
        if run_no < skip:
            continue
        samples[idx[k % len(idx)]].append(float(e.get("dur", 0)))
    return dict(samples), runs[skip:]


def profile_network(
    network: str | NetworkGraph,
    *,
    threads: int = 1,
    runs: int = 30,
    warmup: int = 5,
    time_budget_s: float = 2.0,
    seed: int = 0,
    timer: str = "wall",
) -> Profile:
    """Run ``network`` with onnxruntime's profiler on; per-node times traced to IR layers.

    Session options are the measurement protocol's (one intra-op thread by default, spinning
    off, all graph optimisations) so the profiled graph is the measured one. ``warmup`` runs
    are discarded; then up to ``runs`` runs or ``time_budget_s`` seconds (at least 3 runs).
    The profiler's durations are wall-clock; with ``timer="thread"`` (the protocol's choice
    for a shared machine) a node's time is the 10th percentile of its durations rather than the
    median (:attr:`Profile.statistic`); every raw duration is kept in ``node_samples_us``.
    """
    if timer not in ("wall", "thread") or (timer == "thread" and threads != 1):
        raise MeasurementError(f"profiler timer {timer!r} needs 'wall', or 'thread' with 1 thread")
    import onnxruntime as ort

    from latlab.datasets.measure.inputs import fixed_inputs
    from latlab.datasets.references import onnx_model, resolve

    graph = resolve(network)
    ref = graph.reference
    try:
        model = onnx_model(network)
        data = model.SerializeToString()
        feeds = fixed_inputs(network, model, 1, None, seed=seed)
        with tempfile.TemporaryDirectory(prefix="latlab-prof-") as tmp:
            folder = Path(tmp)
            ext_model = _optimised_model(data, threads, "ORT_ENABLE_EXTENDED", folder)
            so = _session_options(threads, "ORT_ENABLE_ALL")
            so.optimized_model_filepath = str(folder / "optimised-run.onnx")
            so.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "weights-run.bin"
            )
            so.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
            )
            so.enable_profiling = True
            so.profile_file_prefix = str(folder / "profile")
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            import onnx

            all_model = onnx.load(so.optimized_model_filepath, load_external_data=False)
            outputs = [o.name for o in session.get_outputs()]
            import time

            for _ in range(warmup):
                session.run(outputs, feeds)
            start = time.perf_counter()
            done = 0
            ratio: list[float] = []
            while done < runs and (done < 3 or time.perf_counter() - start < time_budget_s):
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                session.run(outputs, feeds)
                c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                ratio.append((c1 - c0) / max(w1 - w0, 1))
                done += 1
            prof_path = session.end_profiling()
            events = json.loads(Path(prof_path).read_text())
            os.remove(prof_path)
    except MeasurementError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeasurementError(f"profiling {ref!r} failed: {first}") from exc
    mapping = _trace(graph, ext_model, all_model)
    samples, run_us = _parse_profile(events, mapping.nodes, warmup)
    settings = {
        "threads": threads,
        "runs": done,
        "warmup": warmup,
        "time_budget_s": time_budget_s,
        "onnxruntime": ort.__version__,
        "graph_optimization": "all",
        "timer": timer,
    }
    stat = "p10" if timer == "thread" else "median"
    return Profile(ref, mapping, samples, run_us, settings, ratio, stat)
