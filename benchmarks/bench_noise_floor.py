"""Measurement noise floor: how well two passes of the protocol, minutes apart, agree.

No predictor can be judged more precisely than its measurements repeat, so this benchmark
measures the same networks in separate passes, each a ``latlab measure`` campaign (paired
timing against the reference network, the default protocol) in its own fresh process, into
one temporary store, and reports per network the relative disagreement
|a - b| / ((a + b) / 2) of the two passes' **raw** medians and of their **drift-corrected**
medians (ratio to the same-round reference x the store's reference value, established by the
first pass and reused by the others: what a campaign hours later sees). Figures are the median
and the maximum over the networks of at least 1 ms.

Passes: a baseline pass (no busy process of ours), a gap (``--gap-min``, 10 minutes by
default, so that the machine has time to drift), then one pass per condition, compared with
the baseline:

* ``idle``: nothing of ours besides the measurement;
* ``one-core``: one busy process (a spinning interpreter) started and stopped by the benchmark;
* ``oversubscribed``: as many busy processes as cores, so that they and the measurement
  oversubscribe every core.

Every pass records the machine's load (load average, other processes' CPU during each
measurement): on a shared machine "idle" means "nothing of ours", which the load says.
Results go to ``benchmarks/results/noise_floor.json`` and ``.md`` (``noise_floor_quick.*`` with
``--quick``).

    python benchmarks/bench_noise_floor.py --quick   # ~10 networks 1-25 ms, 30 s gap: ~3 min
    python benchmarks/bench_noise_floor.py           # 26+ networks 1-500 ms, 10 min gap: ~35 min

The network list is a parameter (``--networks``); the default includes ``zoo:vit_s16`` and
``zoo:bert_medium`` when the zoo has them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
import numpy as np
from bench_common import load_note, machine, write_result

#: nb201 cells of a few ms (the 1 ms end beside small cnn: chains).
NB201 = [
    "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "nb201:|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
]
#: About 1 ms to 500 ms on one core of the development machine (convolutional networks at
#: several resolutions, residual, inverted-residual, dense, plain VGG-style).
FULL = [
    "cnn:r128-c32s2.r6-ir16e1.r6-ir24e6s2x2.r6-ir32e6s2x3.r6-c256k1-fc100",
    "cnn:r96-c32s2-rb32x2-rb64s2x2-fc10",
    "zoo:mobilenet_v2@96",
    *NB201,
    "zoo:resnet18@96",
    "zoo:mobilenet_v3_small@224",
    "zoo:mnasnet1_0@160",
    "zoo:shufflenet_v2_x1_0@224",
    "zoo:squeezenet1_1@224",
    "zoo:efficientnet_b0@128",
    "zoo:mobilenet_v2@224",
    "zoo:efficientnet_b0@224",
    "zoo:resnet18@224",
    "zoo:googlenet@224",
    "zoo:alexnet@224",
    "zoo:vgg11@64",
    "zoo:resnet50@224",
    "zoo:resnet34@224",
    "zoo:resnet18@320",
    "zoo:densenet121@224",
    "zoo:vgg11@128",
    "zoo:resnet50@320",
    "zoo:vgg11@224",
    "zoo:resnet50@448",
    "zoo:vgg11@320",
]
QUICK = [
    "cnn:r128-c32s2.r6-ir16e1.r6-ir24e6s2x2.r6-ir32e6s2x3.r6-c256k1-fc100",
    "cnn:r96-c32s2-rb32x2-rb64s2x2-fc10",
    "zoo:mobilenet_v2@96",
    NB201[0],
    "zoo:resnet18@96",
    "zoo:mobilenet_v3_small@224",
    "zoo:squeezenet1_1@224",
    "zoo:efficientnet_b0@128",
    "zoo:mobilenet_v2@224",
    "zoo:resnet18@224",
]
#: Transformer zoo models, included when the zoo has them.
TRANSFORMERS = ["zoo:vit_s16", "zoo:bert_medium"]
CONDITIONS = {"idle": 0, "one-core": 1, "oversubscribed": -1}  # -1: one per core
DEVICE = "noise-floor"


def default_networks(quick: bool) -> list[str]:
    """The default list, with the transformer zoo models that exist in this checkout."""
    from latlab.datasets import zoo

    names = set(zoo.names())
    extra = [t for t in TRANSFORMERS if t.split(":", 1)[1] in names]
    return (QUICK if quick else FULL) + extra


def _pass(db: str, refs: list[str], config: dict[str, Any], seed: int, blocks: int) -> dict:
    """One pass in a fresh process: a campaign; per network raw/corrected median and load."""
    from latlab.datasets.measure import MeasureConfig, measure_many
    from latlab.datasets.store import Store

    cfg = MeasureConfig(**config, seed=seed)  # the seed labels the pass (its protocol key)
    store = Store(db)
    started = time.time()
    load0 = os.getloadavg()
    result = measure_many(refs, cfg, store, DEVICE, shuffle=True, reference_blocks=blocks)
    out = {
        m.network: {
            "raw_ms": m.median_ms,
            "corrected_ms": m.corrected_ms,
            "reference_ms": m.reference_median_ms,
            "robust_cv": m.robust_cv,
            "other_cores": m.load.get("other_cores"),
            "loadavg_1m": (m.load.get("loadavg") or [None])[0],
        }
        for m in result.measured
    }
    value = result.reference_value
    store.close()
    return {
        "networks": out,
        "seconds": round(time.time() - started, 1),
        "loadavg_start": list(load0),
        "loadavg_end": list(os.getloadavg()),
        "loaded_networks": len(result.loaded),
        "max_reference_drift": result.max_drift,
        "reference_value_ms": value.value_ms if value is not None else None,
        "reference_value_quality": value.quality if value is not None else None,
    }


def _run_pass(db: str, refs: list[str], config: dict, seed: int, blocks: int, busy: int) -> dict:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        if procs:
            time.sleep(1.0)  # spinning before the pass starts
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process per pass
            doc = pool.apply(_pass, (db, refs, config, seed, blocks))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    doc["busy_processes"] = busy
    return doc


def disagreement(a: dict, b: dict, key: str) -> dict[str, Any]:
    """Median and max relative disagreement of ``key`` over the networks of >= 1 ms."""
    nets = [n for n in a if n in b and a[n][key] and b[n][key]]
    x = np.array([a[n][key] for n in nets])
    y = np.array([b[n][key] for n in nets])
    mean = (x + y) / 2
    rel = np.abs(x - y) / mean
    big = np.array([(a[n]["raw_ms"] + b[n]["raw_ms"]) / 2 >= 1.0 for n in nets])
    if not big.any():
        return {"networks": 0, "median": None, "max": None}
    return {
        "networks": int(big.sum()),
        "median": float(np.median(rel[big])),
        "max": float(np.max(rel[big])),
        "worst": nets[int(np.argmax(np.where(big, rel, -1)))],
    }


def _pass_load(doc: dict) -> dict[str, Any]:
    nets = doc["networks"].values()
    other = [v["other_cores"] for v in nets if v["other_cores"] is not None]
    la = [v["loadavg_1m"] for v in nets if v["loadavg_1m"] is not None]
    return {
        "loadavg_1m_mean": round(float(np.mean(la)), 2) if la else None,
        "other_cores_mean": round(float(np.mean(other)), 2) if other else None,
        "loaded_networks": doc["loaded_networks"],
        "busy_processes": doc["busy_processes"],
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 networks, 30 s gap, 0.5 s")
    parser.add_argument("--networks", nargs="+", default=None, help="network references")
    parser.add_argument("--gap-min", type=float, default=None, help="minutes between passes")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per network")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference", default=None, help="reference network (default: latlab's)")
    parser.add_argument("--db", default=None, help="store (default: a temporary file)")
    parser.add_argument("--timer", default="wall", choices=["wall", "thread"], help="clock")
    parser.add_argument("--stem", default=None, help="results file stem [noise_floor(_quick)]")
    args = parser.parse_args()

    from latlab.datasets.measure import DEFAULT_REFERENCE, machine_fingerprint
    from latlab.datasets.references import parse_reference

    refs = list(dict.fromkeys(args.networks or default_networks(args.quick)))
    for ref in refs:
        parse_reference(ref)
    gap_s = 60 * (args.gap_min if args.gap_min is not None else (0.5 if args.quick else 10.0))
    budget = args.time_budget or (0.5 if args.quick else 2.0)
    config = {
        "threads": args.threads,
        "time_budget_s": budget,
        "reference": args.reference or DEFAULT_REFERENCE,
        "timer": args.timer,
    }
    blocks = 3 if args.quick else 5
    tmp = tempfile.TemporaryDirectory(prefix="noise-floor-")
    db = args.db or str(Path(tmp.name) / "noise.db")
    cores = machine()["cores"]
    started = time.time()
    at_start = machine()
    print(f"{len(refs)} networks, gap {gap_s:.0f} s, conditions {args.conditions}", flush=True)
    passes: dict[str, dict] = {}
    passes["baseline"] = _run_pass(db, refs, config, 0, blocks, 0)
    print(f"baseline pass: {passes['baseline']['seconds']:.0f} s", flush=True)
    baseline_end = time.time()
    for seed, name in enumerate(args.conditions, start=1):
        wait = baseline_end + gap_s - time.time()
        if wait > 0:
            print(f"waiting {wait:.0f} s before the {name} pass", flush=True)
            time.sleep(wait)
        busy = cores if CONDITIONS[name] < 0 else CONDITIONS[name]
        passes[name] = _run_pass(db, refs, config, seed, blocks, busy)
        print(f"{name} pass: {passes[name]['seconds']:.0f} s", flush=True)
    base = passes["baseline"]["networks"]
    results = {}
    for name in args.conditions:
        other = passes[name]["networks"]
        results[name] = {
            "raw": disagreement(base, other, "raw_ms"),
            "corrected": disagreement(base, other, "corrected_ms"),
            "load": _pass_load(passes[name]),
            "max_reference_drift": passes[name]["max_reference_drift"],
        }
    lat = [v["raw_ms"] for v in base.values()]
    fp = machine_fingerprint()
    doc = {
        "command": " ".join(["python", "benchmarks/bench_noise_floor.py", *sys.argv[1:]]),
        "quick": args.quick,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "seconds": round(time.time() - started, 1),
        "gap_s": gap_s,
        "time_budget_s": budget,
        "threads": args.threads,
        "timer": args.timer,
        "reference": config["reference"],
        "reference_value_ms": passes["baseline"]["reference_value_ms"],
        "reference_value_quality": passes["baseline"]["reference_value_quality"],
        "networks": refs,
        "latency_range_ms": [float(min(lat)), float(max(lat))],
        "baseline_load": _pass_load(passes["baseline"]),
        "conditions": results,
        "passes": passes,
        "machine": {
            **at_start,
            "cpu_model": fp["cpu_model"],
            "libraries": fp["libraries"],
        },
    }
    load = doc["baseline_load"]["loadavg_1m_mean"] or at_start["load_average"][0]
    lines = [
        "# Measurement noise floor",
        "",
        f"`{doc['command']}`: {len(refs)} networks "
        f"({doc['latency_range_ms'][0]:.2f}-{doc['latency_range_ms'][1]:.1f} ms), onnxruntime, "
        f"{args.threads} thread(s), {args.timer} clock, paired with `{config['reference']}` "
        f"(reference value {doc['reference_value_ms']:.4f} ms, "
        f"{doc['reference_value_quality']}), second pass {gap_s / 60:.1f} min or more after the "
        f"baseline, {doc['seconds'] / 60:.1f} min in all.",
        f"Baseline pass: load average {load:.2f}, other processes "
        f"{doc['baseline_load']['other_cores_mean']} cores on average {load_note(load)}.",
        "",
        "| second pass | busy processes | load avg | other cores | networks >= 1 ms "
        "| raw median | raw max | corrected median | corrected max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['load']['busy_processes']} | {r['load']['loadavg_1m_mean']} "
            f"| {r['load']['other_cores_mean']} | {r['corrected']['networks']} "
            f"| {_pct(r['raw']['median'])} | {_pct(r['raw']['max'])} "
            f"| {_pct(r['corrected']['median'])} | {_pct(r['corrected']['max'])} |"
        )
    lines += [
        "",
        "Disagreement: |a - b| / ((a + b) / 2) of a network's medians in the baseline and the "
        "second pass; raw = measured medians, corrected = ratio to the same-round reference x "
        "the store's reference value (established by the baseline pass).",
    ]
    write_result(args.stem or ("noise_floor_quick" if args.quick else "noise_floor"), doc, lines)
    tmp.cleanup()


if __name__ == "__main__":
    main()
