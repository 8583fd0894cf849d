"""The BRP-NAS protocol on every device column of a table, with a chosen set of predictors.

``latlab experiment run brp-nas`` runs all seven predictors on every column, GCN included; on
the FBNet and OFA tables the 65 + 30 GCN fits alone need hours on a 2-core VM
(``reports/brp-nas-*-quick``: 100-315 s each on a shortened schedule). This script runs the
same protocol (:mod:`latlab.experiments.brpnas`: 900 training / 100 validation networks, every
other valid network as the test set, resumable ``runs.jsonl``) on every column with the
predictors named, and writes the experiment's own ``report.md`` and ``metrics.json``:

    python benchmarks/brpnas_all_columns.py --data ../shared/data/fbnet_latency.csv \\
        --out reports/brp-nas-fbnet --seeds 1 --skip ""
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import latlab  # noqa: F401
except ImportError:  # a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from latlab.experiments.brpnas import PREDICTORS, BrpnasConfig, load_latencies, plot, report, run
from latlab.experiments.common import dump_json
from latlab.fileio import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", required=True, help="latency table (CSV/Parquet)")
    ap.add_argument("--out", required=True, help="report folder (resumes its runs.jsonl)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--skip", default="gcn", help="comma-separated predictors not to run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    unknown = sorted(skip - set(PREDICTORS))
    if unknown:
        ap.error(f"--skip names unknown predictor {unknown[0]!r} (known: {', '.join(PREDICTORS)})")
    if not Path(args.data).is_file():
        ap.error(f"--data {args.data}: no such file")
    loaded = load_latencies(args.data)
    columns = [c for c in loaded[0].columns if c != "network"]
    cfg = BrpnasConfig(
        args.data,
        args.out,
        devices=columns,
        seeds=args.seeds,
        predictors=[p for p in PREDICTORS if p not in skip],
        threads=args.threads,
    )
    doc = run(cfg, None, loaded)
    figures = plot(doc, Path(cfg.out))
    command = " ".join(["python", "benchmarks/brpnas_all_columns.py", *sys.argv[1:]])
    text = report(doc) + "\n".join(
        ["", "## Figures", "", *(f"![{f}]({f})" for f in figures), "", "## How to repeat", "",
         f"`{command}` (predictors not run: {', '.join(sorted(skip)) or 'none'})", ""]
    )  # fmt: skip
    atomic_write_text(Path(cfg.out) / "report.md", text)
    dump_json(Path(cfg.out) / "metrics.json", doc)
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
