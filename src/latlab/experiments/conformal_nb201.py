"""Coverage and width of conformal intervals on held-out NAS-Bench-201 networks.

    python -m latlab.experiments.conformal_nb201 --data ../shared/data/nb201_latency.csv
        [--quick] [--out DIR]

For every device column of the table, every seed and every point predictor available in this
build (``flops``, ``gbm``, ``rf``, ``fcnn``, ``gcn``): the valid networks are split at random
into training (the base predictor is fitted on it), calibration and test sets, disjoint. Each
conformal method (``split``, ``cm-tv``, ``cm-lv``, ``cm-o``) wraps the same fitted base,
calibrates on the calibration set (its difficulty model on the training set) and is scored on
the held-out test networks: empirical coverage (% of measured latencies inside the interval)
and mean relative width (mean of (high - low) / measured, %) at 90 % confidence, plus 80 % and
95 % in ``metrics.json``. The target: coverage at 90 % between 87 % and 95 % for every
predictor and device; at equal coverage, a smaller width is better.

Writes ``report.md``, ``metrics.json`` and ``runs.jsonl`` (one line per base predictor, device
and seed: an interrupted run resumes where it stopped; ``--fresh`` starts over).
``--quick``: one seed, 500 training / 500 calibration / 2000 test networks, the fast
predictors (flops, gbm, rf) -- a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latlab.datasets.tables import load_table
from latlab.errors import LatlabError
from latlab.predictors import PREDICTORS, make_predictor
from latlab.predictors.conformal import coverage_report, make_conformal
from latlab.training.metrics import regression_metrics

log = logging.getLogger("latlab.experiments.conformal_nb201")

PREDICTORS_WANTED: tuple[str, ...] = ("flops", "gbm", "rf", "fcnn", "gcn")
QUICK_PREDICTORS: tuple[str, ...] = ("flops", "gbm", "rf")
METHODS: tuple[str, ...] = ("split", "cm-tv", "cm-lv", "cm-o")
CONFIDENCES: tuple[float, ...] = (0.8, 0.9, 0.95)
MAIN_CONFIDENCE = 0.9
TARGET_BAND = (87.0, 95.0)


@dataclass(frozen=True)
class Settings:
    seeds: int
    n_train: int
    n_cal: int
    n_test: int | None  # None: every remaining network
    predictors: tuple[str, ...]


def settings(quick: bool) -> Settings:
    wanted = QUICK_PREDICTORS if quick else PREDICTORS_WANTED
    available = tuple(p for p in wanted if p in PREDICTORS)
    if quick:
        return Settings(1, 500, 500, 2000, available)
    return Settings(3, 1000, 2000, None, available)


def split_indices(n: int, s: Settings, seed: int, device_index: int) -> tuple[np.ndarray, ...]:
    """Disjoint train / calibration / test indices (seeded per device)."""
    need = s.n_train + s.n_cal + 1
    if n < need:
        raise ValueError(f"only {n} valid networks, need at least {need}")
    perm = np.random.default_rng([seed, device_index]).permutation(n)
    tr = perm[: s.n_train]
    ca = perm[s.n_train : s.n_train + s.n_cal]
    rest = perm[s.n_train + s.n_cal :]
    te = rest if s.n_test is None else rest[: s.n_test]
    return np.sort(tr), np.sort(ca), np.sort(te)


def predictor_params(name: str, seed: int, threads: int) -> dict[str, Any]:
    """Seed and thread count for a registered predictor, where it takes them.

    One thread by default: on a machine shared with other jobs, LightGBM's and torch's thread
    pools oversubscribe the cores (a 10-row LightGBM fit took 29 s with two threads under load,
    0.2 s with one).
    """
    params = make_predictor(name).get_params()
    out: dict[str, Any] = {}
    if "random_state" in params:
        out["random_state"] = seed
    for key in ("n_jobs", "num_threads"):
        if key in params:
            out[key] = threads
    return out


def run(
    data: Path,
    out: Path,
    *,
    quick: bool = False,
    devices: list[str] | None = None,
    predictors: list[str] | None = None,
    seeds: int | None = None,
    threads: int = 1,
    fresh: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Run the evaluation; returns the metrics written to ``out/metrics.json``."""
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    s = settings(quick)
    if predictors:
        missing = [p for p in predictors if p not in PREDICTORS]
        if missing:
            raise SystemExit(f"predictor {missing[0]!r} is not in this build")
        s = Settings(s.seeds, s.n_train, s.n_cal, s.n_test, tuple(predictors))
    if seeds is not None:
        if seeds < 1:
            raise SystemExit(f"--seeds must be at least 1, got {seeds}")
        s = Settings(seeds, s.n_train, s.n_cal, s.n_test, s.predictors)
    table = load_table(data)
    cols = devices or table.devices
    runs_path = out / "runs.jsonl"
    if fresh:
        runs_path.unlink(missing_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row
        log.info("resuming: %d runs already in %s", len(done), runs_path)
    total = len(cols) * s.seeds * len(s.predictors)
    count = 0
    with runs_path.open("a") as sink:
        for di, dev in enumerate(cols):
            valid = table.valid(dev)
            nets = list(valid["network"])
            y = valid["latency_ms"].to_numpy(dtype=float)
            for seed in range(s.seeds):
                tr, ca, te = split_indices(len(nets), s, seed, di)
                for name in s.predictors:
                    count += 1
                    key = f"{dev}|{seed}|{name}"
                    if key in done:
                        continue
                    t0 = time.monotonic()
                    row = _one(name, nets, y, tr, ca, te, seed, threads)
                    row.update(key=key, device=dev, seed=seed, predictor=name)
                    row["seconds"] = time.monotonic() - t0
                    sink.write(json.dumps(_clean(row)) + "\n")
                    sink.flush()
                    done[key] = row
                    log.info(
                        "%d/%d %s seed %d %s: %s (%.0f s)",
                        count,
                        total,
                        dev,
                        seed,
                        name,
                        ", ".join(
                            f"{m} {row['methods'][m]['0.9']['coverage']:.1f}%"
                            for m in row.get("methods", {})
                        )
                        or row.get("error", ""),
                        row["seconds"],
                    )
    metrics = summarise(done, cols, s)
    metrics.update(
        command=command,
        data=str(data),
        settings={
            "quick": quick,
            "seeds": s.seeds,
            "n_train": s.n_train,
            "n_cal": s.n_cal,
            "n_test": s.n_test,
            "predictors": list(s.predictors),
            "methods": list(METHODS),
            "threads": threads,
        },
        seconds=time.monotonic() - start,
    )
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1))
    (out / "report.md").write_text(report(metrics))
    return metrics


