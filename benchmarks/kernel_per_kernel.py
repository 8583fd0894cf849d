"""Per-kernel accuracy of ``kernel`` on the zoo networks a ``latlab compare`` store profiled.

    python benchmarks/kernel_per_kernel.py --db STORE [--device DEVICE]

``latlab compare`` profiles every zoo network into its store (onnxruntime's profiler, each
kernel's time inside its network) but reports network-level figures only. This trains
``kernel`` exactly as compare does (:func:`latlab.experiments.annette_steps.train_kernel`,
main preset: the store's generated ``kernel:``/``block:`` networks; no zoo network), predicts
every zoo network kernel by kernel (:meth:`KernelPredictor.predict_layers`) and compares each
kernel with its profiled time (:func:`latlab.datasets.bench.export.kernel_rows`: the profile's
statistic, the 10th percentile under the thread timer), matched by node name and op (by kernel
index where a name is missing or repeated). The
issue-16 figure is the MAPE over kernels of at least 0.1 ms (below, the profiler's own
per-node cost of a few microseconds dominates the measured time). Writes
``benchmarks/results/kernel_per_kernel.{md,json}``; reads the store only.
"""

from __future__ import annotations

import argparse
from typing import Any

import bench_common  # makes latlab importable from a checkout
import pandas as pd
from bench_common import fail, open_store, write_result

THRESHOLD_MS = 0.1


def _op_tail(ops: pd.Series) -> pd.Series:
    """The op's last dotted part: a fused kernel's domain may be written either way."""
    return ops.astype(str).str.rsplit(".", n=1).str[-1]


def _named_once(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows whose node name is set and unique within its network."""
    counts = frame.groupby(["network", column])[column].transform("size")
    return (frame[column] != "") & (counts == 1)


def match_kernels(
    profiled: pd.DataFrame, model: Any, predicted: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every profiled kernel (rows of :func:`kernel_rows`) beside ``model``'s prediction of it.

    Matched by node name and op within a network, where the optimised graph names the node
    once (onnxruntime's graph optimisations may order the nodes of one model differently
    between two sessions, so an index can point at another kernel); by kernel index and op for
    unnamed or repeated names. Columns of :func:`kernel_rows` plus ``predicted_ms``,
    ``measured_ms`` (the profile's statistic) and ``ape`` (%); empty when ``profiled`` is.
    ``predicted``: the model's ``predict_layers`` of those networks, when the caller has it.
    """
    if profiled.empty:
        return profiled
    if predicted is None:
        predicted = model.predict_layers(list(dict.fromkeys(profiled["network"])))
    pred = predicted.rename(
        columns={"kernel": "pred_index", "op": "predicted_op", "family": "predicted_family"}
    )
    pred = pred.assign(tail=_op_tail(pred["predicted_op"]))
    prof = profiled.assign(tail=_op_tail(profiled["op"]))
    by_name = _named_once(prof, "node")
    named = prof[by_name].merge(
        pred[_named_once(pred, "name")], left_on=["network", "node", "tail"],
        right_on=["network", "name", "tail"], how="inner",
    )  # fmt: skip
    rest = prof[~by_name].merge(
        pred, left_on=["network", "node_index", "tail"],
        right_on=["network", "pred_index", "tail"], how="inner",
    )  # fmt: skip
    both = pd.concat([named, rest], ignore_index=True).drop(columns=["tail"])
    both["measured_ms"] = both["time_us"] / 1e3
    both["ape"] = 100 * (both["predicted_ms"] - both["measured_ms"]).abs() / both["measured_ms"]
    return both


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="a latlab compare store (SQLite file or URL)")
    ap.add_argument("--device", default=None, help="device name (default: the store's only one)")
    ap.add_argument("--tag", default=None, help="suffix of the result files (another store)")
    args = ap.parse_args()
    if args.tag is not None and not args.tag.replace("_", "").isalnum():
        fail(f"--tag {args.tag!r}: use letters, digits and underscores")
    from latlab.datasets import zoo
    from latlab.datasets.bench.export import kernel_rows
    from latlab.experiments.annette_settings import Settings
    from latlab.experiments.annette_steps import train_kernel

    store, device = open_store(args.db, args.device)
    refs = [f"zoo:{n}" for n in zoo.names()]
    profiled = kernel_rows(store, device, set(refs), exclude_zoo=False)
    if profiled.empty:  # before any training
        fail(f"--db {args.db}: no profiled zoo kernels of {device!r}")
    model = train_kernel(store, device, Settings.preset_named("main"))
    if model is None:
        fail(f"--db {args.db}: no in-context benchmarks to train kernel on")
    both = match_kernels(profiled, model)
    refs = sorted(set(both["network"]))
    big = both[both["measured_ms"] >= THRESHOLD_MS]
    fam = (
        big.groupby("family")
        .agg(kernels=("ape", "size"), mape=("ape", "mean"), ms=("measured_ms", "sum"))
        .sort_values("ms", ascending=False)
    )
    share = float(big["measured_ms"].sum() / both["measured_ms"].sum())
    load = bench_common.machine()["load_average"]
    lines = [
        f"# Per-kernel accuracy of `kernel` on the zoo ({device})",
        "",
        f"Command: `python benchmarks/kernel_per_kernel.py --db {args.db}"
        + (f" --tag {args.tag}" if args.tag else "")
        + "`; "
        f"`kernel` trained as "
        f"`latlab compare` trains it (in {model.fit_seconds_:.0f} s); {len(refs)} zoo networks, "
        f"{len(both)} kernels matched to their profiled times, {len(big)} of them >= "
        f"{THRESHOLD_MS} ms ({100 * share:.0f} % of the profiled time). Load average now "
        f"{load[0]:.1f} (the store's timings were taken by the run that wrote it).",
        "",
        "| kernels | n | MAPE % | median APE % | within ±10 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, part in ((f">= {THRESHOLD_MS} ms", big), ("all", both)):
        lines.append(
            f"| {label} | {len(part)} | {part['ape'].mean():.1f} | {part['ape'].median():.1f} | "
            f"{100 * (part['ape'] <= 10).mean():.0f} % |"
        )
    lines += ["", "Per family (kernels >= 0.1 ms, by profiled time):", ""]
    lines += ["| family | kernels | MAPE % | profiled ms |", "|---|---:|---:|---:|"]
    for family, r in fam.head(15).iterrows():
        lines.append(f"| {family} | {int(r.kernels)} | {r.mape:.1f} | {r.ms:.1f} |")
    doc = {
        "db": args.db,
        "device": device,
        "networks": len(refs),
        "kernels_matched": len(both),
        "kernels_ge_0.1ms": len(big),
        "per_kernel_mape_ge_0.1ms": float(big["ape"].mean()),
        "per_kernel_mape_all": float(both["ape"].mean()),
        "families": {
            str(k): {"kernels": int(v.kernels), "mape": float(v.mape)} for k, v in fam.iterrows()
        },
        "load_average": list(load),
    }
    write_result("kernel_per_kernel" + (f"_{args.tag}" if args.tag else ""), doc, lines)


if __name__ == "__main__":
    main()
