"""Which IR layers onnxruntime runs as one kernel: the optimised graph traced back to the IR.

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

import logging
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError, first_line

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


# --------------------------------------------------------------------------- sessions


def _session_options(threads: int, level: str) -> Any:
    import onnxruntime as ort

    from latlab.datasets.measure.onnxruntime_backend import OnnxRuntimeBackend

    so = OnnxRuntimeBackend().session_options(threads)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return so


def optimising_options(
    threads: int, level: str, folder: Path, stem: str, *, profile: bool = False
) -> tuple[Any, Path]:
    """Session options (the protocol's, at ``level``) under which onnxruntime writes the graph
    it optimises to ``folder/STEM.onnx`` -- weights of 1 KiB or more in ``STEM.bin`` beside
    it, so the file stays small -- and, with ``profile``, its profiler's file under
    ``folder``. Returns the options and the optimised model's path."""
    so = _session_options(threads, level)
    path = folder / f"{stem}.onnx"
    so.optimized_model_filepath = str(path)
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", f"{stem}.bin"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(folder / "profile")
    return so, path


def _optimised_model(model_bytes: bytes, threads: int, level: str, folder: Path) -> Any:
    """The model onnxruntime builds at ``level`` (weights kept out of the written file)."""
    import onnx
    import onnxruntime as ort

    so, path = optimising_options(threads, level, folder, f"optimised-{level}")
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
    """Map the runtime nodes of ``all_model`` onto the IR layers, through the nodes of the
    extended-level graph ``ext_model`` (see :class:`_Tracer` for the steps)."""
    tracer = _Tracer(graph, _nodes(ext_model), _nodes(all_model))
    pending = tracer.match_named()
    tracer.absorb_exact()
    tracer.absorb_named()
    tracer.match_unnamed(pending)
    tracer.give_leftovers()
    tracer.assign_layers()
    return tracer.mapping()


class _Tracer:
    """The state of one trace: which runtime node owns each extended-level node (``owner``),
    whether that is known exactly, and which runtime tensor stands for which extended-level
    tensor (``tmap``). Each method is one step of :func:`_trace`, in order."""

    def __init__(self, graph: NetworkGraph, ext: list[RuntimeNode], run: list[RuntimeNode]) -> None:
        self.graph = graph
        self.ext = ext
        self.run = run
        self.covered = _ext_clusters(graph, ext)
        self.ext_by_name = {n.name: n.index for n in ext if n.name}
        self.ext_by_output = {o: n.index for n in ext for o in n.outputs}
        self.owner: dict[int, int] = {}  # ext index -> runtime node index
        self.exact_ext: dict[int, bool] = {}
        self.absorbed: dict[int, list[int]] = defaultdict(list)
        self.tmap: dict[str, str] = {}  # runtime tensor -> extended-level tensor

    def match(self, node: RuntimeNode, e: int) -> None:
        self.owner[e] = node.index
        self.exact_ext[e] = True
        for k, o in enumerate(node.outputs):
            if k < len(self.ext[e].outputs):
                self.tmap[o] = self.ext[e].outputs[k]

    def preds(self, e: int) -> list[int]:
        return [self.ext_by_output[t] for t in self.ext[e].inputs if t in self.ext_by_output]

    def match_named(self) -> list[RuntimeNode]:
        """Match runtime nodes by name (NCHWc reorders are inserted nodes); returns the
        runtime nodes left unmatched."""
        tmap = self.tmap
        pending: list[RuntimeNode] = []
        for node in self.run:
            if node.domain == _NCHWC and node.op in _REORDERS:
                node.inserted = True
                if node.op == "ReorderInput":
                    tmap[node.outputs[0]] = tmap.get(node.inputs[0], node.inputs[0])
                else:
                    tmap.setdefault(node.inputs[0], node.outputs[0])
                continue
            e = self.ext_by_name.get(node.name) if node.name else None
            if e is None and node.name.endswith("_nchwc"):
                e = _nchwc_source(node.name, self.ext_by_output, self.ext_by_name)
            if e is not None and e not in self.owner:
                self.match(node, e)
            else:
                pending.append(node)
        return pending

    def absorb_exact(self) -> None:
        """Exact absorption: the extended-level tensor a runtime node's output stands for is
        known when the output keeps its name, when a ReorderOutput turns it back into a named
        tensor, or when a matched NCHWc consumer reads it as its first input. Every
        extended-level node between the node's own match and that tensor was absorbed into
        it."""
        ext, run, owner, ext_by_output = self.ext, self.run, self.owner, self.ext_by_output
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
                if e in owner or not self.preds(e):
                    ok = False
                    break
                path.append(e)
                stack.extend(self.preds(e))
            if ok:
                for e in path:
                    owner[e] = rn_index
                    self.exact_ext[e] = True
                self.tmap[run[rn_index].outputs[0]] = tensor

    def absorb_named(self) -> None:
        """Absorbed extended-level nodes (named ones that no runtime node carries)."""
        ext, run, owner, tmap = self.ext, self.run, self.owner, self.tmap
        for n in ext:
            if n.index in owner or not n.name:
                continue
            cands = [p for p in self.preds(n.index) if p in owner]
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
                # Only kernels with fused epilogues (convolutions, GEMMs) absorb a following
                # layer; anything else means a runtime node was not recognised: keep it, but
                # not exact.
                exact = len(owners) == 1 and run[owner[chosen]].op in _ABSORBING
            owner[n.index] = owner[chosen]
            self.exact_ext[n.index] = exact and self.exact_ext.get(chosen, True)
            self.absorbed[owner[chosen]].append(n.index)
        for rn_index, members in self.absorbed.items():
            last = max(members)
            for o in run[rn_index].outputs[:1]:
                tmap[o] = ext[last].outputs[0]

    def match_unnamed(self, pending: list[RuntimeNode]) -> None:
        """Unnamed (or renamed) runtime nodes: same op type, inputs that map onto the node's
        inputs; a node matching none was inserted by the runtime."""
        activations = set(self.ext_by_output) | set(self.graph.inputs)
        for node in pending:
            mapped = {self.tmap.get(t, t) for t in node.inputs}
            found = None
            for n in self.ext:
                if n.index in self.owner or n.op != node.op:
                    continue
                acts = [t for t in n.inputs if t in activations]
                if acts and set(acts) <= mapped:
                    found = n.index
                    break
            if found is None:
                node.inserted = True
                node.exact = False
                continue
            self.match(node, found)

    def give_leftovers(self) -> None:
        """Still unowned: give to the latest owned predecessor (not exact)."""
        for n in self.ext:
            if n.index in self.owner:
                continue
            cands = [p for p in self.preds(n.index) if p in self.owner]
            if cands:
                self.owner[n.index] = self.owner[max(cands)]
                self.exact_ext[n.index] = False

    def assign_layers(self) -> None:
        """Each runtime node's IR layers (the clusters of the extended-level nodes it owns)
        and whether they are known exactly."""
        node_layers: dict[int, set[int]] = defaultdict(set)
        node_exact: dict[int, bool] = defaultdict(lambda: True)
        for e, rn_index in self.owner.items():
            node_layers[rn_index].update(self.covered.get(e, []))
            node_exact[rn_index] = node_exact[rn_index] and self.exact_ext.get(e, True)
        for node in self.run:
            node.layers = tuple(sorted(node_layers.get(node.index, set())))
            node.exact = node.exact and node_exact[node.index]

    def mapping(self) -> RuntimeMapping:
        """Groups: IR layers sharing runtime nodes."""
        graph, run = self.graph, self.run
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
        first = first_line(exc)
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
