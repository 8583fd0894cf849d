"""Where a ``latlab compare`` run's time went, and how two runs' measurements agree.

    python benchmarks/compare_phases.py --out DIR [--against DIR2]

``DIR`` is a ``latlab compare --out DIR`` folder with its store (``DIR/bench.db``). Phases:
benchmarks (the bench suites' own seconds, ``metrics.json``), networks (first start to last
finish of the zoo/nb201/generated network measurements, from the store's timestamps), zoo
profiles (first to last stored profile after the benchmarks) and the rest of the run's wall
time (training, evaluation, report). With ``--against DIR2`` (another run's folder, e.g. one
timed another way) it adds, per kind of reference measured in both stores, the median and
spread of the per-network ratio DIR / DIR2 of the corrected and of the raw medians.
Writes ``benchmarks/results/compare_phases_NAME.{md,json}`` (``NAME``: the folder's name);
reads the stores only.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
import pandas as pd
from bench_common import fail, write_result

NETWORKS = ("zoo:", "nb201:", "cnn:")


def _store(out: Path) -> sqlite3.Connection:
    db = out / "bench.db"
    if not db.is_file() or not (out / "metrics.json").is_file():
        fail(f"--out {out}: needs a latlab compare folder with bench.db and metrics.json")
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def _measurements(con: sqlite3.Connection) -> pd.DataFrame:
    frame = pd.read_sql(
        "select n.reference as network, m.started_at, m.finished_at, m.median_ms, "
        "m.corrected_ms from measurements m join networks n on n.id = m.network_id",
        con,
    )
    for col in ("started_at", "finished_at"):
        frame[col] = pd.to_datetime(frame[col])
    frame["kind"] = frame["network"].str.split(":").str[0]
    return frame


def phases(out: Path) -> dict[str, float]:
    """Seconds per phase of the run in ``out`` (see the module docstring)."""
    con = _store(out)
    metrics = json.loads((out / "metrics.json").read_text())
    bench_s = sum(float(v.get("seconds", 0.0)) for v in metrics["benchmarks"].values())
    last_bench = pd.to_datetime(
        pd.read_sql("select max(created_at) as t from layer_benchmarks", con)["t"].iloc[0]
    )
    m = _measurements(con)
    nets = m[m["network"].str.startswith(NETWORKS) & (m["started_at"] > last_bench)]
    networks_s = (nets["finished_at"].max() - nets["started_at"].min()).total_seconds()
    prof = pd.read_sql("select created_at from profiles", con)
    prof = pd.to_datetime(prof["created_at"])
    prof = prof[prof > last_bench]
    profiles_s = (prof.max() - prof.min()).total_seconds() if len(prof) else 0.0
    total = float(metrics["seconds"])
    con.close()
    return {
        "total": total,
        "benchmarks": bench_s,
        "networks": networks_s,
        "zoo profiles": profiles_s,
        "training, evaluation, report": total - bench_s - networks_s - profiles_s,
    }


def agreement(out: Path, other: Path) -> pd.DataFrame:
    """Per kind: networks in both stores, median and spread (std) of the per-network ratio of
    corrected and of raw medians, ``out`` / ``other``."""
    a, b = _measurements(_store(out)), _measurements(_store(other))
    both = a.merge(b, on=["network", "kind"], suffixes=("", "_other"))
    both["corrected"] = both["corrected_ms"] / both["corrected_ms_other"]
    both["raw"] = both["median_ms"] / both["median_ms_other"]
    return both.groupby("kind").agg(
        networks=("network", "size"),
        corrected_median=("corrected", "median"),
        corrected_spread=("corrected", "std"),
        raw_median=("raw", "median"),
        raw_spread=("raw", "std"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="a latlab compare --out folder")
    ap.add_argument("--against", type=Path, default=None, help="another run's folder")
    args = ap.parse_args()
    times = phases(args.out)
    lines = [f"# Phases of `latlab compare --out {args.out}`", "", "| phase | seconds |"]
    lines += ["|---|---:|"] + [f"| {k} | {v:.0f} |" for k, v in times.items()]
    doc: dict[str, object] = {"out": str(args.out), "phases_s": times}
    if args.against is not None:
        table = agreement(args.out, args.against)
        lines += ["", f"Per-network ratio of medians, {args.out} / {args.against}:", ""]
        lines += [
            "| kind | networks | corrected median | corrected spread | raw median | raw spread |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind, r in table.iterrows():
            lines.append(
                f"| {kind} | {int(r.networks)} | {r.corrected_median:.3f} | "
                f"{r.corrected_spread:.3f} | {r.raw_median:.3f} | {r.raw_spread:.3f} |"
            )
        doc["against"] = str(args.against)
        doc["agreement"] = table.reset_index().to_dict(orient="records")
    write_result(f"compare_phases_{args.out.name}", doc, lines)


if __name__ == "__main__":
    main()
