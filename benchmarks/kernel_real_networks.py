"""Kernel-level prediction of real networks: bench a device, train ``kernel``, test on the zoo.

    python benchmarks/kernel_real_networks.py [--quick] [--db STORE] [--device NAME]
                                              [--bundle B]

The path a user takes, paired end to end:

1. ``latlab bench`` (every suite at its default size, the CLI's default protocol: paired with
   the default reference network, drift-corrected) into ``--db`` -- resumable: a store that
   ``latlab bench --device-name NAME --db STORE`` already filled is reused as it is; the bench
   cost reported is the store's own (first to last benchmark timestamp, kernels profiled);
2. ``latlab train --data STORE --target NAME --predictor kernel --out B`` (run as a command;
   or ``--bundle B`` written by it), and the layer-wise ``mixed`` on the smart-padding table
   for comparison -- no real network is used in training;
3. every ``zoo:`` network (:func:`latlab.datasets.zoo.names`) measured INTO A COPY of the
   store (``STORE-zoo.db``: the bench store is never changed) under the network protocol of
   ``latlab compare`` (paired with the store's reference network, groups of 4), so measured
   and training figures share the device's reference scale; then profiled, each profile
   stored with its measurement's reference scale
   (:func:`latlab.experiments.annette_steps.profile_networks`). Resumable in the copy;
4. per network measured (corrected median) vs predicted, network MAPE, ±10 % accuracy,
   Spearman ρ, the attention models' MAPE (networks running a MatMul of two activations or a
   LayerNormalization) and the per-kernel MAPE of the kernels ≥ 0.1 ms (profiled in-network
   times vs predicted, :func:`kernel_per_kernel.match_kernels`), with the load average;
   written to ``benchmarks/results/kernel_real_networks{,_quick}.json`` + ``.md``.

``--quick``: the suites at :data:`QUICK` sizes and the compare quick preset's zoo networks.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_common
import numpy as np
from bench_common import fail, network_metrics
from kernel_per_kernel import THRESHOLD_MS, match_kernels

log = logging.getLogger("kernel_real_networks")

QUICK = {"kernels": 250, "padding": 250, "multilayer": 48, "context": 120}

#: The zoo networks the kernel predictor was developed against: the kernel predictor's author
#: read their results while building it (to find gaps such as uncovered fused kernels), so they
#: shaped design decisions. Every other zoo network -- the CNN families and attention models
#: added in the same session by other developers -- was never looked at before the predictor
#: was finished: the held-out set whose figures count (reported separately).
DEVELOPMENT_ZOO = frozenset(
    {
        "alexnet", "densenet121", "efficientnet_b0", "googlenet", "mnasnet1_0", "mobilenet_v2",
        "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet34", "resnet50",
        "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg16",
    }
)  # fmt: skip


def attention_model(kernels: list[Any]) -> bool:
    """A network running a matmul of two activations or a LayerNormalization (attention)."""
    return any(
        k.family.endswith("/act") or "LayerNormalization" in k.op or "Attention" in k.op
        for k in kernels
    )


def run_bench_suites(db: str, device: str, quick: bool) -> dict[str, Any]:
    """``latlab bench`` with its defaults (every suite, paired): resumes what is missing."""
    from latlab.datasets.bench.campaign import ALL_SUITES, BENCH_PAIRED, default_count, run_bench
    from latlab.datasets.store import Store

    store = Store(db)
    out: dict[str, Any] = {}
    try:
        for suite in ALL_SUITES:
            n = QUICK[suite] if quick else default_count(suite)
            t0 = time.perf_counter()
            res = run_bench(suite, store, device, count=n, config=BENCH_PAIRED)
            out[suite] = {
                "benchmarks": len(res.references),
                "measured_now": len(res.measured),
                "failed": len(res.failed),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            log.info("bench %s: %s", suite, out[suite])
    finally:
        store.close()
    return out


#: Per table of a bench store: its start and end timestamps of the device's rows.
_SPANS = {
    "measurements": ("started_at", "finished_at"),
    "profiles": ("created_at", "created_at"),
    "layer_benchmarks": ("created_at", "created_at"),
}


def bench_cost(db: str, device: str) -> dict[str, Any]:
    """What profiling the device cost, from the store itself: the span from its first to its
    last benchmark timestamp (a bench interrupted and resumed later counts the pause too), the
    span of each suite's layer benchmarks, benchmark networks, profiled kernels, and the load
    its measurements recorded (1-minute load average; cores other processes used)."""
    import pandas as pd
    from sqlalchemy import text

    from latlab.datasets.bench.tables import BenchStore
    from latlab.datasets.store import Store

    join = "x join devices d on d.id = x.device_id where d.name = :device"
    store = Store(db)
    try:
        bench = BenchStore(store)
        kernels = len(bench.profile_nodes(device))
        lb = bench.layer_benchmarks(device)
        with store.engine.connect() as conn:
            stamps = [
                pd.to_datetime(v)
                for table, (a, b) in _SPANS.items()
                for v in conn.execute(
                    text(f"select min(x.{a}), max(x.{b}) from {table} {join}"), {"device": device}
                ).one()
                if v is not None
            ]
            suites = pd.read_sql(
                text(
                    f"select suite, min(x.created_at) as a, max(x.created_at) as b from "
                    f"layer_benchmarks {join} group by suite"
                ),
                conn,
                params={"device": device},
            )
    finally:
        store.close()
    span = (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0
    per_suite = {
        str(r.suite): round((pd.to_datetime(r.b) - pd.to_datetime(r.a)).total_seconds(), 1)
        for r in suites.sort_values("a").itertuples()
    }
    return {
        "span_s": round(span, 1),
        "suite_spans_s": per_suite,
        "benchmark_networks": int(lb["network"].nunique()) if len(lb) else 0,
        "profiled_kernels": kernels,
        "load": recorded_load(db, device),
    }


def recorded_load(db: str, device: str, networks: set[str] | None = None) -> dict[str, Any]:
    """The load the store's measurements of ``device`` (of ``networks``) recorded when they
    were taken: 1-minute load average at the 10th percentile / median / 90th, and the median
    of the cores other processes used -- the conditions of the figures, not of the moment a
    resumed run reads them back."""
    from latlab.datasets.store import Store

    store = Store(db)
    try:
        meas = store.measurements([device], extra=True)
    finally:
        store.close()
    if networks is not None:
        meas = meas[meas["network"].isin(networks)]
    loads = [(e or {}).get("load") or {} for e in meas["extra"]]
    avg = np.array([ld["loadavg"][0] for ld in loads if ld.get("loadavg")], dtype=float)
    other = np.array([ld["other_cores"] for ld in loads if "other_cores" in ld], dtype=float)
    q = [round(float(v), 2) for v in np.percentile(avg, [10, 50, 90])] if len(avg) else None
    return {
        "loadavg_1min_p10_median_p90": q,
        "other_cores_median": round(float(np.median(other)), 2) if len(other) else None,
    }


def _load_text(load: dict[str, Any]) -> str:
    q = load["loadavg_1min_p10_median_p90"]
    if q is None:
        return "not recorded"
    return (
        f"1-minute load average {q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} (10th percentile / median / "
        f"90th), other processes using {load['other_cores_median']:.2f} cores (median)"
    )


def train_bundle(db: str, device: str, out: Path) -> tuple[Any, float]:
    """``latlab train --predictor kernel`` on the store, as a user runs it; the bundle's model."""
    from latlab.training.bundle import load_bundle

    cmd = [sys.executable, "-m", "latlab", "train", "--data", db, "--target", device,
           "--predictor", "kernel", "--out", str(out), "--no-mlflow"]  # fmt: skip
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        fail(f"latlab train failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return load_bundle(out).predictor, time.perf_counter() - t0


def _env() -> dict[str, str]:
    """This process's environment with the checkout's ``src`` first on PYTHONPATH: the
    ``latlab`` the subprocess runs is the one :mod:`bench_common` made this script import."""
    src = str(bench_common.ROOT / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def train_mixed(db: str, device: str) -> Any:
    """The layer-wise ``mixed`` model on the store's smart-padding table (the baseline)."""
    from latlab.datasets.bench.export import training_table
    from latlab.datasets.store import Store
    from latlab.predictors import make_predictor

    store = Store(db)
    try:
        table = training_table(store, device, method="padded")
    finally:
        store.close()
    rows = table[table[device].notna()]
    return make_predictor("mixed").fit(list(rows["network"]), rows[device].to_numpy(dtype=float))


def measure_zoo(db: str, device: str, refs: list[str], quick: bool) -> tuple[Any, Any]:
    """Corrected medians (ms, a Series) and profiled kernels (:func:`kernel_rows`) of ``refs``,
    measured and profiled into the test copy ``db`` as ``latlab compare`` does."""
    from latlab.datasets.bench.export import kernel_rows
    from latlab.datasets.store import Store
    from latlab.experiments.annette_settings import Settings
    from latlab.experiments.annette_steps import measure_networks, profile_networks

    s = Settings.preset_named("quick" if quick else "main", timer="wall")
    store = Store(db)
    try:
        medians = measure_networks(store, device, refs, s)
        profile_networks(store, device, refs, s)
        profiled = kernel_rows(store, device, set(refs), exclude_zoo=False)
    finally:
        store.close()
    return medians, profiled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller suites (see QUICK)")
    ap.add_argument("--db", default=None, help="bench store (SQLite file)")
    ap.add_argument("--device", default=None, help="device name in the store")
    ap.add_argument("--bundle", default=None, help="kernel bundle to test")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from latlab.datasets import zoo
    from latlab.datasets.bench.kernels_runtime import runtime_kernels
    from latlab.experiments.annette_settings import QUICK_ZOO

    work = bench_common.ROOT / ".kernel_bench"
    work.mkdir(exist_ok=True)
    db = Path(args.db or work / ("bench_quick.db" if args.quick else "bench.db"))
    if "://" in str(db):
        fail(f"--db {db}: give an SQLite file (the zoo is measured into a copy of it)")
    device = args.device
    if device is None and db.is_file():
        store, device = bench_common.open_store(str(db), None)
        store.close()
    device = device or "cpu-t1"
    bundle_dir = Path(args.bundle) if args.bundle else None
    if bundle_dir is not None and not (bundle_dir / "manifest.json").is_file():
        fail(f"--bundle {bundle_dir}: not a bundle (no manifest.json)")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    bench = run_bench_suites(str(db), device, args.quick)
    bench_s = time.perf_counter() - t0
    cost = bench_cost(str(db), device)
    if bundle_dir is None:
        kernel, train_s = train_bundle(str(db), device, work / f"{db.stem}-kernel-bundle")
    else:
        from latlab.training.bundle import load_bundle

        kernel, train_s = load_bundle(bundle_dir).predictor, 0.0
    mixed = train_mixed(str(db), device)

    names = [n for n in QUICK_ZOO if n in zoo.names()] if args.quick else zoo.names()
    refs = [f"zoo:{n}" for n in names]
    test_db = db.with_name(f"{db.stem}-zoo.db")
    if not test_db.exists():
        shutil.copyfile(db, test_db)
    medians, profiled = measure_zoo(str(test_db), device, refs, args.quick)
    layers = kernel.predict_layers(refs)  # once: per-kernel pairs and uncovered kernels
    pairs = match_kernels(profiled, kernel, layers)
    big = pairs[pairs["measured_ms"] >= THRESHOLD_MS] if len(pairs) else pairs
    kernel_ms, mixed_ms = kernel.predict(refs), mixed.predict(refs)
    uncovered = layers[~layers["covered"]].groupby("network")["op"].agg(lambda o: sorted(set(o)))
    rows = []
    for i, ref in enumerate(refs):
        ks = runtime_kernels(ref)
        rows.append(
            {
                "network": ref,
                "held_out": ref.removeprefix("zoo:") not in DEVELOPMENT_ZOO,
                "attention": attention_model(ks),
                "measured_ms": float(medians[ref]),
                "kernel_ms": float(kernel_ms[i]),
                "mixed_ms": float(mixed_ms[i]),
                "kernels": len(ks),
                "uncovered": [str(o) for o in uncovered.get(ref, [])],
            }
        )
    t = np.array([r["measured_ms"] for r in rows])
    result: dict[str, Any] = {"networks": rows}
    held = np.array([r["held_out"] for r in rows])
    for name in ("kernel", "mixed"):
        p = np.array([r[f"{name}_ms"] for r in rows])
        result[name] = network_metrics(t, p)
        result[name]["held_out"] = network_metrics(t[held], p[held]) if held.sum() > 2 else None
        result[name]["development"] = (
            network_metrics(t[~held], p[~held]) if (~held).sum() > 2 else None
        )
        att = np.array([r["attention"] for r in rows])
        result[name]["attention_mape"] = (
            float(100 * np.mean(np.abs(p[att] - t[att]) / t[att])) if att.any() else None
        )
        result[name]["attention_networks"] = int(att.sum())
    if len(big):
        result["kernel"]["per_kernel_mape_ge_0.1ms"] = float(big["ape"].mean())
        result["kernel"]["kernels_ge_0.1ms"] = len(big)
    load1 = os.getloadavg()
    zoo_load = recorded_load(str(test_db), device, set(refs))
    cmd = "python benchmarks/kernel_real_networks.py" + (" --quick" if args.quick else "")
    cmd += f" --db {db} --device {device}" + (f" --bundle {bundle_dir}" if bundle_dir else "")
    result.update(
        quick=args.quick,
        command=cmd,
        device=device,
        bench=bench,
        bench_now_s=round(bench_s, 1),
        bench_cost=cost,
        train_s=round(train_s, 1),
        machine=bench_common.machine(),
        load_start=load0,
        load_end=load1,
        zoo_measurement_load=zoo_load,
        kernels_profiled_zoo=len(pairs),
        training=getattr(kernel, "training_", None),
    )
    k, m = result["kernel"], result["mixed"]
    how = f"`latlab train --predictor kernel` in {train_s:.0f} s" if train_s else f"{bundle_dir}"
    lines = [
        f"# Kernel-level prediction of real networks{' (quick)' if args.quick else ''}",
        "",
        f"Command: `{cmd}`; onnxruntime CPU, 1 thread, wall clock, every figure paired with "
        f"the store's reference network (drift-corrected). The zoo's measurements recorded "
        f"{_load_text(zoo_load)} on {result['machine']['cores']} cores "
        f"{bench_common.load_note(zoo_load['loadavg_1min_p10_median_p90'][1])}; this run's "
        f"load average {load0[0]:.1f} -> {load1[0]:.1f}.",
        "",
        f"Bench store: {cost['benchmark_networks']} benchmark networks, "
        f"{cost['profiled_kernels']} profiled kernels, {cost['span_s']:.0f} s from its first to "
        f"its last benchmark (per suite, s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in cost["suite_spans_s"].items())
        + f"; {bench_s:.0f} s resuming now); load its measurements recorded: "
        f"{_load_text(cost['load'])}. "
        f"`kernel` from {how}. Test: "
        f"{len(rows)} zoo networks measured into a copy of the store, none used in training; "
        f"{len(pairs)} of their kernels matched to profiled times, {len(big)} >= "
        f"{THRESHOLD_MS} ms.",
        "",
        "| predictor | MAPE % | ±10 % | Spearman ρ | attention MAPE % "
        "| per-kernel MAPE % (≥ 0.1 ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("kernel", k), ("mixed", m)):
        att = "n/a" if r["attention_mape"] is None else f"{r['attention_mape']:.1f}"
        pk = r.get("per_kernel_mape_ge_0.1ms")
        per_kernel = "" if pk is None else f"{pk:.1f} ({r['kernels_ge_0.1ms']} kernels)"
        lines.append(
            f"| {name} | {r['mape']:.1f} | {r['within_10']:.0f} | {r['spearman']:.3f} | {att} | "
            f"{per_kernel} |"
        )
    lines += [
        "",
        "Held out (networks the kernel predictor's developer never saw before it was finished) "
        "and development networks (the 16 it was built against):",
        "",
        "| predictor | set | networks | MAPE % | ±10 % | Spearman ρ |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("kernel", k), ("mixed", m)):
        for part in ("held_out", "development"):
            sub = r.get(part)
            if sub:
                lines.append(
                    f"| {name} | {part.replace('_', '-')} | {sub['networks']} | "
                    f"{sub['mape']:.1f} | {sub['within_10']:.0f} | {sub['spearman']:.3f} |"
                )
    lines += [
        "",
        "| network | held out | attention | measured ms | kernel ms | mixed ms | uncovered |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {'yes' if r['held_out'] else ''} | "
            f"{'yes' if r['attention'] else ''} | {r['measured_ms']:.3f} | "
            f"{r['kernel_ms']:.3f} | {r['mixed_ms']:.3f} | {', '.join(r['uncovered'])} |"
        )
    stem = "kernel_real_networks_quick" if args.quick else "kernel_real_networks"
    bench_common.write_result(stem, result, lines)


if __name__ == "__main__":
    main()
