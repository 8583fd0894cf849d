"""Few-shot transfer through the training pipeline: ``latlab train --predictor transfer
--pretrain TABLE --train-size K`` for every nb201 device as the new device.

Leave-one-device-out, as a user would run it: the target column's k measured networks (a
seeded draw) are the training split, the device split removes the target column from the
pre-training table (``target_exclude``), and the Spearman ρ (and MAPE) are measured on all of the
target's other valid networks. Target (the issue): mean ρ >= 0.95 at k = 10 and >= 0.97 at
k = 50 over the 13 devices.

    python benchmarks/transfer_nb201.py --quick     # 3 devices, k = 10 and 50, one seed
    python benchmarks/transfer_nb201.py             # 13 devices, k = 10, 20, 50, three seeds

Writes ``benchmarks/results/transfer_nb201[_quick].{json,md}``.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "nb201_latency.csv"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--ks", default=None, help="comma-separated shots (default 10,20,50)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per device and k")
    ap.add_argument("--devices", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from latlab.training.data import load_source
    from latlab.training.pipeline import TrainConfig, train

    if not args.table.exists():
        sys.exit(f"table not found: {args.table} (give --table)")
    source = load_source(args.table)
    devices = (
        args.devices.split(",")
        if args.devices
        else (["titanx_32", "gold_6240", "pixel3"] if args.quick else source.devices)
    )
    ks = [int(k) for k in (args.ks or ("10,50" if args.quick else "10,20,50")).split(",")]
    seeds = args.seeds or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="latlab-transfer-"))
    rows = []
    for k in ks:
        for device in devices:
            for seed in range(seeds):
                config = TrainConfig(
                    predictor="transfer",
                    train_size=k,
                    val_size=0,
                    conformal=None,
                    seed=seed,
                    pretrain=str(args.table),
                )
                t0 = time.perf_counter()
                result = train(source, device, config, tmp / f"{device}-{k}-{seed}")
                test = result.metrics["test"]
                rows.append(
                    {
                        "k": k,
                        "device": device,
                        "seed": seed,
                        "n_test": int(test["n"]),
                        "spearman": test["spearman"],
                        "mape": test["mape"],
                        "acc10": test["acc10"],
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                print(
                    f"k={k:>3} {device:>16} seed {seed}: rho {test['spearman']:.4f}  "
                    f"MAPE {test['mape']:6.2f} %  ({rows[-1]['seconds']} s)",
                    flush=True,
                )
    summary = {
        k: {
            "mean_spearman": float(np.mean([r["spearman"] for r in rows if r["k"] == k])),
            "min_spearman": float(np.min([r["spearman"] for r in rows if r["k"] == k])),
            "mean_mape": float(np.mean([r["mape"] for r in rows if r["k"] == k])),
        }
        for k in ks
    }
    for k, s in summary.items():
        print(f"k={k}: mean rho {s['mean_spearman']:.4f} (min {s['min_spearman']:.4f})")
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"transfer_nb201{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "table": str(args.table),
        "devices": devices,
        "ks": ks,
        "seeds": seeds,
        "summary": summary,
        "results": rows,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def markdown(doc: dict) -> str:
    ks = doc["ks"]
    lines = [
        f"Few-shot transfer on nb201 through `latlab train --predictor transfer` "
        f"(leave-one-device-out, {doc['seeds']} seed(s)); Spearman ρ on the target's other "
        "networks.",
        "",
        "| device | " + " | ".join(f"ρ k={k}" for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for device in doc["devices"]:
        cells = []
        for k in ks:
            vals = [r["spearman"] for r in doc["results"] if r["k"] == k and r["device"] == device]
            cells.append(f"{np.mean(vals):.4f}")
        lines.append(f"| {device} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean** | "
        + " | ".join(f"**{doc['summary'][k]['mean_spearman']:.4f}**" for k in ks)
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
