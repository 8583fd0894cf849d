"""Measure the zoo's attention models in onnxruntime and list the kernels it fuses them into.

For each attention model of ``latlab.datasets.zoo`` (``meta["attention"]``) at its default
``@N``: parameters, MACs, the median latency through latlab's measurement protocol
(onnxruntime CPU, 1 thread, ORT_ENABLE_ALL), and the op counts of the graph onnxruntime
runs (``runtime_mapping``: LayerNormalization, SkipLayerNormalization, Gelu, FastGelu,
FusedMatMul, SimplifiedLayerNormalization, ...). The load average is recorded: figures taken
on a shared machine say so.

    PYTHONPATH=src python benchmarks/measure_attention_zoo.py [--out results.json] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from latlab.datasets import resolve, zoo
from latlab.datasets.bench.trace import runtime_mapping
from latlab.datasets.measure import MeasureConfig, measure

FUSED = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "FusedMatMul",
    "FusedGemm",
    "Attention",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="zoo names (default: every attention model)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget", type=float, default=3.0, help="time budget per network (s)")
    args = parser.parse_args()
    names = args.names or [n for n in zoo.names() if zoo.get_model(n).attention]
    config = MeasureConfig(repeats=args.repeats, min_repeats=5, time_budget_s=args.budget)
    rows = []
    for name in names:
        ref = f"zoo:{name}"
        g = resolve(ref)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        m = measure(ref, config)
        ops = Counter(n.op for n in runtime_mapping(ref).nodes)
        rows.append(
            {
                "network": ref,
                "params": g.totals.params,
                "macs": g.totals.macs,
                "median_ms": m.median_ms,
                "p10_ms": m.p10_ms,
                "p90_ms": m.p90_ms,
                "repeats": m.repeats,
                "wall_s": time.perf_counter() - start,
                "load1": [load_before, os.getloadavg()[0]],
                "fused_ops": {op: ops[op] for op in FUSED if ops[op]},
                "runtime_nodes": sum(ops.values()),
                "ir_layers": len(g.layers),
            }
        )
    table = Table("network", "params", "GMACs", "median ms", "p10-p90", "load", "fused kernels")
    for r in rows:
        table.add_row(
            r["network"],
            f"{r['params'] / 1e6:.1f} M",
            f"{r['macs'] / 1e9:.2f}",
            f"{r['median_ms']:.1f}",
            f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
            f"{r['load1'][0]:.1f}/{r['load1'][1]:.1f}",
            ", ".join(f"{k} {v}" for k, v in r["fused_ops"].items()),
        )
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
