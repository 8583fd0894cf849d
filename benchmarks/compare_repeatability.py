"""Does the main job repeat? ``latlab compare`` run twice from scratch, every MAPE compared.

Every accuracy figure of the README's comparison comes from one ``latlab compare`` run; a
figure is only worth quoting to the precision the whole job (benchmarks, network
measurements, training) repeats. This benchmark runs ``latlab compare`` twice, each in its own
process with its own fresh store (nothing measured is shared), optionally minutes apart, and
reports, per predictor and network set, the two network-level MAPEs and their difference in
percentage points. Target (issue 17): every predictor within 1 pp on every set.

    python benchmarks/compare_repeatability.py --quick            # two quick runs: ~8 min
    python benchmarks/compare_repeatability.py                    # two main runs: ~30 min
    python benchmarks/compare_repeatability.py --reports A B      # compare two existing runs

Each run's folder holds its ``report.md`` and ``metrics.json`` (with the load average at the
start and end of the run); the result goes to ``benchmarks/results/compare_repeatability.*``
(``compare_repeatability_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
from bench_common import machine, write_result

TARGET_PP = 1.0


def run_compare(out: Path, quick: bool) -> float:
    """One ``latlab compare`` into ``out`` (a fresh store there) in its own process; seconds."""
    cmd = [sys.executable, "-m", "latlab", "compare", "--out", str(out)] + ["--quick"] * quick
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def mapes(report: Path) -> dict[tuple[str, str], float]:
    """``(predictor, set) -> network MAPE %`` of one compare report folder."""
    metrics = json.loads((report / "metrics.json").read_text())
    out: dict[tuple[str, str], float] = {}
    for name, sets in metrics["comparison"]["models"].items():
        for label, figures in sets.items():
            if isinstance(figures, dict) and "mape" in figures:
                out[(name, label)] = float(figures["mape"])
    return out


def run_info(report: Path) -> dict[str, Any]:
    metrics = json.loads((report / "metrics.json").read_text())
    return {"folder": str(report), **metrics.get("run", {})}


def compare_reports(a: Path, b: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the two runs' MAPEs per predictor and set, and their Markdown table."""
    ma, mb = mapes(a), mapes(b)
    rows = []
    for key in sorted(set(ma) & set(mb)):
        d = abs(ma[key] - mb[key])
        rows.append({"predictor": key[0], "set": key[1], "a": ma[key], "b": mb[key], "diff_pp": d})
    lines = [
        "| predictor | set | MAPE run A % | MAPE run B % | difference (pp) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        flag = "" if r["diff_pp"] <= TARGET_PP else " **>1**"
        lines.append(
            f"| {r['predictor']} | {r['set']} | {r['a']:.1f} | {r['b']:.1f} "
            f"| {r['diff_pp']:.2f}{flag} |"
        )
    return rows, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="latlab compare --quick, twice")
    ap.add_argument("--gap-min", type=float, default=0.0, help="minutes between the runs")
    ap.add_argument("--reports", nargs=2, type=Path, metavar=("A", "B"),
                    help="compare two existing compare folders instead of running")  # fmt: skip
    ap.add_argument("--keep", type=Path, help="folder for the two runs (default: a temp dir)")
    args = ap.parse_args()
    before = machine()
    seconds: list[float] = []
    if args.reports:
        a, b = args.reports
        rows, lines = compare_reports(a, b)
        folders = [a, b]
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="latlab-repeat-"))
        folders = [root / "run-a", root / "run-b"]
        seconds.append(run_compare(folders[0], args.quick))
        if args.gap_min > 0:
            time.sleep(60 * args.gap_min)
        seconds.append(run_compare(folders[1], args.quick))
        rows, lines = compare_reports(*folders)
    worst = max((r["diff_pp"] for r in rows), default=float("nan"))
    within = sum(r["diff_pp"] <= TARGET_PP for r in rows)
    runs = [run_info(f) for f in folders]
    loads = ", ".join(
        f"run {k}: load {r.get('load_avg_start', float('nan')):.1f} -> "
        f"{r.get('load_avg_end', float('nan')):.1f}"
        for k, r in zip("AB", runs, strict=True)
    )
    timing = f"run times {seconds[0]:.0f} s and {seconds[1]:.0f} s" if seconds else "existing runs"
    head = [
        f"# latlab compare{' --quick' if args.quick else ''}, run twice from scratch",
        "",
        f"Command: `python benchmarks/compare_repeatability.py{' --quick' * args.quick}"
        f"{f' --gap-min {args.gap_min:g}' if args.gap_min else ''}`; {loads}; "
        f"{timing}.",
        "",
        f"Network-level MAPE within {TARGET_PP:g} pp in {within} of {len(rows)} "
        f"(predictor, set) pairs; largest difference {worst:.2f} pp.",
        "",
    ]
    stem = "compare_repeatability" + ("_quick" if args.quick else "")
    doc = {
        "quick": args.quick,
        "gap_min": args.gap_min,
        "seconds": seconds,
        "machine_before": before,
        "runs": runs,
        "rows": rows,
        "within_target": within,
        "pairs": len(rows),
        "max_diff_pp": worst,
    }
    if args.reports is None:
        write_result(stem, doc, head + lines)
    print("\n".join(head + lines))


if __name__ == "__main__":
    main()
