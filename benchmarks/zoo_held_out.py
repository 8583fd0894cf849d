"""Main-job figures on the held-out zoo networks apart from the development ones.

    python benchmarks/zoo_held_out.py [--report reports/main]

Reads ``REPORT/zoo_networks.csv`` (written by ``latlab compare``) and prints, for every
predictor column, MAPE, ±10 % accuracy and Spearman's rho on the zoo networks the kernel
predictor's developer never saw before it was finished (held out) and on the 16 it was built
against (:data:`kernel_real_networks.DEVELOPMENT_ZOO`), as a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
import numpy as np
import pandas as pd
from kernel_real_networks import DEVELOPMENT_ZOO
from scipy.stats import spearmanr


def split_metrics(frame: pd.DataFrame) -> list[list[object]]:
    """Rows ``[predictor, set, networks, MAPE %, ±10 %, rho]`` for both sets."""
    held = ~frame["network"].str.removeprefix("zoo:").isin(DEVELOPMENT_ZOO)
    predictors = [c for c in frame.columns if c not in ("network", "measured_ms")]
    rows: list[list[object]] = []
    for name in predictors:
        for label, mask in (("held-out", held), ("development", ~held)):
            t = frame.loc[mask, "measured_ms"].to_numpy(dtype=float)
            p = frame.loc[mask, name].to_numpy(dtype=float)
            if len(t) < 3:
                continue
            err = np.abs(p - t) / t
            rho = float(spearmanr(t, p).statistic)
            rows.append([name, label, len(t), 100 * err.mean(), 100 * (err <= 0.1).mean(), rho])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, default=Path("reports/main"), help="compare's --out")
    args = ap.parse_args()
    frame = pd.read_csv(args.report / "zoo_networks.csv")
    print("| predictor | set | networks | MAPE % | ±10 % | Spearman ρ |")
    print("|---|---|---|---|---|---|")
    for name, label, n, mape, acc, rho in split_metrics(frame):
        print(f"| {name} | {label} | {n} | {mape:.1f} | {acc:.0f} | {rho:.3f} |")


if __name__ == "__main__":
    main()
