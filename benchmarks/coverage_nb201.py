"""Network-level coverage of conformal intervals on the NAS-Bench-201 table, per predictor and
device, through the training pipeline (``latlab train`` then scoring on held-out networks).

For every device column and predictor: BRP-NAS split sizes (900 train, 100 validation), a
calibration split (``--cal-size``, default 500), and the rest as held-out test networks; the
predictor is fitted, wrapped with ``--conformal`` (default ``split``) at 90 % confidence,
calibrated, and its intervals scored on the test networks. Target: coverage between 87 % and
95 % everywhere; the mean relative width (smaller is better at equal coverage) is reported.

    python benchmarks/coverage_nb201.py --quick           # 3 devices, flops + gbm, 3000 rows
    python benchmarks/coverage_nb201.py                   # 13 devices x 5 predictors
    python benchmarks/coverage_nb201.py --predictors gbm,rf --conformal cm-tv

Writes ``benchmarks/results/coverage_nb201[_quick].{json,md}``. Needs the shared table
(``../shared/data/nb201_latency.csv``, or ``--table``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

try:
    import latlab  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "nb201_latency.csv"
RESULTS = ROOT / "benchmarks" / "results"

#: Per-predictor parameters of the full run (library defaults otherwise); one thread each so
#: that timings are comparable on a shared machine.
PARAMS: dict[str, dict] = {
    "gbm": {"n_jobs": 1},
    "rf": {"n_jobs": 1},
    "fcnn": {"num_threads": 1},
    "gcn": {"num_threads": 1},
}
QUICK_PARAMS: dict[str, dict] = {
    "gbm": {"n_jobs": 1, "n_estimators": 400},
    "rf": {"n_jobs": 1, "n_estimators": 100},
    "fcnn": {"num_threads": 1, "max_epochs": 60},
    "gcn": {"num_threads": 1, "max_epochs": 30, "hidden": 128},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 devices, flops + gbm, 3000 rows")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--predictors", default=None, help="comma-separated (default: all five)")
    ap.add_argument("--devices", default=None, help="comma-separated columns (default: all)")
    ap.add_argument("--conformal", default="split")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--cal-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: results/)")
    args = ap.parse_args()

    import pandas as pd

    from latlab.training.data import load_source
    from latlab.training.pipeline import TrainConfig, train

    if not args.table.exists():
        sys.exit(f"table not found: {args.table} (give --table)")
    table_path = args.table
    tmp = Path(tempfile.mkdtemp(prefix="latlab-coverage-"))
    if args.quick:
        frame = pd.read_csv(args.table).sample(3000, random_state=args.seed)
        table_path = tmp / "nb201_quick.csv"
        frame.to_csv(table_path, index=False)
    source = load_source(table_path)
    devices = (
        args.devices.split(",")
        if args.devices
        else (["titanx_32", "gold_6240", "pixel3"] if args.quick else source.devices)
    )
    predictors = (
        args.predictors.split(",")
        if args.predictors
        else (["flops", "gbm"] if args.quick else ["flops", "gbm", "rf", "fcnn", "gcn"])
    )
    params = QUICK_PARAMS if args.quick else PARAMS
    rows = []
    for predictor in predictors:
        for device in devices:
            config = TrainConfig(
                predictor=predictor,
                params=dict(params.get(predictor, {})),
                train_size=900,
                val_size=100,
                cal_size=args.cal_size,
                seed=args.seed,
                conformal=args.conformal,
                confidence=args.confidence,
            )
            t0 = time.perf_counter()
            result = train(source, device, config, tmp / f"{predictor}-{device}")
            test = result.metrics["test"]
            row = {
                "predictor": predictor,
                "device": device,
                "n_test": int(test["n"]),
                "coverage": test.get("coverage"),
                "mean_rel_width": test.get("mean_rel_width"),
                "mape": test["mape"],
                "acc10": test["acc10"],
                "spearman": test["spearman"],
                "warnings": result.warnings,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(
                f"{predictor:>6} {device:>16}  coverage {row['coverage']:6.2f} %  width "
                f"{row['mean_rel_width']:7.2f} %  MAPE {row['mape']:6.2f} %  "
                f"rho {row['spearman']:.4f}  ({row['seconds']} s)",
                flush=True,
            )
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"coverage_nb201{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "table": str(args.table),
        "rows_used": len(source.table),
        "conformal": args.conformal,
        "confidence": args.confidence,
        "split": {"train": 900, "val": 100, "cal": args.cal_size, "test": "rest"},
        "seed": args.seed,
        "results": rows,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def markdown(doc: dict) -> str:
    lines = [
        f"Conformal `{doc['conformal']}` at {100 * doc['confidence']:g} % on nb201 "
        f"(train 900, validation 100, calibration {doc['split']['cal']}, test = the rest of "
        f"{doc['rows_used']} networks); target coverage 87-95 %.",
        "",
        "| predictor | device | coverage % | mean rel. width % | MAPE % | ±10 % acc. | ρ |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        ok = "" if 87 <= (r["coverage"] or 0) <= 95 else " ✗"
        lines.append(
            f"| {r['predictor']} | {r['device']} | {r['coverage']:.1f}{ok} | "
            f"{r['mean_rel_width']:.1f} | {r['mape']:.2f} | {r['acc10']:.1f} | "
            f"{r['spearman']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
