"""Serving every network of the FBNet and OFA tables with intervals from a bundle, cold.

For each space: a LightGBM bundle with split-conformal intervals is trained on 900 networks
of the shared table (``1080ti_64`` for FBNet, ``titan_xp_64`` for OFA; 100 validation, 500
calibration), then all 5,000 networks are predicted with 90 % intervals through
``latlab.load_bundle(...)`` exactly as :mod:`bench_serving` does for nb201: **cold** (a freshly
loaded bundle, the reference and space caches cleared), **warm**, and the **bare** model on
precomputed features, with the ratios (issue 15's target: cold within 2x of bare).

    python benchmarks/bench_serving_spaces.py [--repeats 3] [--tables ../shared/data]

Writes ``benchmarks/results/bench_serving_spaces.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import ROOT, load_note, machine, write_result
from bench_serving import measure

TABLES = {"fbnet": "1080ti_64", "ofa": "titan_xp_64"}


def clear_space_caches() -> None:
    """Process-wide caches a fresh process would not have (references, space segment tables)."""
    from latlab.datasets import references
    from latlab.datasets.spaces import fbnet, ofa

    with references._CACHE.lock:
        references._CACHE.data.clear()
    for f in (fbnet._parse, fbnet._segment, fbnet._position_shapes, ofa._parse, ofa._segment):
        f.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tables", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    import bench_serving

    bench_serving.clear_reference_cache = clear_space_caches  # measure() calls it before cold
    from latlab.training.pipeline import TrainConfig, train

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-spaces-") as tmp:
        for space, target in TABLES.items():
            table = args.tables / f"{space}_latency.csv"
            if not table.exists():
                sys.exit(f"the shared table is needed: {table} not found")
            refs = pd.read_csv(table)["network"].tolist()
            config = TrainConfig(
                predictor="gbm", train_size=900, val_size=100, cal_size=500, conformal="split"
            )
            out = Path(tmp) / space
            train(table, target, config, out)
            rows.append({"space": space, "target": target, **measure(out, refs, args.repeats)})
    m = machine()
    lines = [
        "# Serving FBNet / OFA tables with intervals (cold, warm, bare)",
        "",
        f"cores {m['cores']}, load average {m['load_average'][0]:.1f} "
        f"{load_note(m['load_average'][0])}; medians of {args.repeats} repeats",
        "",
        "| space | device | networks | cold s | warm s | bare s | cold/bare | warm/bare |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['space']} | {r['target']} | {r['networks']} | {r['cold_s']:.3f} | "
            f"{r['warm_s']:.3f} | {r['bare_s']:.4f} | {r['cold_ratio']:.1f} | "
            f"{r['warm_ratio']:.1f} |"
        )
    write_result("bench_serving_spaces", {"machine": m, "rows": rows}, lines)
    assert all(np.isfinite(r["cold_s"]) for r in rows)


if __name__ == "__main__":
    main()
