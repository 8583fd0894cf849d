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
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.datasets.bench.export import training_table
from latlab.datasets.store import Store
from latlab.errors import DataError
from latlab.experiments.annette_learned import fit_and_predict, split_generated
from latlab.experiments.annette_report import CAMPAIGN_FILE, write_report
from latlab.experiments.annette_settings import KERNEL, MODELS, Settings
from latlab.experiments.annette_steps import (
    is_attention,
    measure_networks,
    profile_networks,
    run_benchmarks,
    train_kernel,
    train_models,
)
from latlab.experiments.annette_tables import (
    layer_table,
    mape_by_key,
    mapping_tables,
    network_table,
    padding_table,
    point_metrics,
    summarise,
    transformer_layer_table,
)
from latlab.experiments.common import dump_json
from latlab.experiments.context import ExperimentContext, Progress
from latlab.jsonio import jsonable
from latlab.predictors.layerwise import LayerwisePredictor
from latlab.training.metrics import regression_metrics

log = logging.getLogger("latlab.experiments.annette")


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
            row[part] = point_metrics(df["measured_ms"], df[name])
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
    return jsonable(metrics)  # type: ignore[no-any-return]


#: The campaign's sessions (each invocation of the main job on one report folder): a resumed or
#: re-reported run adds its own, and the report's run time and load come from the sessions
#: that measured something (the first one too), not from the last invocation alone.
def record_session(out: Path, session: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``session`` to ``out/campaign.json`` (atomically); returns every session."""
    path = out / CAMPAIGN_FILE
    try:
        sessions = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    except (OSError, ValueError, AttributeError):
        sessions = []
    sessions = [*sessions, {k: jsonable(v) for k, v in session.items()}]
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
            "by_key": mape_by_key(tlayers),
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
