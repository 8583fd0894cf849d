"""ANNETTE's evaluation on this machine: layer-wise and learned predictors vs measured networks.

``latlab experiment run annette [--quick] [--out DIR] [--threads N]`` calls :func:`experiment`
(the full or quick preset), ``latlab compare`` (the main job) calls :func:`main_job` (the main
preset); both are the only entry points (:func:`run_settings` for any other ``Settings``).

Every latency (benchmarks, networks, profiler kernels) is taken with the protocol's
``thread`` clock by default: the calling thread's CPU time, which on a machine shared with
other jobs leaves out the time the measurement was preempted (one inference thread runs in the
caller). On an idle machine it equals wall time; ``--timer wall`` uses wall time.

1. **Benchmarks** (resumable, in the store ``--db``, default ``DIR/bench.db``): the kernel
   suite (single-layer models and profiler), smart padding of the same kernels, and the
   multi-layer suite (fusion labels).
2. **Training**: the five layer-wise predictors (roofline, refined, statistical, mixed, LUT)
   fitted on the exported benchmark table only (no zoo or nb201 network in training), once
   per layer-time method (smart-padded, single-layer, profiler).
3. **Networks**: every zoo architecture measured end to end (onnxruntime, 1 thread, the
   measurement protocol) and profiled per node; ``nb201`` networks measured end to end; and
   generated ``cnn`` + ``nb201`` networks for the learned predictors.
4. **Learned predictors** (flops, gbm, rf, fcnn, gcn; :mod:`.annette_learned`): fitted on
   the generated networks' training split.
5. **Tables** (``report.md``, ``metrics.json`` and CSVs in ``DIR``):

   * headline comparison: MAPE, Spearman's rho and ±10 % accuracy of every predictor on
     held-out generated networks, on random nb201 networks and on the zoo (out of
     distribution for the learned predictors), with predicted-vs-measured figures;

   * Table 3 analogue -- layer level: MAE, RMSPE, MAPE of each layer model on every
     convolution layer of the zoo (the runtime's group around each conv, profiled), the
     runtime's own grouping used so that the layer models are judged alone;
   * Table 5 analogue -- network level: MAE and MAPE of each model on every zoo network, and
     Spearman's rho over the zoo;
   * Table 6 analogue -- fidelity: Spearman's rho on random nb201 networks;
   * smart padding: layer-time error of single-layer and smart-padded benchmarks against the
     profiler, and network MAPE of models trained on each;
   * mapping: F1 and MCC of the fusion trees on held-out multi-layer benchmark pairs and on
     the zoo networks' layer pairs.

Presets (:meth:`Settings.preset_named`): ``quick`` -- small suites, five zoo networks, 34
nb201 and 60 cnn networks; ``main`` -- 400 kernels, the whole zoo, 50 nb201 networks, 200 cnn
and 100 more nb201 networks for the learned predictors, the light network protocol;
``full`` -- the default suite sizes (900 kernels), the whole zoo, 300 cnn networks and the
default network protocol.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.datasets.bench.campaign import BENCH_PAIRED, run_bench
from latlab.datasets.bench.export import training_table
from latlab.datasets.bench.tables import METHODS, BenchStore
from latlab.datasets.measure import MeasureConfig
from latlab.datasets.measure.protocol import DEFAULT_REFERENCE as REFERENCE
from latlab.datasets.references import resolve
from latlab.datasets.store import Store
from latlab.errors import DataError
from latlab.experiments.annette_learned import LEARNED, fit_and_predict, split_generated
from latlab.experiments.common import dump_json, json_safe, write_atomic
from latlab.experiments.context import ExperimentContext, Progress
from latlab.predictors import make_predictor
from latlab.predictors.layerwise import LayerwisePredictor, MappingModel
from latlab.predictors.layerwise.features import group_record
from latlab.predictors.layerwise.mapping import labelled_pairs, mapping_scores
from latlab.training.metrics import regression_metrics

log = logging.getLogger("latlab.experiments.annette")

MODELS = ("roofline", "refined", "statistical", "mixed", "lut")
QUICK_ZOO = (
    "mobilenet_v3_small",
    "mobilenet_v2",
    "squeezenet1_1",
    "resnet18",
    "efficientnet_b0",
    "vit_s16",
    "bert_medium",
)
#: The kernel-level predictor: trained on the bench store's generated networks (the
#: single-layer benchmarks and the in-context ``block:`` networks), never on a test network.
KERNEL = "kernel"
CONV_KINDS = ("conv", "dwconv")


@dataclass
class Settings:
    """What one run measures (the presets differ only here)."""

    quick: bool
    kernels: int
    multilayer: int
    zoo: list[str]
    nb201: int
    nb201_seed: int = 0
    timer: str = "wall"
    network_protocol: MeasureConfig = field(default_factory=MeasureConfig)
    profile_runs: int = 20
    seed: int = 0
    #: Generated networks for the learned predictors: ``cnn`` chains (split train/val/test)
    #: and extra ``nb201`` cells to train on (the ``nb201`` fidelity networks stay held out).
    cnn: int = 0
    nb201_train: int = 0
    learned: tuple[str, ...] = LEARNED
    gcn_epochs: int = 120
    name: str = "custom"
    #: Kernel-benchmark protocol; None: the campaign's ``BENCH_CONFIG`` with ``timer``.
    bench_protocol: MeasureConfig | None = None
    #: Layer-time methods the layer models are trained on (``padded`` is the main one; the
    #: others only feed the smart-padding comparison).
    methods: tuple[str, ...] = METHODS
    #: Generated networks of the in-context kernel suite (``latlab bench --suite context``) the
    #: kernel-level predictor ``kernel`` trains on; 0 leaves that predictor out.
    context: int = 0

    def bench_config(self) -> MeasureConfig:
        return self.bench_protocol or replace(BENCH_PAIRED, timer=self.timer)

    @property
    def paired(self) -> bool:
        """Whether benchmarks and networks are timed beside the reference network (drift-
        corrected): then every figure is on the store's reference scale, so two runs hours
        apart, or on a machine whose load changes, train and test on one scale."""
        return self.bench_config().reference is not None

    @classmethod
    def preset_named(cls, name: str, timer: str = "thread") -> Settings:
        """``quick``, ``main`` (the main job's size) or ``full`` (ANNETTE's suite sizes)."""
        from latlab.datasets import zoo

        # paired with the reference network, as latlab bench and latlab measure time by
        # default: two compare runs on a machine whose load differs then agree (issue 17)
        light = MeasureConfig(
            time_budget_s=0.5, max_warmup_s=0.5, repeats=50, timer=timer, reference=REFERENCE
        )
        if name == "quick":
            return cls(
                True,
                150,
                48,
                [n for n in QUICK_ZOO if n in zoo.names()],
                34,
                timer=timer,
                network_protocol=light,
                profile_runs=10,
                cnn=60,
                nb201_train=40,
                gcn_epochs=40,
                name=name,
                context=40,
            )
        if name == "main":
            return cls(
                False,
                400,
                100,
                zoo.names(),
                50,
                timer=timer,
                network_protocol=light,
                profile_runs=10,
                cnn=200,
                nb201_train=100,
                gcn_epochs=100,
                name=name,
                context=120,
            )
        if name == "full":
            return cls(
                False,
                900,
                160,
                zoo.names(),
                50,
                timer=timer,
                network_protocol=MeasureConfig(timer=timer, reference=REFERENCE),
                cnn=300,
                nb201_train=150,
                name=name,
                context=240,
            )
        raise ValueError(f"unknown preset {name!r}: quick, main or full")

    @classmethod
    def preset(cls, quick: bool, timer: str = "thread") -> Settings:
        return cls.preset_named("quick" if quick else "full", timer)


def _progress(label: str, notify: Progress | None = None) -> Any:
    """A campaign/benchmark event callback: a log line every 10 s and ``notify`` each event."""
    last = [0.0]

    def report(event: Any) -> None:
        if notify is not None:
            notify(label, event.done, event.total)
        now = time.monotonic()
        if event.kind in ("start", "finished") or now - last[0] > 10:
            last[0] = now
            log.info("%s: %d/%d", label, event.done, event.total)

    return report


# --------------------------------------------------------------------------- steps


def run_benchmarks(
    store: Store, device: str, s: Settings, notify: Progress | None = None
) -> dict[str, Any]:
    cfg = s.bench_config()
    out = {}
    for suite, count in (
        ("kernels", s.kernels),
        ("padding", s.kernels),
        ("multilayer", s.multilayer),
        ("context", s.context),
    ):
        if suite == "context" and not count:
            continue
        t0 = time.monotonic()
        res = run_bench(
            suite,
            store,
            device,
            count=count,
            seed=s.seed,
            config=cfg,
            profile_runs=s.profile_runs,
            progress=_progress(f"benchmarks: {suite}", notify),
        )
        out[suite] = {
            "benchmarks": len(res.references),
            "measured_now": len(res.measured),
            "failed": len(res.failed),
            "seconds": round(time.monotonic() - t0, 1),
        }
        log.info("%s: %s", suite, out[suite])
    return out


def measure_networks(
    store: Store, device: str, refs: list[str], s: Settings, notify: Progress | None = None
) -> pd.Series:
    """End-to-end medians (ms) of ``refs`` under the network protocol (resumable)."""
    from latlab.datasets.measure.protocol import measure_many

    res = measure_many(
        refs,
        s.network_protocol,
        store,
        device,
        anchor=None,
        progress=_progress("networks", notify),
    )
    log.info("networks: %d measured now, %d from the store", len(res.measured), len(res.skipped))
    df = store.measurements([device], s.network_protocol)
    df = df[df["network"].isin(set(refs))].drop_duplicates("network", keep="last")
    # the drift-corrected median where the protocol is paired, the raw one otherwise
    value = df["corrected_ms"].where(df["corrected_ms"].notna(), df["median_ms"])
    out = value.set_axis(df["network"]).reindex(refs)
    out.attrs["measured_now"] = len(res.measured)
    return out


def profile_networks(
    store: Store, device: str, refs: list[str], s: Settings, notify: Progress | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Runtime groups with profiled times per network (profiled once, then read back)."""
    import onnxruntime as ort

    from latlab.datasets.bench.profile import profile_network
    from latlab.datasets.bench.tables import settings_key
    from latlab.datasets.bench.trace import fusion_labels

    bench = BenchStore(store)
    out: dict[str, list[dict[str, Any]]] = {}
    key = settings_key(
        {
            "threads": 1,
            "onnxruntime": ort.__version__,
            "graph_optimization": "all",
            "timer": s.timer,
        }
    )
    stored = bench.profiles(device)
    stored = stored[stored["settings_key"] == key]
    for i, ref in enumerate(refs):
        if notify is not None:
            notify("profiling zoo", i, len(refs))
        got = stored[stored["network"] == ref]
        if len(got):
            out[ref] = list(got["groups"].iloc[-1])
            continue
        prof = profile_network(ref, runs=s.profile_runs, warmup=3, time_budget_s=3.0, timer=s.timer)
        bench.add_profile(device, prof, fusion_labels(prof.mapping, set(prof.node_samples_us)))
        out[ref] = prof.group_table().to_dict(orient="records")
        log.info("profiled %s (%d/%d)", ref, i + 1, len(refs))
    if notify is not None:
        notify("profiling zoo", len(refs), len(refs))
    return out


