"""ANNETTE's mapping model: which successive layers the runtime executes as one kernel.

One decision tree per *layer-pair type* (``conv>bn``, ``bn>act:Relu``, ``conv>add``, ...;
types from :func:`~.layer_inputs.model_key`) predicts whether the producer and the consumer of a
data-flow edge are fused. Features: both layers' ANNETTE vectors, channel divisibility by 4 and
by the SIMD block (whether onnxruntime moves a convolution into its blocked NCHWc layout, and so
what it can absorb, depends on it), the producer's fan-out (a tensor read by two layers cannot be
fused away), the consumer's fan-in and the kind of the producer's own producer (``bn>relu``
fuses after a convolution, not after a concat). A pair type seen with one label only becomes
a constant rule; a type never seen falls back to the pair of IR kinds (not for pairs with a
transformer layer type, :data:`TRANSFORMER_KEYS`), then to *not fused*.

Transformer fusions of onnxruntime (``nn.Linear``'s bias Add and the Reshape around it into a
Gemm, the erf GELU into Gelu, residual Add + LayerNormalization into
SkipLayerNormalization, RMSNorm's primitives into SimplifiedLayerNormalization, the score
scaling into FusedMatMul) are learnt like the CNN ones, from the multi-layer suite's
transformer chains.

A producer whose output has several readers is never fused (onnxruntime fuses a layer only
into the sole reader of its output; no benchmark pair contradicts it), whatever a tree says;
such pairs are left out of the trees' training data.

Mapped layers are the connected components of the predicted-fused edges; the network estimate
sums one prediction per mapped layer. Labels come from the benchmark campaign
(:func:`latlab.datasets.bench.profile.fusion_labels`); ``possibly_fused`` pairs are left out of
training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.encoders.layer_features import ANNETTE_FEATURES, layer_row
from latlab.fileio import inside
from latlab.predictors.layerwise.layer_inputs import model_key
from latlab.predictors.layerwise.memo import Memo, structure_key
from latlab.predictors.skops_io import SKLEARN_PREFIXES, load_trusted_skops

if TYPE_CHECKING:
    import pandas as pd

_KINDS = ("conv", "dwconv", "fc", "norm", "act", "pool", "gpool", "eltwise", "concat", "data")
PAIR_FEATURES: tuple[str, ...] = (
    *(f"p_{f}" for f in ANNETTE_FEATURES),
    *(f"c_{f}" for f in ANNETTE_FEATURES),
    "p_f_mod16",
    "p_f_mod8",
    "p_c_mod16",
    "p_c_mod4",
    "c_f_mod16",
    "c_c_mod16",
    "c_c_mod4",
    "p_fanout",
    "c_fanin",
    "input_pos",
    "pp_kind",
)


#: Layer types of transformers whose fusions are unlike those of the CNN layers sharing their
#: IR kind: a LayerNorm feeding a residual Add is not fused (a BatchNorm feeding one is, into
#: the convolution before it), a Transpose feeding a MatMul is not (a Flatten feeding a Gemm
#: is). A pair with one of them that no benchmark labelled is predicted *not fused* instead of
#: borrowing the CNN pair's rule through the kind pair.
TRANSFORMER_KEYS = frozenset(
    {"matmul", "bmm", "layernorm", "rmsnorm", "gelu", "softmax", "embed", "gather",
     "transpose", "reshape"}
)  # fmt: skip


def pair_type(graph: NetworkGraph, p: int, c: int) -> str:
    return f"{model_key(graph.layers[p])}>{model_key(graph.layers[c])}"


def kind_pair(graph: NetworkGraph, p: int, c: int) -> str:
    return f"{graph.layers[p].kind}>{graph.layers[c].kind}"


#: Pair rows of every edge of the networks mapped lately (:mod:`.memo`).
_ALL_PAIRS: Memo[list[dict]] = Memo(512)


def pair_rows(graph: NetworkGraph, edges: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """Feature rows of the data-flow edges of ``graph`` (all edges by default: computed once
    per structure and shared, so read-only)."""
    if edges is None:
        return _ALL_PAIRS.get(structure_key(graph), lambda: _pair_rows(graph, None))
    return _pair_rows(graph, edges)


def _pair_rows(graph: NetworkGraph, edges: Sequence[tuple[int, int]] | None) -> list[dict]:
    rows_cache: dict[int, dict[str, Any]] = {}

    def row(i: int) -> dict[str, Any]:
        if i not in rows_cache:
            rows_cache[i] = layer_row(graph.layers[i])
        return rows_cache[i]

    out = []
    succ = graph.successors
    for p, c in edges if edges is not None else graph.edges():
        rp, rc = row(p), row(c)
        preds = graph.predecessors(p)
        pp_kind = graph.layers[preds[0]].kind if preds else "input"
        rec: dict[str, Any] = {
            "producer": p,
            "consumer": c,
            "pair_type": pair_type(graph, p, c),
            "kind_pair": kind_pair(graph, p, c),
        }
        for f in ANNETTE_FEATURES:
            rec[f"p_{f}"] = rp[f]
            rec[f"c_{f}"] = rc[f]
        rec["p_f_mod16"] = int(rp["f"] % 16 == 0)
        rec["p_f_mod8"] = int(rp["f"] % 8 == 0)
        rec["p_c_mod16"] = int(rp["c"] % 16 == 0)
        rec["c_f_mod16"] = int(rc["f"] % 16 == 0)
        rec["c_c_mod16"] = int(rc["c"] % 16 == 0)
        rec["p_c_mod4"] = int(rp["c"] % 4 == 0)
        rec["c_c_mod4"] = int(rc["c"] % 4 == 0)
        rec["p_fanout"] = len(succ[p]) + sum(t in graph.outputs for t in graph.layers[p].outputs)
        rec["c_fanin"] = len(graph.layers[c].inputs)
        ins = graph.layers[c].inputs
        outs = set(graph.layers[p].outputs)
        rec["input_pos"] = next((k for k, t in enumerate(ins) if t in outs), 0)
        rec["pp_kind"] = _KINDS.index(pp_kind) if pp_kind in _KINDS else -1
        out.append(rec)
    return out


def labelled_pairs(
    graphs: Sequence[NetworkGraph], labels: Sequence[dict[tuple[str, str], str]]
) -> pd.DataFrame:
    """Pair features with labels (``{(producer name, consumer name): label}`` per graph).

    Pairs whose label is missing or ``possibly_fused`` are dropped; ``fused`` is 1.
    """
    import pandas as pd

    recs = []
    for gi, (g, lab) in enumerate(zip(graphs, labels, strict=True)):
        for shared in pair_rows(g):
            name = (g.layers[shared["producer"]].name, g.layers[shared["consumer"]].name)
            value = lab.get(name)
            if value not in ("fused", "not_fused"):
                continue
            rec = dict(shared)  # pair_rows' rows are the memo's: labels go on a copy
            rec["network_index"] = gi
            rec["network"] = g.reference
            rec["fused"] = int(value == "fused")
            recs.append(rec)
    return pd.DataFrame(recs)


class MappingModel:
    """Decision trees per layer-pair type (see the module docstring)."""

    def __init__(self, max_depth: int = 6, random_state: int = 0) -> None:
        self.max_depth = max_depth
        self.random_state = random_state
        self.trees: dict[str, Any] = {}  # pair type -> DecisionTreeClassifier
        self.constants: dict[str, int] = {}  # pair type -> constant label
        self.counts: dict[str, dict[str, int]] = {}
        #: This model's groups of the networks it mapped lately (a fit or restore clears it).
        self._groups: Memo[list[list[int]]] = Memo(512)

    def fit(self, pairs: pd.DataFrame) -> MappingModel:
        """Fit on :func:`labelled_pairs` output; types keyed by pair type and by kind pair."""
        from sklearn.tree import DecisionTreeClassifier

        self._groups.clear()
        self.trees.clear()
        self.constants.clear()
        self.counts.clear()
        if pairs.empty:
            return self
        pairs = pairs[pairs["p_fanout"] <= 1]  # several readers: never fused (the rule above)
        for column in ("pair_type", "kind_pair"):
            for key, grp in pairs.groupby(column):
                key = str(key)
                if column == "kind_pair":
                    key = "kind:" + key
                y = grp["fused"].to_numpy(dtype=int)
                self.counts[key] = {"fused": int(y.sum()), "not_fused": int(len(y) - y.sum())}
                if y.min() == y.max():
                    self.constants[key] = int(y[0])
                    continue
                tree = DecisionTreeClassifier(
                    max_depth=self.max_depth, random_state=self.random_state
                )
                tree.fit(grp[list(PAIR_FEATURES)].to_numpy(dtype=float), y)
                self.trees[key] = tree
        return self

    def _proba_rows(self, rows: list[dict]) -> np.ndarray:
        """Probability that each pair is fused (0 for pair types never seen)."""
        out = np.zeros(len(rows))
        if not rows:
            return out
        X = np.asarray([[r[f] for f in PAIR_FEATURES] for r in rows], dtype=float)
        by_tree: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            keys = [r["pair_type"]]
            if not TRANSFORMER_KEYS.intersection(r["pair_type"].split(">")):
                keys.append("kind:" + r["kind_pair"])
            for key in keys:
                if key in self.constants:
                    out[i] = float(self.constants[key])
                    break
                if key in self.trees:
                    by_tree.setdefault(key, []).append(i)
                    break
        for key, idx in by_tree.items():  # one call per tree: NAS loops predict many networks
            tree = self.trees[key]
            proba = tree.predict_proba(X[idx])
            out[idx] = proba[:, list(tree.classes_).index(1)]
        # onnxruntime fuses a layer only into the sole reader of its output (no labelled
        # benchmark pair says otherwise); a tree that saw few pairs must not decide this
        # (a pre-norm residual sum read by its LayerNorm and the next residual Add)
        out[X[:, PAIR_FEATURES.index("p_fanout")] > 1] = 0.0
        return out

    def _predict_rows(self, rows: list[dict]) -> np.ndarray:
        """Fused (1) or not (0), at most one fused producer per consumer and vice versa.

        A runtime kernel absorbs a chain: a residual Add joins one of its two producers (the
        most probable; on a tie the first input, as onnxruntime's NCHWc fusion does), and a
        layer feeding two consumers is fused with at most one.
        """
        proba = self._proba_rows(rows)
        fused = proba >= 0.5
        for side, other in (("consumer", "input_pos"), ("producer", "consumer")):
            best: dict[int, int] = {}
            for i, r in enumerate(rows):
                if not fused[i]:
                    continue
                j = best.get(r[side])
                if j is None or (proba[i], -rows[i][other]) > (proba[j], -rows[j][other]):
                    best[r[side]] = i
            keep = set(best.values())
            fused &= np.asarray([i in keep or not fused[i] for i in range(len(rows))], dtype=bool)
        return fused.astype(int)

    def predict_pairs(self, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted fused (1) / not fused (0) of each pair on its own (no joint constraint)."""
        return (self._proba_rows(pairs.to_dict(orient="records")) >= 0.5).astype(int)

    def groups(self, graph: NetworkGraph) -> list[list[int]]:
        """Mapped layers of ``graph``: connected components of the predicted-fused edges
        (computed once per structure; a fresh list each call)."""
        found = self._groups.get(structure_key(graph), lambda: self._components(graph))
        return [list(g) for g in found]

    def _components(self, graph: NetworkGraph) -> list[list[int]]:
        n = len(graph.layers)
        parent = list(range(n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        rows = pair_rows(graph)
        for r, fused in zip(rows, self._predict_rows(rows), strict=True):
            if fused:
                a, b = find(r["producer"]), find(r["consumer"])
                if a != b:
                    parent[max(a, b)] = min(a, b)
        comps: dict[int, list[int]] = {}
        for i in range(n):
            comps.setdefault(find(i), []).append(i)
        return sorted(comps.values(), key=lambda g: g[0])

    # -- persistence ---------------------------------------------------------------------------

    def state(self, directory: Path) -> dict[str, Any]:
        import skops.io as sio
        from sklearn.tree import export_text

        trees = {}
        for i, (key, tree) in enumerate(sorted(self.trees.items())):
            file = f"mapping_tree_{i}.skops"
            sio.dump(tree, directory / file)
            trees[key] = {
                "file": file,
                "depth": int(tree.get_depth()),
                "rules": export_text(tree, feature_names=list(PAIR_FEATURES)),
            }
        return {
            "features": list(PAIR_FEATURES),
            "constants": {k: ("fused" if v else "not_fused") for k, v in self.constants.items()},
            "trees": trees,
            "counts": self.counts,
        }

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        self._groups.clear()
        self.constants = {k: int(v == "fused") for k, v in state.get("constants", {}).items()}
        self.counts = dict(state.get("counts", {}))
        self.trees = {}
        for key, info in state.get("trees", {}).items():
            path = inside(directory, info["file"], "mapping tree file")
            self.trees[key] = load_trusted_skops(path.read_bytes(), path, (), SKLEARN_PREFIXES)


def mapping_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """F1 (fused = positive class), Matthews correlation, accuracy and counts."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    return {
        "n": len(t),
        "fused": int(t.sum()),
        "f1": float(f1_score(t, p, zero_division=0.0)),
        "mcc": float(matthews_corrcoef(t, p)) if len(t) else float("nan"),
        "accuracy": float(accuracy_score(t, p)) if len(t) else float("nan"),
    }
