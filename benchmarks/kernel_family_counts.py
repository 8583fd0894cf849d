"""How many profiled kernels of each family a bench store holds: does it feed every family?

    python benchmarks/kernel_family_counts.py --db STORE [--device DEVICE]

The kernel predictor (``latlab train --predictor kernel``) fits a family's own model from
``min_points`` (12) of its kernels, a plain linear cost from ``MIN_LINEAR_POINTS`` (3), and
otherwise borrows a sibling family's model. This reads the store's kernel rows (the
predictor's training data: real zoo networks left out, as in training) and writes
``benchmarks/results/kernel_family_counts.{md,json}``: kernels per family and the families
below each threshold. Run it on the store of ``latlab compare`` (``--out DIR`` keeps
``DIR/bench.db``) or of ``latlab bench``.
"""

from __future__ import annotations

import argparse

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
from bench_common import fail, open_store, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="bench store (SQLite file or URL)")
    ap.add_argument("--device", default=None, help="device name (default: the store's only one)")
    args = ap.parse_args()

    from latlab.datasets.bench.export import kernel_rows
    from latlab.predictors.kernel import MIN_LINEAR_POINTS, KernelPredictor

    store, device = open_store(args.db, args.device)
    rows = kernel_rows(store, device)
    if rows.empty:
        fail(f"--db {args.db}: no profiled kernels of {device!r}")
    counts = rows.groupby("family").size().sort_values(ascending=False)
    full = KernelPredictor().min_points
    own = counts[counts >= full]
    linear = counts[(counts < full) & (counts >= MIN_LINEAR_POINTS)]
    borrowed = counts[counts < MIN_LINEAR_POINTS]
    lines = [
        f"# Kernel families in {args.db} ({device})",
        "",
        f"{len(rows)} profiled kernels of {rows['network'].nunique()} generated networks and "
        f"benchmarks, {len(counts)} families: {len(own)} with at least {full} kernels (their "
        f"own model), {len(linear)} with {MIN_LINEAR_POINTS}-{full - 1} (a linear cost), "
        f"{len(borrowed)} below {MIN_LINEAR_POINTS} (a sibling family's model).",
        "",
        "| family | kernels | model |",
        "|---|---:|---|",
    ]
    for family, n in counts.items():
        kind = "own" if n >= full else "linear" if n >= MIN_LINEAR_POINTS else "sibling"
        lines.append(f"| {family} | {n} | {kind} |")
    doc = {
        "db": args.db,
        "device": device,
        "kernels": len(rows),
        "families": {str(k): int(v) for k, v in counts.items()},
        "min_points": full,
        "min_linear_points": MIN_LINEAR_POINTS,
        "below_min_points": [str(k) for k in counts[counts < full].index],
    }
    write_result("kernel_family_counts", doc, lines)


if __name__ == "__main__":
    main()
