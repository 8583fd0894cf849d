"""How fast networks are generated: sampled references -> IR -> ONNX, and nb201 totals.

Measures, per search space, the time to sample references, build their IR (``resolve``) and
export them with ``latlab.encoders.onnx_export.to_onnx`` (the ModelProto a measurement
backend runs), and the time to compute the totals of all 15,625 nb201 networks (lazy graphs
with the additive cost formula). Target: >= 1,000 networks built as ONNX in <= 60 s.

    PYTHONPATH=src python benchmarks/bench_build.py --quick [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from latlab.datasets import resolve
from latlab.datasets.spaces import sample
from latlab.datasets.spaces.nb201 import _TABLES, all_nb201, nb201_graph
from latlab.encoders.nb201_cell import parse_arch
from latlab.encoders.onnx_export import to_onnx


def bench_space(space: str, count: int, seed: int, progress: Progress) -> dict[str, object]:
    t0 = time.perf_counter()
    refs = sample(space, count, seed)
    t_sample = time.perf_counter() - t0
    build, export, params, macs = [], [], [], []
    task = progress.add_task(f"{space}: IR + ONNX", total=count)
    for ref in refs:
        t = time.perf_counter()
        graph = resolve(ref)
        _ = graph.layers  # nb201 graphs are lazy: build the layers
        t1 = time.perf_counter()
        model = to_onnx(graph)
        t2 = time.perf_counter()
        assert len(model.graph.node) >= len(graph.layers)
        build.append(t1 - t)
        export.append(t2 - t1)
        params.append(graph.totals.params)
        macs.append(graph.totals.macs)
        progress.advance(task)
    total = t_sample + sum(build) + sum(export)
    return {
        "space": space,
        "networks": count,
        "sample_s": round(t_sample, 3),
        "build_s": round(sum(build), 3),
        "export_s": round(sum(export), 3),
        "total_s": round(total, 3),
        "networks_per_s": round(count / total, 1),
        "median_ms": round(1e3 * float(np.median(np.add(build, export))), 2),
        "p95_ms": round(1e3 * float(np.quantile(np.add(build, export), 0.95)), 2),
        "median_params": int(np.median(params)),
        "median_macs": int(np.median(macs)),
    }


def bench_nb201_totals(repeats: int) -> dict[str, object]:
    refs = all_nb201()
    archs = [r.split(":", 1)[1] for r in refs]
    _TABLES.clear()
    t = time.perf_counter()
    _ = nb201_graph(archs[0]).totals  # the cost table, built once per input shape
    t_table = time.perf_counter() - t
    best_direct = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        macs = [nb201_graph(parse_arch(a)).totals.macs for a in archs]
        best_direct = min(best_direct, time.perf_counter() - t)
    # through the public reference resolver (parsing, validation, cache), as encoders use it
    t = time.perf_counter()
    macs_resolved = [resolve(r).totals.macs for r in refs]
    best_resolve = time.perf_counter() - t
    assert macs == macs_resolved
    return {
        "networks": len(refs),
        "cost_table_s": round(t_table, 4),
        "totals_all_s": round(best_direct, 3),
        "resolve_and_totals_all_s": round(best_resolve, 3),
        "min_macs": min(macs),
        "max_macs": max(macs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1,000 networks per space (fcnn-wide: 200)"
    )
    parser.add_argument("--count", type=int, default=None, help="networks per space")
    parser.add_argument("--spaces", default="fcnn,fcnn-wide,nb201,cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    count = args.count or (1000 if args.quick else 5000)
    # fcnn-wide networks carry ~12 M weights each (~48 MB): its rate is measured on fewer.
    counts = {space: count for space in args.spaces.split(",")}
    if args.count is None and "fcnn-wide" in counts:
        counts["fcnn-wide"] = count // 5
    console = Console(width=150)
    results: dict[str, object] = {"machine": platform.processor() or platform.machine()}
    rows = []
    with Progress(console=console, transient=True) as progress:
        for space, n in counts.items():
            rows.append(bench_space(space, n, args.seed, progress))
    results["spaces"] = rows
    results["nb201_totals"] = bench_nb201_totals(repeats=1 if args.quick else 3)

    table = Table(title="IR + ONNX build rate of sampled networks")
    for col in ("space", "networks", "total_s", "networks_per_s", "sample_s", "build_s", "export_s",
                "median_ms", "p95_ms", "median_params"):  # fmt: skip
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in (
            "space", "networks", "total_s", "networks_per_s", "sample_s", "build_s", "export_s",
            "median_ms", "p95_ms", "median_params",
        )))  # fmt: skip
    console.print(table)
    nb = results["nb201_totals"]
    console.print(
        f"nb201 totals of all {nb['networks']} networks: {nb['totals_all_s']} s "
        f"({nb['resolve_and_totals_all_s']} s through resolve(); cost table {nb['cost_table_s']} s)"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