def train_models(
    table: pd.DataFrame, device: str, methods: tuple[str, ...], notify: Progress | None = None
) -> dict[tuple[str, str], LayerwisePredictor]:
    """``{(model, method): fitted predictor}`` on the benchmark table."""
    fitted: dict[tuple[str, str], LayerwisePredictor] = {}
    total = len(methods) * len(MODELS)
    for method in methods:
        col = f"{device}@{method}"
        rows = table[table[col].notna()]
        for name in MODELS:
            if notify is not None:
                notify("layer models", len(fitted), total)
            t0 = time.monotonic()
            model = make_predictor(name)
            model.fit(list(rows["network"]), rows[col].to_numpy(dtype=float))
            assert isinstance(model, LayerwisePredictor)
            fitted[(name, method)] = model
            if notify is not None:
                notify("layer models", len(fitted), total)
            log.info(
                "trained %s on %s (%d rows) in %.1f s",
                name,
                method,
                len(rows),
                time.monotonic() - t0,
            )
    return fitted


def train_kernel(store: Store, device: str, s: Settings) -> Any | None:
    """The ``kernel`` predictor fitted on the store's benchmark networks (None without the
    context suite): every ``kernel:`` and ``block:`` network with an end-to-end median under
    the benchmark protocol; the held-out generated, nb201 and zoo networks never are."""
    if not s.context:
        return None
    frame = store.export_table(
        devices=[device], protocol=s.bench_config(), value="corrected" if s.paired else "raw"
    )
    if device not in frame:
        return None
    ok = frame[device].notna() & frame["network"].str.startswith(("kernel:", "block:"))
    rows = frame[ok]
    url = store.url.render_as_string(hide_password=False)
    model = make_predictor(KERNEL, store=url, device=device, random_state=s.seed)
    t0 = time.monotonic()
    model.fit(list(rows["network"]), rows[device].to_numpy(dtype=float))
    model.fit_seconds_ = time.monotonic() - t0
    log.info("trained kernel on %d benchmark networks in %.1f s", len(rows), model.fit_seconds_)
    return model


