"""Choose predictor defaults on VALIDATION data of the BRP-NAS protocol (never on test data).

Runs variants of the predictors through :mod:`latlab.experiments.brpnas` (same splits, same
resumable run log) and prints, per variant, the validation metrics averaged over the chosen
devices and seeds: mean validation MAPE, ±5/±10 % accuracy and Spearman ρ. Test metrics are
recorded by the runs but not shown here.

    python benchmarks/tune_brpnas.py --data ../shared/data/nb201_latency.csv \\
        --family gbm --devices 1080ti_1,silver_4210r --seeds 2 [--threads 1]
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

from latlab.experiments.brpnas import BrpnasConfig, run

#: Candidate settings per predictor family (name -> registry, params).
GRID: dict[str, dict[str, tuple[str, dict]]] = {
    "gbm": {
        "gbm": ("gbm", {}),
        "gbm-summary": ("gbm", {"features": "summary"}),
        "gbm-l31": ("gbm", {"num_leaves": 31, "min_child_samples": 10}),
        "gbm-l7": ("gbm", {"num_leaves": 7}),
        "gbm-lr01": ("gbm", {"learning_rate": 0.01, "n_estimators": 8000}),
    },
    "rf": {
        "rf": ("rf", {}),
        "rf-mf03": ("rf", {"max_features": 0.3}),
        "rf-mf08": ("rf", {"max_features": 0.8}),
        "rf-onehot": ("rf", {"features": "nb201-onehot"}),
    },
    "fcnn": {
        "fcnn": ("fcnn", {}),
        "fcnn-128": ("fcnn", {"hidden_layers": [128, 128, 128]}),
        "fcnn-512": ("fcnn", {"hidden_layers": [512, 256, 128]}),
        "fcnn-d0": ("fcnn", {"dropout": 0.0}),
        "fcnn-d3": ("fcnn", {"dropout": 0.3}),
        "fcnn-ln": ("fcnn", {"norm": "layer"}),
        "fcnn-wd4": ("fcnn", {"weight_decay": 1e-4}),
    },
    "gcn": {
        "gcn": ("gcn", {}),
        "gcn-b16": ("gcn", {"batch_size": 16}),
        "gcn-lr1e3": ("gcn", {"learning_rate": 1e-3}),
        "gcn-gf": ("gcn", {"graph_features": True}),
        "gcn-mse": ("gcn", {"loss": "mse"}),
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--family", required=True, choices=sorted(GRID))
    ap.add_argument("--variants", default=None, help="comma-separated subset of the grid")
    ap.add_argument("--devices", default="1080ti_1,silver_4210r,pixel3")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/brpnas-tuning")
    args = ap.parse_args()
    grid = GRID[args.family]
    names = args.variants.split(",") if args.variants else list(grid)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    cfg = BrpnasConfig(
        args.data,
        args.out,
        devices=args.devices.split(","),
        seeds=args.seeds,
        predictors=names,
        variants={n: grid[n] for n in names},
        threads=args.threads,
    )
    doc = run(cfg)
    print(f"validation metrics, mean over {len(cfg.devices or [])} devices x {cfg.seeds} seeds")
    rows = {}
    for n in names:
        vals = {m: [] for m in ("mape", "acc5", "acc10", "spearman")}
        for dev in doc["results"].values():
            if n in dev:
                for m in vals:
                    vals[m].append(dev[n]["val"][m]["mean"])
        rows[n] = {m: float(np.mean(v)) for m, v in vals.items()}
        print(f"{n:14s} " + "  ".join(f"{m} {v:.4f}" for m, v in rows[n].items()))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
