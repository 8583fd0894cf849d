"""The tables of the ``annette`` experiment (:mod:`latlab.experiments.annette`): layer,
transformer-layer, network, padding and mapping tables from predictions and measurements."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latlab.datasets.bench.tables import BenchStore
from latlab.datasets.references import resolve
from latlab.datasets.store import Store
from latlab.experiments.annette_settings import CONV_KINDS, MODELS
from latlab.experiments.annette_steps import is_attention
from latlab.predictors.layerwise import LayerwisePredictor, MappingModel
from latlab.predictors.layerwise.layer_inputs import group_record
from latlab.predictors.layerwise.mapping import labelled_pairs, mapping_scores
from latlab.training.metrics import regression_metrics

log = logging.getLogger("latlab.experiments.annette")


# --------------------------------------------------------------------------- tables


def point_metrics(t: Any, p: Any) -> dict[str, float]:
    m = regression_metrics(t, p)
    return {k: m[k] for k in ("n", "mae", "rmspe", "mape", "spearman", "acc10")}


def layer_table(
    fitted: dict[tuple[str, str], LayerwisePredictor],
    groups: dict[str, list[dict[str, Any]]],
    method: str,
) -> pd.DataFrame:
    """One row per profiled convolution group of the zoo: measured and predicted ms."""
    rows = []
    for ref, grps in groups.items():
        conv = [
            g
            for g in grps
            if any(k in CONV_KINDS for k in g["kinds"]) and g.get("time_ms") and g["time_ms"] > 0
        ]
        if not conv:
            continue
        members = [list(g["layer_indices"]) for g in conv]
        preds = {name: fitted[(name, method)].predict_groups(ref, members) for name in MODELS}
        for k, g in enumerate(conv):
            row = {"network": ref, "layers": "+".join(g["layers"]), "measured_ms": g["time_ms"]}
            row["kind"] = next(kd for kd in g["kinds"] if kd in CONV_KINDS)
            row.update({name: float(preds[name][k]) for name in MODELS})
            rows.append(row)
    return pd.DataFrame(rows)


#: Layer types of the transformer kernels judged in the transformer layer-level table.
TRANSFORMER_KEYS = (
    "matmul", "bmm", "layernorm", "skiplayernorm", "rmsnorm", "gelu", "softmax", "embed",
)  # fmt: skip


def transformer_layer_table(
    fitted: dict[tuple[str, str], LayerwisePredictor],
    groups: dict[str, list[dict[str, Any]]],
    method: str,
) -> pd.DataFrame:
    """One row per profiled transformer kernel of the zoo's attention models (the runtime's
    group around each MatMul, LayerNorm, GELU, Softmax, embedding): measured and predicted
    ms, with the group's layer type (``key``)."""
    rows = []
    for ref, grps in groups.items():
        if not is_attention(ref):
            continue
        graph = resolve(ref)
        kept = []
        for g in grps:
            if not g.get("time_ms") or g["time_ms"] <= 0:
                continue
            key = group_record(graph.layers, list(g["layer_indices"]))[1]["key"]
            if key in TRANSFORMER_KEYS:
                kept.append((g, key))
        if not kept:
            continue
        members = [list(g["layer_indices"]) for g, _ in kept]
        preds = {name: fitted[(name, method)].predict_groups(ref, members) for name in MODELS}
        for k, (g, key) in enumerate(kept):
            row = {"network": ref, "layers": "+".join(g["layers"]), "measured_ms": g["time_ms"]}
            row["key"] = key
            row.update({name: float(preds[name][k]) for name in MODELS})
            rows.append(row)
    return pd.DataFrame(rows, columns=["network", "layers", "measured_ms", "key", *MODELS])


def mape_by_key(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{layer type: {"n": rows, model: MAPE}}`` of a transformer layer table."""
    out: dict[str, dict[str, float]] = {}
    for key, df in table.groupby("key"):
        row: dict[str, float] = {"n": len(df)}
        row.update({n: point_metrics(df["measured_ms"], df[n])["mape"] for n in MODELS})
        out[str(key)] = row
    return out


def network_table(
    fitted: dict[tuple[str, str], LayerwisePredictor], measured: pd.Series, method: str
) -> pd.DataFrame:
    refs = [r for r in measured.index if np.isfinite(measured[r])]
    out = pd.DataFrame({"network": refs, "measured_ms": measured[refs].to_numpy()})
    for name in MODELS:
        out[name] = fitted[(name, method)].predict(refs)
    return out


def summarise(df: pd.DataFrame, truth: str = "measured_ms") -> dict[str, dict[str, float]]:
    return {name: point_metrics(df[truth], df[name]) for name in MODELS if len(df)}


def padding_table(table: pd.DataFrame, device: str) -> dict[str, Any]:
    """Layer-time error of single-layer and smart-padded benchmarks against the profiler."""
    single = f"{device}@single"
    padded = f"{device}@padded"
    prof = f"{device}@profile"
    df = table.dropna(subset=[single, padded, prof])
    df = df[df["network"].str.count(r"\+") == 0]  # single-layer benchmarks only
    out: dict[str, Any] = {}
    for label, sel in (("all layers", df[prof] > 0), ("layers >= 0.1 ms", df[prof] >= 0.1)):
        d = df[sel]
        if not len(d):
            continue
        out[label] = {
            "n": len(d),
            **{
                f"{m}_{stat}": float(fn(100 * np.abs(d[col] - d[prof]) / d[prof]))
                for m, col in (("single", single), ("padded", padded))
                for stat, fn in (("mape", np.mean), ("median_ape", np.median))
            },
        }
    return out


def mapping_tables(
    store: Store, device: str, zoo_refs: list[str], fitted: LayerwisePredictor, seed: int
) -> dict[str, Any]:
    """F1/MCC of the fusion trees: held-out benchmark pairs, and the zoo's own pairs."""
    labels = BenchStore(store).fusion_labels(device)
    bench_nets = [n for n in dict.fromkeys(labels["network"]) if n.startswith("kernel:")]
    out: dict[str, Any] = {}
    if len(bench_nets) >= 4:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(bench_nets))
        cut = round(0.7 * len(bench_nets))
        split = {
            "train": [bench_nets[i] for i in order[:cut]],
            "test": [bench_nets[i] for i in order[cut:]],
        }
        frames = {}
        for part, nets in split.items():
            graphs = [resolve(n) for n in nets]
            labs = [_label_dict(labels, n) for n in nets]
            frames[part] = labelled_pairs(graphs, labs)
        model = MappingModel().fit(frames["train"])
        test = frames["test"]
        out["held_out_benchmarks"] = mapping_scores(test["fused"], model.predict_pairs(test))
        out["held_out_benchmarks"]["networks"] = len(split["test"])
    zoo_graphs = [resolve(n) for n in zoo_refs if n in set(labels["network"])]
    if zoo_graphs and fitted.mapping_ is not None:
        pairs = labelled_pairs(zoo_graphs, [_label_dict(labels, g.reference) for g in zoo_graphs])
        if len(pairs):
            out["zoo"] = mapping_scores(pairs["fused"], fitted.mapping_.predict_pairs(pairs))
            out["zoo"]["networks"] = len(zoo_graphs)
    return out


def _label_dict(labels: pd.DataFrame, network: str) -> dict[tuple[str, str], str]:
    d = labels[labels["network"] == network]
    return {(r.producer, r.consumer): r.label for r in d.itertuples()}