def is_attention(reference: str) -> bool:
    """Whether a zoo network is an attention model (its graph's ``meta["attention"]``)."""
    return bool(resolve(reference).meta.get("attention", False))


# --------------------------------------------------------------------------- tables


def _metrics(t: Any, p: Any) -> dict[str, float]:
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


def _mape_by_key(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{layer type: {"n": rows, model: MAPE}}`` of a transformer layer table."""
    out: dict[str, dict[str, float]] = {}
    for key, df in table.groupby("key"):
        row: dict[str, float] = {"n": len(df)}
        row.update({n: _metrics(df["measured_ms"], df[n])["mape"] for n in MODELS})
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
    return {name: _metrics(df[truth], df[name]) for name in MODELS if len(df)}


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


# --------------------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The headline table: one row per predictor, MAPE/rho/acc10 per network set."""
    comp = metrics["comparison"]
    parts = list(comp["sets"])
    short = {
        "generated": "gen",
        "nb201": "nb201",
        "zoo": "zoo",
        "zoo-cnn": "zoo-cnn",
        "attention": "attn",
    }
    header = ["predictor", "kind"]
    for part in parts:
        n = comp["sets"][part]["networks"]
        header += [
            f"{short[part]} MAPE % (n={n})",
            f"{short[part]} rho",
            f"{short[part]} ±10 %",
        ]
    rows = []
    for name, row in comp["models"].items():
        cells: list[Any] = [name, row["kind"]]
        for part in parts:
            m = row.get(part) or {}
            cells += [m.get("mape"), m.get("spearman"), m.get("acc10")]
        rows.append(cells)
    return header, rows


def headline_note(metrics: dict[str, Any]) -> str:
    """What the headline table's sets are and what each predictor was trained on."""
    comp = metrics["comparison"]
    tn = comp.get("training_networks", {})
    learned = (
        f"Learned predictors trained on {tn.get('cnn_train', 0)} generated cnn and "
        f"{tn.get('nb201_train', 0)} nb201 networks measured here (validation "
        f"{tn.get('cnn_val', 0) + tn.get('nb201_val', 0)}); "
        if tn
        else "No learned predictors in this run; "
    )
    return (
        "Network latency end to end (onnxruntime, 1 thread). Layer-wise models "
        "(roofline ... lut) trained on kernel benchmarks only; `kernel` (kernel-level: "
        "onnxruntime's optimised graph, per-kernel models) on the kernel benchmarks and the "
        "generated in-context `block:` networks of the bench store. "
        + learned
        + "none of the test networks below was seen in training. `gen` = held-out generated "
        "cnn networks, `nb201` = random nb201 networks, `zoo` = the zoo's real networks "
        "(out of distribution for the learned predictors: no hand-designed architecture is "
        "in their training spaces), split into `zoo-cnn` and `attn` (attention models). "
        "MAPE in %, Spearman's rho, and the fraction of networks "
        "predicted within ±10 %."
    )


def _transformer_layer_section(m: dict[str, Any]) -> list[str]:
    """Report lines: the layer models on the attention models' profiled transformer kernels."""
    t = m.get("transformer_layer_level") or {}
    if not t.get("layers"):
        return []
    return [
        "## Layer level, transformers: kernels of the zoo's attention models, profiled",
        "",
        f"{t['layers']} runtime groups of the attention models whose layer type is a "
        "transformer kernel (MatMul by a weight, MatMul of two activations, LayerNorm, "
        "residual Add + LayerNorm, RMSNorm, GELU, Softmax, embedding); the runtime's "
        "grouping, models trained on smart-padded benchmarks.",
        "",
        _md_table(
            ["model", "MAE (ms)", "RMSPE (%)", "MAPE (%)"],
            [[k, v["mae"], v["rmspe"], v["mape"]] for k, v in t["models"].items()],
        ),
        "",
        "MAPE (%) per layer type:",
        "",
        _md_table(
            ["type", "n", *MODELS],
            [[key, v["n"], *(v[n] for n in MODELS)] for key, v in t["by_key"].items()],
        ),
        "",
    ]


def _attention_network_section(m: dict[str, Any]) -> list[str]:
    """Report lines: Table 5 on the attention models alone."""
    a = m.get("network_level_attention") or {}
    if not a.get("networks"):
        return []
    return [
        f"Attention models alone ({a['networks']} networks):",
        "",
        _md_table(
            ["model", "MAE (ms)", "MAPE (%)", "Spearman rho", "within 10 %"],
            [[k, v["mae"], v["mape"], v["spearman"], v["acc10"]] for k, v in a["models"].items()],
        ),
        "",
    ]


def write_report(out: Path, metrics: dict[str, Any], networks: pd.DataFrame) -> None:
    m = metrics
    parts = [
        "# ANNETTE on this machine: layer-wise models vs measured networks",
        "",
        f"Command: `{m['command']}`  ",
        f"Device `{m['device']}`, onnxruntime {m['onnxruntime']}, 1 thread, timer "
        f"`{m['settings']['timer']}`; {m['settings']['kernels']} kernel benchmarks, "
        f"{m['settings']['multilayer']} multi-layer benchmarks; models trained on benchmarks "
        "only (no zoo or nb201 network).  ",
        f"Run time {m['seconds']:.0f} s wall, {m['run']['cpu_s']:.0f} s CPU"
        f"{_sessions_note(m)}; load average "
        f"{m['run']['load_avg_start']:.1f} at the start, {m['run']['load_avg_end']:.1f} at the "
        f"end on {m['run']['cpus']} CPUs; {m['run']['networks_measured_now']} of "
        f"{m['run']['networks']} networks measured in this invocation (the rest read back "
        "from the store).",
        "",
        "## Headline comparison: every predictor on held-out networks",
        "",
        headline_note(m),
        "",
        _md_table(*comparison_rows(m)),
        "",
        "![zoo](zoo_predicted_vs_measured.png)",
        "",
        "![networks](networks_predicted_vs_measured.png)",
        "",
        "## Layer level (ANNETTE Table 3): convolution layers of the zoo, profiled",
        "",
        f"{m['layer_level']['layers']} convolution groups (conv + fused BN/activation/add) "
        "of the zoo networks; measured = onnxruntime profiler; models trained on smart-padded "
        "benchmarks.",
        "",
        _md_table(
            ["model", "MAE (ms)", "RMSPE (%)", "MAPE (%)", "MAPE >= 0.1 ms (%)"],
            [
                [
                    k,
                    v["mae"],
                    v["rmspe"],
                    v["mape"],
                    m["layer_level"]["models_over_0.1ms"][k]["mape"],
                ]
                for k, v in m["layer_level"]["models"].items()
            ],
        ),
        "",
        f"(last column: the {m['layer_level']['layers_over_0.1ms']} groups of at least 0.1 ms; "
        "below, the profiler's own per-node cost -- a few microseconds -- dominates the "
        "measured time.)",
        "",
        *_transformer_layer_section(m),
        "## Network level (ANNETTE Table 5): zoo networks end to end",
        "",
        _md_table(
            ["model", "MAE (ms)", "MAPE (%)", "Spearman rho", "within 10 %"],
            [
                [k, v["mae"], v["mape"], v["spearman"], v["acc10"]]
                for k, v in m["network_level"]["models"].items()
            ],
        ),
        "",
        *_attention_network_section(m),
        "Per network (prediction error in %):",
        "",
        _md_table(
            ["network", "measured (ms)", *MODELS],
            [
                [
                    r["network"],
                    r["measured_ms"],
                    *(100 * (r[n] - r["measured_ms"]) / r["measured_ms"] for n in MODELS),
                ]
                for _, r in networks.iterrows()
            ],
        ),
        "",
        "## Fidelity (ANNETTE Table 6): nb201 networks",
        "",
    ]
    fid = m.get("fidelity")
    if fid:
        parts += [
            f"{fid['networks']} random nb201 networks measured end to end.",
            "",
            _md_table(
                ["model", "Spearman rho", "Kendall tau", "MAPE (%)"],
                [[k, v["spearman"], v["kendall"], v["mape"]] for k, v in fid["models"].items()],
            ),
            "",
        ]
    else:
        parts += ["(no nb201 networks)", ""]
    pad = m["smart_padding"]
    parts += [
        "## Smart padding",
        "",
        "Layer time of each single-layer benchmark against the profiler's kernel time:",
        "",
        _md_table(
            ["benchmarks", "n", "single MAPE", "padded MAPE", "single median", "padded median"],
            [
                [
                    k,
                    v["n"],
                    v["single_mape"],
                    v["padded_mape"],
                    v["single_median_ape"],
                    v["padded_median_ape"],
                ]
                for k, v in pad["layer_error"].items()
            ],
        ),
        "",
        "Zoo network MAPE (%) of each model trained on each kind of layer time:",
        "",
        _md_table(
            ["model", *pad["network_mape"].keys()],
            [
                [name, *(pad["network_mape"][meth][name] for meth in pad["network_mape"])]
                for name in MODELS
            ],
        ),
        "",
        "## Mapping model (fusion)",
        "",
        _md_table(
            ["pairs", "networks", "n", "fused", "F1", "MCC", "accuracy"],
            [
                [k, v["networks"], v["n"], v["fused"], v["f1"], v["mcc"], v["accuracy"]]
                for k, v in m["mapping"].items()
            ],
        ),
        "",
    ]
    write_atomic(out / "report.md", "\n".join(parts) + "\n")


# --------------------------------------------------------------------------- driver

#: Network sets of the headline comparison: label, description.
SETS = {
    "generated": "held-out generated cnn networks",
    "nb201": "random nb201 networks (held out)",
    "zoo": "zoo networks (out of distribution for the learned predictors)",
    "zoo-cnn": "the zoo's convolutional networks",
    "attention": "the zoo's attention models (ViT, DeiT, Swin, BERT, ALBERT, GPT-2, Llama, ...)",
}


def generated_networks(s: Settings) -> dict[str, list[str]]:
    """The networks the learned predictors learn from and are tested on (deterministic).

    ``cnn_train``/``cnn_val``/``cnn_test`` split ``s.cnn`` generated chains; ``nb201_train``/
    ``nb201_val`` are further nb201 cells, never one of the ``s.nb201`` fidelity networks.
    """
    from latlab.datasets.spaces import sample

    if not s.cnn:
        return {}
    split = split_generated(sample("cnn", s.cnn, s.seed), s.seed)
    held_out = set(sample("nb201", s.nb201, s.nb201_seed)) if s.nb201 else set()
    extra = [
        r for r in sample("nb201", s.nb201_train + s.nb201, s.nb201_seed + 1) if r not in held_out
    ][: s.nb201_train]
    n_val = max(1, round(0.1 * len(extra))) if len(extra) > 1 else 0
    return {
        "cnn_train": split.train,
        "cnn_val": split.val,
        "cnn_test": split.test,
        "nb201_train": extra[n_val:],
        "nb201_val": extra[:n_val],
    }


def comparison(
    fitted: dict[tuple[str, str], LayerwisePredictor],
    measured: pd.Series,
    sets: dict[str, list[str]],
    gen: dict[str, list[str]],
    s: Settings,
    out: Path,
    threads: int,
    notify: Progress | None,
    kernel: Any | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every predictor (layer-wise, kernel-level and learned) on every network set: frames
    and metrics. The zoo's metrics are also given for its CNNs and its attention models."""
    frames = {
        name: network_table(fitted, measured.reindex(refs), "padded")
        for name, refs in sets.items()
        if refs
    }
    fit_s: dict[str, float] = {}
    learned: list[str] = []
    kinds: dict[str, str] = {}
    if kernel is not None:
        for part, df in frames.items():
            if notify is not None:
                notify(f"kernel predictor: {part}", 0, len(df))
            df[KERNEL] = kernel.predict(list(df["network"]))
        kinds[KERNEL] = "kernel-level"
        fit_s[KERNEL] = float(getattr(kernel, "fit_seconds_", 0.0))
    if gen and s.learned:

        def ok(refs: list[str]) -> list[str]:
            return [r for r in refs if np.isfinite(measured.get(r, np.nan))]

        train = ok(gen["cnn_train"] + gen["nb201_train"])
        val = ok(gen["cnn_val"] + gen["nb201_val"])
        targets = {name: list(df["network"]) for name, df in frames.items()}
        preds = fit_and_predict(
            s.learned,
            (train, measured[train].to_numpy(float)),
            (val, measured[val].to_numpy(float)),
            targets,
            out,
            threads=threads,
            seed=s.seed,
            gcn_epochs=s.gcn_epochs,
            progress=notify,
        )
        for name, rec in preds.items():
            learned.append(name)
            fit_s[name] = rec["seconds"]
            for part, df in frames.items():
                df[name] = np.array(rec["pred"][part], dtype=float)
    for name in learned:
        kinds[name] = "learned"
    parts = dict(frames)
    if "zoo" in frames:
        zoo = frames["zoo"]
        attn = zoo["network"].map(is_attention).to_numpy(dtype=bool)
        for part, mask in (("zoo-cnn", ~attn), ("attention", attn)):
            if mask.any():
                parts[part] = zoo[mask]
    models: dict[str, Any] = {}
    for name in (*MODELS, *kinds):
        row: dict[str, Any] = {"kind": kinds.get(name, "layer-wise")}
        for part, df in parts.items():
            row[part] = _metrics(df["measured_ms"], df[name])
        if name in fit_s:
            row["fit_seconds"] = fit_s[name]
        models[name] = row
    info = {
        "sets": {part: {"networks": len(df), "what": SETS[part]} for part, df in parts.items()},
        "training_networks": {k: len(v) for k, v in gen.items()},
        "models": models,
    }
    return frames, info


def run_settings(
    out: Path,
    s: Settings,
    *,
    db: str | None = None,
    device: str | None = None,
    skip_bench: bool = False,
    command: str = "",
    threads: int = 1,
    notify: Progress | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation with settings ``s``; writes the report, returns the metrics.

    Every measurement goes to the store (``db``, default ``out/bench.db``) as it completes and
    fitted learned predictors' predictions to ``out/learned.jsonl``, so re-running after an
    interruption measures and trains only what is missing.
    """
    import onnxruntime as ort

    from latlab.datasets.measure import default_device_name
    from latlab.datasets.spaces import sample

    start = time.monotonic()
    cpu0 = time.process_time()
    load0 = os.getloadavg()[0]
    out.mkdir(parents=True, exist_ok=True)
    device = device or default_device_name("onnxruntime", 1)
    store = Store(db or str(out / "bench.db"))
    session: dict[str, Any] = {"load_avg_start": load0, "interrupted": True}
    try:
        bench_info = {} if skip_bench else run_benchmarks(store, device, s, notify)
        key = s.bench_config().protocol_key()
        table = training_table(store, device, protocol_key=key)
        table.to_csv(out / "benchmarks.csv", index=False)

        zoo_refs = [f"zoo:{n}" for n in s.zoo]
        nb_refs = sample("nb201", s.nb201, s.nb201_seed) if s.nb201 else []
        gen = generated_networks(s)
        gen_refs = [r for refs in gen.values() for r in refs]
        measured = measure_networks(store, device, zoo_refs + nb_refs + gen_refs, s, notify)
        groups = profile_networks(store, device, zoo_refs, s, notify)
        fitted = train_models(table, device, tuple(dict.fromkeys(("padded", *s.methods))), notify)
        metrics = _evaluate(
            out, s, store, device, table, measured, groups, fitted, gen, threads, notify
        )
        session["interrupted"] = False
        session["measured_now"] = int(measured.attrs.get("measured_now", 0)) + sum(
            int(b.get("measured_now", 0)) for b in bench_info.values() if isinstance(b, dict)
        )
    finally:
        store.close()
        session.update(
            seconds=time.monotonic() - start,
            cpu_s=time.process_time() - cpu0,
            load_avg_end=os.getloadavg()[0],
        )
        sessions = record_session(out, session)
    campaign = campaign_figures(sessions)
    metrics.update(
        {
            "command": command,
            "device": device,
            "onnxruntime": ort.__version__,
            "benchmarks": bench_info,
            "seconds": campaign["seconds"],
            "run": {
                "cpu_s": campaign["cpu_s"],
                "load_avg_start": campaign["load_avg_start"],
                "load_avg_end": campaign["load_avg_end"],
                "sessions": campaign["sessions"],
                "cpus": os.cpu_count(),
                "networks": int(measured.notna().sum()),
                "networks_measured_now": measured.attrs.get("measured_now", 0),
                "this_invocation_s": session["seconds"],
            },
        }
    )
    write_report(out, metrics, metrics.pop("_zoo_frame"))
    return json_safe(metrics)  # type: ignore[no-any-return]


#: The campaign's sessions (each invocation of the main job on one report folder): a resumed or
#: re-reported run adds its own, and the report's run time and load come from the sessions
#: that measured something (the first one too), not from the last invocation alone.
CAMPAIGN_FILE = "campaign.json"


def _sessions_note(m: dict[str, Any]) -> str:
    n = int(m["run"].get("sessions", 1) or 1)
    return f" over {n} sessions of this campaign (see {CAMPAIGN_FILE})" if n > 1 else ""


def record_session(out: Path, session: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``session`` to ``out/campaign.json`` (atomically); returns every session."""
    path = out / CAMPAIGN_FILE
    try:
        sessions = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    except (OSError, ValueError, AttributeError):
        sessions = []
    sessions = [*sessions, {k: json_safe(v) for k, v in session.items()}]
    dump_json(path, {"sessions": sessions})
    return sessions


def campaign_figures(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall and CPU time summed over the sessions that did work (measured anything, or were
    interrupted doing so, or the first), load average at the first one's start and the last
    one's end: what the report states, unchanged by a later run that only re-reports."""
    work = [
        s
        for i, s in enumerate(sessions)
        if i == 0 or s.get("interrupted") or int(s.get("measured_now", 0) or 0) > 0
    ] or sessions[-1:]
    return {
        "seconds": float(sum(float(s.get("seconds", 0.0)) for s in work)),
        "cpu_s": float(sum(float(s.get("cpu_s", 0.0)) for s in work)),
        "load_avg_start": float(work[0].get("load_avg_start", 0.0)),
        "load_avg_end": float(work[-1].get("load_avg_end", 0.0)),
        "sessions": len(work),
    }


def _evaluate(
    out: Path,
    s: Settings,
    store: Store,
    device: str,
    table: pd.DataFrame,
    measured: pd.Series,
    groups: dict[str, list[dict[str, Any]]],
    fitted: dict[tuple[str, str], LayerwisePredictor],
    gen: dict[str, list[str]],
    threads: int,
    notify: Progress | None,
) -> dict[str, Any]:
    from latlab.datasets.spaces import sample
    from latlab.experiments import annette_plots as plots

    zoo_refs = [f"zoo:{n}" for n in s.zoo]
    nb_refs = sample("nb201", s.nb201, s.nb201_seed) if s.nb201 else []
    main = "padded"
    layers = layer_table(fitted, groups, main)
    layers.to_csv(out / "zoo_layers.csv", index=False)
    tlayers = transformer_layer_table(fitted, groups, main)
    tlayers.to_csv(out / "zoo_transformer_layers.csv", index=False)
    sets = {"generated": gen.get("cnn_test", []), "nb201": nb_refs, "zoo": zoo_refs}
    frames, headline = comparison(
        fitted, measured, sets, gen, s, out, threads, notify, train_kernel(store, device, s)
    )
    for part, df in frames.items():
        df.to_csv(out / f"{part}_networks.csv", index=False)
    nets = frames["zoo"]
    predictors = list(headline["models"])
    plots.zoo_bars(nets, predictors, out / "zoo_predicted_vs_measured.png")
    plots.network_scatter(frames, predictors, out / "networks_predicted_vs_measured.png")
    plots.zoo_layer_scatter(layers, "mixed", out / "zoo_layers_mixed.png")
    metrics: dict[str, Any] = {
        "settings": {
            "preset": s.name,
            "quick": s.quick,
            "kernels": s.kernels,
            "multilayer": s.multilayer,
            "zoo": s.zoo,
            "nb201": s.nb201,
            "cnn": s.cnn,
            "nb201_train": s.nb201_train,
            "learned": list(s.learned),
            "timer": s.timer,
            "network_protocol_key": s.network_protocol.protocol_key(),
        },
        "comparison": headline,
        "training": fitted[("mixed", main)].training_,
        "layer_level": {
            "layers": len(layers),
            "models": summarise(layers),
            "layers_over_0.1ms": int((layers["measured_ms"] >= 0.1).sum()),
            "models_over_0.1ms": summarise(layers[layers["measured_ms"] >= 0.1]),
        },
        "transformer_layer_level": {
            "layers": len(tlayers),
            "models": summarise(tlayers),
            "by_key": _mape_by_key(tlayers),
        },
        "network_level": {"networks": len(nets), "models": summarise(nets)},
    }
    attn = nets["network"].map(is_attention).to_numpy(dtype=bool)
    metrics["network_level_attention"] = {
        "networks": int(attn.sum()),
        "models": summarise(nets[attn]) if attn.any() else {},
    }
    if "nb201" in frames:
        nb = frames["nb201"]
        metrics["fidelity"] = {
            "networks": len(nb),
            "models": {n: regression_metrics(nb["measured_ms"], nb[n]) for n in predictors},
        }
    metrics["smart_padding"] = {
        "layer_error": padding_table(table, device),
        "network_mape": {
            meth: {
                n: summarise(network_table(fitted, measured.reindex(zoo_refs), meth))[n]["mape"]
                for n in MODELS
            }
            for meth in dict.fromkeys(("padded", *s.methods))
        },
    }
    metrics["mapping"] = mapping_tables(store, device, zoo_refs, fitted[("mixed", main)], s.seed)
    metrics["_zoo_frame"] = nets
    return metrics


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """``latlab experiment run annette``: the quick or full preset into ``ctx.out``."""
    s = replace(Settings.preset(ctx.quick), seed=ctx.seed)
    return run_settings(ctx.out, s, command=ctx.command, threads=ctx.threads, notify=ctx.progress)


def main_job(
    out: Path,
    *,
    quick: bool = False,
    db: str | None = None,
    threads: int = 1,
    command: str = "latlab compare",
    notify: Progress | None = None,
) -> dict[str, Any]:
    """The main job (``latlab compare``): the ``main`` preset (``quick`` with ``quick``).

    Opens the store first so that a bad ``db`` fails before anything is written; writes
    ``report.md``, the figures, CSVs and ``metrics.json`` (atomically) into ``out``.
    """
    if threads < 1:
        raise DataError(f"threads must be at least 1, got {threads}")
    if db is not None:
        Store(db).close()  # a bad URL or an unreachable server: one-line StoreError now
    s = Settings.preset_named("quick" if quick else "main")
    metrics = run_settings(out, s, db=db, command=command, threads=threads, notify=notify)
    dump_json(out / "metrics.json", metrics)
    return metrics