def _one(
    name: str,
    nets: list[str],
    y: np.ndarray,
    tr: np.ndarray,
    ca: np.ndarray,
    te: np.ndarray,
    seed: int,
    threads: int = 1,
) -> dict[str, Any]:
    pick = lambda idx: [nets[i] for i in idx]  # noqa: E731
    try:
        base = make_predictor(name, **predictor_params(name, seed, threads)).fit(pick(tr), y[tr])
        point = base.predict(pick(te))
        row: dict[str, Any] = {"point": regression_metrics(y[te], point), "methods": {}}
        for method in METHODS:
            cp = make_conformal(method, base).calibrate(
                pick(ca), y[ca], train_networks=pick(tr), train_latencies_ms=y[tr]
            )
            row["methods"][method] = {
                str(c): coverage_report(cp, pick(te), y[te], c, point_ms=point) for c in CONFIDENCES
            }
            row["methods"][method]["warnings"] = list(cp.warnings)
        return row
    except LatlabError as exc:
        log.warning("%s failed: %s", name, exc)
        return {"error": str(exc)}


def summarise(done: dict[str, dict[str, Any]], cols: list[str], s: Settings) -> dict[str, Any]:
    """Mean coverage and width over seeds per predictor, device, method and confidence."""
    table: dict[str, Any] = {}
    worst: dict[str, Any] = {}
    for name in s.predictors:
        table[name] = {}
        for dev in cols:
            rows = [done.get(f"{dev}|{seed}|{name}", {}) for seed in range(s.seeds)]
            rows = [r for r in rows if "methods" in r]
            if not rows:
                continue
            entry: dict[str, Any] = {
                "runs": len(rows),
                "point_mape": float(np.mean([r["point"]["mape"] for r in rows])),
                "point_spearman": float(np.mean([r["point"]["spearman"] for r in rows])),
            }
            for method in METHODS:
                entry[method] = {}
                for c in CONFIDENCES:
                    cov = [r["methods"][method][str(c)]["coverage"] for r in rows]
                    wid = [r["methods"][method][str(c)]["mean_relative_width"] for r in rows]
                    entry[method][str(c)] = {
                        "coverage": float(np.mean(cov)),
                        "coverage_min": float(np.min(cov)),
                        "coverage_max": float(np.max(cov)),
                        "mean_relative_width": float(np.mean(wid)),
                    }
            table[name][dev] = entry
    lo, hi = TARGET_BAND
    key = str(MAIN_CONFIDENCE)
    for method in METHODS:
        covs = [
            (e[method][key]["coverage_min"], e[method][key]["coverage_max"], n, d)
            for n, per in table.items()
            for d, e in per.items()
        ]
        if covs:
            worst[method] = {
                "min_coverage": min(x[0] for x in covs),
                "max_coverage": max(x[1] for x in covs),
                "in_band": all(lo <= x[0] and x[1] <= hi for x in covs),
                "mean_width": float(
                    np.mean(
                        [
                            e[method][key]["mean_relative_width"]
                            for per in table.values()
                            for e in per.values()
                        ]
                    )
                ),
            }
    return {"results": table, "summary": worst, "target_band": list(TARGET_BAND)}


