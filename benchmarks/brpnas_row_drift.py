"""Where the BRP-NAS protocol's errors sit in the nb201 table: by row decile, per device.

Fits LightGBM (latlab defaults) on the seed-0 split of the BRP-NAS protocol (900 training, 100
validation networks) for every device column and reports, for each tenth of the table's rows
(in file order), the share of test networks predicted outside ±10 % and the median signed
relative error. Architectures are not ordered by anything latency-related in the file, so a
decile whose networks are all measured ~20 % slower than the model predicts points to the
measurement (a slower period of the device while those rows were measured), not the model:
no predictor of the architecture alone can follow it, which caps the ±10 % accuracy.

    python benchmarks/brpnas_row_drift.py --data ../shared/data/nb201_latency.csv [--devices ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import latlab  # noqa: F401
except ImportError:  # a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--devices", default=None, help="comma-separated (default: all columns)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    from latlab.datasets.references import resolve
    from latlab.datasets.tables import load_table
    from latlab.experiments.brpnas import split
    from latlab.predictors import make_predictor

    table = load_table(args.data).data
    devices = args.devices.split(",") if args.devices else [c for c in table if c != "network"]
    graphs = {r: resolve(r) for r in table["network"]}
    out = {}
    header = "| device | acc10 | " + " | ".join(f"d{i}" for i in range(10)) + " |"
    print("share of test networks outside ±10 % (%), by tenth of the table rows")
    print(header)
    print("|" + "---|" * 12)
    for dev in devices:
        rows = table[["network", dev]].dropna()
        position = rows.index.to_numpy()  # row in the file (invalid rows dropped)
        y = rows[dev].to_numpy(float)
        g = [graphs[r] for r in rows["network"]]
        tr, va, te = split(len(y), 0, 900, 100)
        model = make_predictor("gbm", n_jobs=args.threads, random_state=0)
        model.fit([g[i] for i in tr], y[tr], eval_set=([g[i] for i in va], y[va]))
        err = (model.predict([g[i] for i in te]) - y[te]) / y[te]
        decile = np.minimum(10 * position[te] // len(table), 9)
        miss = [float(100 * np.mean(np.abs(err[decile == d]) > 0.1)) for d in range(10)]
        med = [float(100 * np.median(err[decile == d])) for d in range(10)]
        acc = float(100 * np.mean(np.abs(err) <= 0.1))
        out[dev] = {"acc10": acc, "miss_by_decile": miss, "median_err_by_decile": med}
        print(f"| {dev} | {acc:.1f} | " + " | ".join(f"{m:.1f}" for m in miss) + " |", flush=True)
    print("\nmedian signed relative error (%), by tenth of the table rows")
    print(header.replace("acc10", "acc10"))
    print("|" + "---|" * 12)
    for dev, r in out.items():
        meds = " | ".join(f"{m:+.1f}" for m in r["median_err_by_decile"])
        print(f"| {dev} | {r['acc10']:.1f} | {meds} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
