"""How well can a device column be ranked at all? Spearman ρ with many more training networks.

A few-shot target (ρ ≥ 0.95 from 10 networks) is only reachable where the column's latencies
are a function of the architecture that some predictor can learn. Two things cap it, and this
script measures both per column of a table:

* **ties** -- the phone columns are whole milliseconds: the ρ of a perfect tie-free prediction
  against the tied measurements (ties broken at random) is below 1;
* **what the architecture explains** -- ρ on a fixed held-out set of ``--test`` networks of
  each predictor trained on ``--sizes`` networks (900, the BRP-NAS budget, and 4,000). Where ρ
  stops rising from 900 to 4,000 networks, the rest of the variance is what the table's
  measurements do not share with the architecture (timing noise, drift between measurement
  sessions), and no predictor -- few-shot or not -- ranks that column much better. It is an
  empirical ceiling, not a bound: a better predictor may exceed it a little.

    python benchmarks/rank_ceiling.py --data ../shared/data/ofa_latency.csv \
        --out reports/rank-ceiling-ofa

Writes ``results.json`` after every column (a rerun skips the columns already there) and
``report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

try:
    import latlab  # noqa: F401
except ImportError:  # a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
from scipy.stats import spearmanr

from latlab.datasets.tables import load_table
from latlab.errors import DataError
from latlab.fileio import atomic_write_text
from latlab.predictors.base import make_predictor


def tie_ceiling(y: np.ndarray, seed: int) -> float:
    """ρ of a perfect prediction with no ties against ``y`` (its ties broken at random)."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(y)), y))
    ranks = np.empty(len(y))
    ranks[order] = np.arange(len(y))
    return float(spearmanr(ranks, y).statistic)


def column_ceiling(
    refs: list[str], y: np.ndarray, sizes: list[int], predictors: list[str], n_test: int, seed: int
) -> dict[str, Any]:
    """Test ρ per predictor and training size, on one held-out set of the column."""
    perm = np.random.default_rng(seed).permutation(len(y))
    test, pool = perm[:n_test], perm[n_test:]
    rho: dict[str, dict[str, float]] = {}
    for name in predictors:
        rho[name] = {}
        for n in sizes:
            train = pool[:n]
            model = make_predictor(name).fit([refs[i] for i in train], y[train])
            pred = model.predict([refs[i] for i in test])
            rho[name][str(n)] = float(spearmanr(pred, y[test]).statistic)
    largest = str(max(sizes))
    best = max(predictors, key=lambda p: rho[p][largest])
    return {
        "networks": len(y),
        "distinct_values": len(np.unique(y)),
        "tie_ceiling": tie_ceiling(y, seed),
        "rho": rho,
        "best": {"predictor": best, "rho": rho[best][largest]},
    }


def report(doc: dict[str, Any], command: str) -> str:
    sizes, preds = doc["sizes"], doc["predictors"]
    head = " | ".join(f"{p} n={n}" for p in preds for n in sizes)
    lines = [
        f"# How well each column of {Path(doc['data']).name} can be ranked",
        "",
        f"Test set: {doc['test']} random valid networks per column (seed {doc['seed']}), the "
        f"same for every predictor and size; training networks drawn from the rest. "
        f"{doc['seconds']:.0f} s.",
        "",
        f"| device | distinct values | tie ceiling | {head} | best at {max(sizes)} |",
        "|---" * (4 + len(sizes) * len(preds)) + "|",
    ]
    for col, r in doc["columns"].items():
        cells = " | ".join(f"{r['rho'][p][str(n)]:.3f}" for p in preds for n in sizes)
        lines.append(
            f"| {col} | {r['distinct_values']} / {r['networks']} | {r['tie_ceiling']:.4f} | "
            f"{cells} | {r['best']['rho']:.3f} ({r['best']['predictor']}) |"
        )
    best = [r["best"]["rho"] for r in doc["columns"].values()]
    lines += [
        "",
        f"Mean over columns of the best ρ at {max(sizes)} training networks: "
        f"**{np.mean(best):.3f}** (min {min(best):.3f}). A few-shot predictor given k = 10 of "
        "a device's networks passes this mean only by ranking the columns better than these "
        f"predictors do with {max(sizes) // 10}× as many.",
        "",
        "## How to repeat",
        "",
        f"`{command}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", required=True, help="latency table (CSV/Parquet)")
    ap.add_argument("--out", required=True, help="report folder (resumes its results.json)")
    ap.add_argument("--sizes", default="900,4000", help="comma-separated training sizes")
    ap.add_argument("--predictors", default="gbm,layer-sum", help="comma-separated predictors")
    ap.add_argument("--test", type=int, default=1000, help="held-out networks per column")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--columns", default="", help="comma-separated columns (default: all)")
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        ap.error(f"--data {args.data}: no such file")
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: not comma-separated integers")
    if not sizes or sizes[0] < 10:
        ap.error(f"--sizes {args.sizes!r}: every size must be at least 10")
    predictors = [p.strip() for p in args.predictors.split(",") if p.strip()]
    for p in predictors:
        try:
            make_predictor(p)
        except DataError as exc:  # the registry's own message names the known predictors
            ap.error(f"--predictors: {exc}")
    table = load_table(args.data)
    frame = table.data
    columns = [c for c in args.columns.split(",") if c.strip()] or [
        c for c in frame.columns if c != "network"
    ]
    for c in columns:
        if c not in frame.columns or c == "network":
            ap.error(f"--columns: {c!r} is not a device column of {args.data}")
        n_valid = int(frame[c].notna().sum())
        if n_valid < args.test + sizes[-1]:
            ap.error(
                f"column {c!r} has {n_valid} valid networks; --test {args.test} plus the largest "
                f"size {sizes[-1]} needs {args.test + sizes[-1]}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    settings = {"data": str(args.data), "sizes": sizes, "predictors": predictors,
                "test": args.test, "seed": args.seed}  # fmt: skip
    doc: dict[str, Any] = {**settings, "columns": {}, "seconds": 0.0}
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in settings} == settings:
            doc = old  # resume: same settings, keep the columns already done
    for c in columns:
        if c in doc["columns"]:
            continue
        t0 = time.perf_counter()
        valid = frame[c].notna().to_numpy()
        refs = [str(r) for r in frame["network"][valid]]
        y = frame[c][valid].to_numpy(dtype=np.float64)
        doc["columns"][c] = column_ceiling(refs, y, sizes, predictors, args.test, args.seed)
        doc["seconds"] += time.perf_counter() - t0
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
        best = doc["columns"][c]["best"]
        print(f"{c}: best rho {best['rho']:.3f} ({best['predictor']}) "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)  # fmt: skip
    command = " ".join(["python", "benchmarks/rank_ceiling.py", *sys.argv[1:]])
    atomic_write_text(out / "report.md", report(doc, command))
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
