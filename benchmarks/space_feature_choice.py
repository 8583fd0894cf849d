"""The vector features ``features="auto"`` picks on FBNet and OFA, chosen on validation data.

LightGBM (default settings, one thread) on the BRP-NAS protocol's sizes: 900 training and 100
*validation* networks of a seeded permutation of the shared table (the test networks of the
protocol are never looked at), for three encodings: the space's one-hot + counts, the same
+ the network summary, counts + summary. Prints validation MAPE and Spearman per device.

    python benchmarks/space_feature_choice.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from latlab.predictors import make_predictor

TABLES = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEVICES = {"fbnet": ["1080ti_64", "silver_4114", "pixel3"], "ofa": ["2080ti_1", "titan_xp_64"]}


def main() -> None:
    print("load average", os.getloadavg())
    for space, devices in DEVICES.items():
        df = pd.read_csv(TABLES / f"{space}_latency.csv")
        idx = np.random.default_rng(0).permutation(len(df))
        tr, va = idx[:900], idx[900:1000]
        for feats in (
            f"{space}-onehot+{space}-counts",
            f"{space}-onehot+{space}-counts+summary",
            f"{space}-counts+summary",
        ):
            for d in devices:
                t = time.time()
                m = make_predictor("gbm", features=feats, n_jobs=1)
                m.fit(list(df.network.iloc[tr]), df[d].to_numpy()[tr])
                p, y = m.predict(list(df.network.iloc[va])), df[d].to_numpy()[va]
                mape = float(np.mean(np.abs(p - y) / y) * 100)
                rho = spearmanr(p, y).statistic
                print(
                    f"{space} {feats:40s} {d:12s} val MAPE {mape:5.2f} rho {rho:.3f} "
                    f"({time.time() - t:.0f}s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
