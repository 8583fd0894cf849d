"""How often latency-constrained NAS returns networks that truly violate the budget: point
predictions vs conformal upper bounds, on the measured NAS-Bench-201 table.

For each device: a LightGBM bundle (BRP-NAS sizes: 900 train, 100 validation; 500
calibration networks, split conformal); budgets at the 10th, 25th and 50th percentiles of the
device's measured latencies; for each budget and seed, ``latlab.experiments.nas.search`` (the
``latlab nas`` search) twice -- keeping candidates whose *point prediction* is within budget,
and whose *upper bound at confidence Q* is -- and the returned top-10 networks are looked up in
the table. A violation is a returned network whose measured latency exceeds the budget.

A two-sided interval at Q leaves about (1 - Q) / 2 of the networks above its upper bound, so
with the bound the violation rate should be about (1 - Q) / 2 and at most about 1 - Q; with
point predictions the search pushes networks to the budget's edge, where about half are slower
than predicted. The price of safety is reported as the objective (MACs) given up.

    python benchmarks/nas_violations.py --quick     # 1 device, 2 budgets, 3 seeds, 500 cycles
    python benchmarks/nas_violations.py             # 2 devices, 3 budgets, 5 seeds, 1500 cycles

Writes ``benchmarks/results/nas_violations[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import TABLE, write_result


def main() -> None:
    import latlab
    from latlab.experiments.nas import search
    from latlab.training.pipeline import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--devices", default=None, help="comma-separated columns")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--cycles", type=int, default=None)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    if not args.table.exists():
        sys.exit(f"the nb201 table is needed: {args.table} not found (--table)")
    devices = (
        args.devices.split(",")
        if args.devices
        else (["titanx_32"] if args.quick else ["titanx_32", "gold_6240"])
    )
    percentiles = (10, 25) if args.quick else (10, 25, 50)
    seeds = range(args.seeds or (3 if args.quick else 5))
    cycles = args.cycles or (500 if args.quick else 1500)
    q = args.confidence
    table = pd.read_csv(args.table)
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="nas-violations-") as tmp:
        for device in devices:
            measured = dict(zip(table["network"], table[device], strict=True))
            config = TrainConfig("gbm", train_size=900, val_size=100, cal_size=500, confidence=q)
            out = train(args.table, device, config, Path(tmp) / device).out
            bundle = latlab.load_bundle(out)
            valid = table[device][table[device] > 0.05]
            for pct in percentiles:
                budget = float(np.percentile(valid, pct))
                for seed in seeds:
                    for mode, conf in (("point", None), ("upper", q)):
                        res = search(
                            bundle, budget, confidence=conf, cycles=cycles, top=args.top, seed=seed
                        )
                        true = np.array([measured[c.network] for c in res.best])
                        runs.append(
                            {
                                "device": device,
                                "percentile": pct,
                                "budget_ms": budget,
                                "seed": seed,
                                "mode": mode,
                                "returned": len(res.best),
                                "violations": int((true > budget).sum()),
                                "top1_violates": bool(len(true) and true[0] > budget),
                                "top1_macs": res.best[0].objective if res.best else None,
                                "mean_measured_ms": float(true.mean()) if len(true) else None,
                            }
                        )
                print(f"{device} p{pct} budget {budget:.3f} ms done", file=sys.stderr)
    frame = pd.DataFrame(runs)
    summary = (
        frame.groupby(["device", "percentile", "mode"])
        .agg(
            budget_ms=("budget_ms", "first"),
            returned=("returned", "sum"),
            violations=("violations", "sum"),
            top1_violation_rate=("top1_violates", "mean"),
            top1_macs=("top1_macs", "mean"),
        )
        .reset_index()
    )
    summary["violation_rate"] = summary["violations"] / summary["returned"].clip(lower=1)
    overall = frame.groupby("mode")[["violations", "returned"]].sum()
    overall_rate = (overall["violations"] / overall["returned"]).to_dict()
    doc = {
        "confidence": q,
        "cycles": cycles,
        "seeds": len(seeds),
        "top": args.top,
        "wall_s": time.perf_counter() - t0,
        "overall_violation_rate": overall_rate,
        "summary": summary.to_dict(orient="records"),
        "runs": runs,
        "quick": args.quick,
    }
    lines = [
        f"# Latency-constrained NAS: budget violations, point vs {100 * q:g} % upper bound",
        "",
        f"`python benchmarks/nas_violations.py{' --quick' if args.quick else ''}`: LightGBM "
        f"bundles (900 train / 100 val / 500 cal, split conformal), regularized evolution "
        f"({cycles} children, population 64, tournament 8) maximising MACs, {len(seeds)} seeds "
        f"per budget, top {args.top} networks per run looked up in the measured table. "
        "Measured latencies are the table's, so these figures do not depend on this machine.",
        "",
        "| device | budget (percentile) | mode | violation rate | top-1 violation rate "
        "| mean top-1 MMACs |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in summary.to_dict(orient="records"):
        lines.append(
            f"| {r['device']} | {r['budget_ms']:.3f} ms (p{r['percentile']}) | {r['mode']} | "
            f"{100 * r['violation_rate']:.1f} % | {100 * r['top1_violation_rate']:.0f} % | "
            f"{r['top1_macs'] / 1e6:.1f} |"
        )
    lines += [
        "",
        "Overall: "
        + ", ".join(f"{m} {100 * v:.1f} %" for m, v in sorted(overall_rate.items()))
        + f" of returned networks over budget (target for the bound: about 1 - Q = "
        f"{100 * (1 - q):g} % or less).",
    ]
    write_result("nas_violations_quick" if args.quick else "nas_violations", doc, lines)


if __name__ == "__main__":
    main()