def report(m: dict[str, Any]) -> str:
    s = m["settings"]
    c = str(MAIN_CONFIDENCE)
    res = m["results"]
    devices = sorted({d for per in res.values() for d in per}, key=str)
    lines = [
        "# Conformal intervals on held-out NAS-Bench-201 networks",
        "",
        f"Command: `{m['command']}`  ",
        f"Data: `{m['data']}`; per device and seed: {s['n_train']} training, {s['n_cal']} "
        f"calibration, {s['n_test'] or 'all remaining'} test networks (disjoint, random); "
        f"{s['seeds']} seed(s); {m['seconds']:.0f} s.",
        "",
        f"Coverage (%) and mean relative width (%) at {MAIN_CONFIDENCE:.0%} confidence, mean "
        f"over seeds. Target: coverage in [{TARGET_BAND[0]:g}, {TARGET_BAND[1]:g}] % for every "
        "predictor and device (each seed's value counts); smaller width is better.",
        "",
        "## Summary over predictors and devices",
        "",
    ]
    rows = []
    for method, w in m["summary"].items():
        rows.append(
            [
                method,
                f"{w['min_coverage']:.1f}",
                f"{w['max_coverage']:.1f}",
                "yes" if w["in_band"] else "**no**",
                f"{w['mean_width']:.1f}",
            ]
        )
    lines += _md(["method", "min coverage", "max coverage", "all in band", "mean width"], rows)
    for name, per in res.items():
        lines += ["", f"## {name}", ""]
        header = ["device", "point MAPE"] + [f"{meth} cov / width" for meth in METHODS]
        rows = []
        for dev in devices:
            if dev not in per:
                continue
            e = per[dev]
            rows.append(
                [dev, f"{e['point_mape']:.2f}"]
                + [
                    f"{e[meth][c]['coverage']:.1f} / {e[meth][c]['mean_relative_width']:.1f}"
                    for meth in METHODS
                ]
            )
        lines += _md(header, rows)
    lines.append("")
    return "\n".join(lines)


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, float | np.floating):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m latlab.experiments.conformal_nb201",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="nb201 latency table (CSV/Parquet)")
    p.add_argument("--quick", action="store_true", help="one seed, small splits, fast predictors")
    p.add_argument(
        "--out", type=Path, default=Path("results/conformal_nb201"), help="output folder"
    )
    p.add_argument("--devices", default=None, help="comma-separated columns (default: all)")
    p.add_argument("--predictors", default=None, help="comma-separated predictors")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 quick)")
    p.add_argument("--threads", type=int, default=1, help="threads per predictor (default 1)")
    p.add_argument("--fresh", action="store_true", help="ignore runs.jsonl (no resume)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    command = "python -m latlab.experiments.conformal_nb201 " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    try:
        metrics = run(
            args.data,
            args.out,
            quick=args.quick,
            devices=args.devices.split(",") if args.devices else None,
            predictors=args.predictors.split(",") if args.predictors else None,
            seeds=args.seeds,
            threads=args.threads,
            fresh=args.fresh,
            command=command.strip(),
        )
    except LatlabError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    log.info("wrote %s (%.0f s)", args.out / "report.md", metrics["seconds"])


if __name__ == "__main__":
    main()
