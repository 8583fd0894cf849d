"""``conformal``: coverage and width of CM_TV, CM_LV and CM_O (and split conformal).

    latlab experiment run conformal --data ../shared/data/nb201_latency.csv [--quick]

Two levels, as in Wess et al. (IEEE Access 2024):

* **Network level, on the nb201 table** (``--data``): for every device column, seed and point
  predictor (``flops``, ``gbm``, ``rf``, ``fcnn``, ``gcn``; registered ones only) the valid
  networks are split at random into training (the base predictor is fitted on it), calibration
  and test sets, disjoint. Each conformal method (``split``, ``cm-tv``, ``cm-lv``, ``cm-o``)
  wraps the same fitted base, calibrates on the calibration set (its difficulty model on the
  training set) and is scored on the held-out test networks: empirical coverage (% of measured
  latencies inside the interval) and mean relative width (mean of (high - low) / measured, %) at
  80, 90 and 95 % confidence. Target: coverage within ±3 % of the nominal confidence for every
  predictor and device (87-93 % at 90 %); at equal coverage a smaller width is better. The
  methods are compared on one fitted base through the wrapper API
  (:func:`latlab.predictors.conformal.make_conformal`); ``latlab train --conformal`` wraps and
  calibrates the same way but fits a new base per run.
* **Layer level, on this machine** (:mod:`latlab.experiments.conformal_layer_level`):
  coverage and width per layer type from measured single-layer benchmarks, interval bands
  along a conv output-channel sweep (their Figure 9), and per-layer intervals of
  ``zoo:mobilenet_v2`` (their Figure 13).

Settings: full -- every device column, 3 seeds, 1000 training / 2000 calibration / up to 5000
test networks, predictors flops, gbm, rf, fcnn, gcn; 900 layer benchmarks, 20 seeds (97
minutes of single-threaded fitting in total, 83 of them the 39 GCN fits). Runs go seed by
seed over all devices, so an interrupted run has every device at its first seeds.
``--quick`` -- four device columns, one seed, 500 / 500 / 2000 networks, flops and gbm; 180
layer benchmarks, 4 seeds (about 2 minutes).
A small table (CI's ~150 rows measured on the machine) scales the splits to 40 / 30 / 30 % of
its rows; fewer than 60 valid rows on a device is a :class:`~latlab.errors.DataError`.

Writes ``report.md``, PNG plots, ``network_runs.jsonl`` (one line per device, seed and
predictor: re-running resumes) and ``bench.db`` (the layer benchmarks; resumable).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import DataError, LatlabError
from latlab.experiments.common import RunLog, config_hash, markdown_table
from latlab.experiments.context import ExperimentContext
from latlab.experiments.plots import save
from latlab.fileio import atomic_write_text
from latlab.jsonio import jsonable
from latlab.predictors import PREDICTORS, make_predictor
from latlab.predictors.conformal import coverage_report, make_conformal
from latlab.training.metrics import regression_metrics
from latlab.training.plots import pyplot

log = logging.getLogger("latlab.experiments.conformal_nb201")

PREDICTORS_WANTED: tuple[str, ...] = ("flops", "gbm", "rf", "fcnn", "gcn")
QUICK_PREDICTORS: tuple[str, ...] = ("flops", "gbm")
METHODS: tuple[str, ...] = ("split", "cm-tv", "cm-lv", "cm-o")
CONFIDENCES: tuple[float, ...] = (0.8, 0.9, 0.95)
MAIN_CONFIDENCE = 0.9
#: Coverage target: within this many percentage points of the nominal confidence.
TOLERANCE = 3.0
MIN_ROWS = 60


@dataclass(frozen=True)
class Settings:
    devices: tuple[str, ...]
    seeds: int
    n_train: int
    n_cal: int
    n_test: int
    predictors: tuple[str, ...]
    quick: bool


def plan(devices: list[str], rows: dict[str, int], quick: bool) -> Settings:
    """Devices, split sizes, seeds and predictors for a table with ``rows`` valid rows per
    device; a small table gets 40 / 30 / 30 % splits, fewer than 60 rows a DataError."""
    if not devices:
        raise DataError("the latency table has no device column")
    fewest = min(rows[d] for d in devices)
    if fewest < MIN_ROWS:
        worst = min(devices, key=lambda d: rows[d])
        raise DataError(
            f"device column {worst!r} has {fewest} valid rows; the conformal experiment needs "
            f"at least {MIN_ROWS} (training, calibration for 95 % confidence, and test networks)"
        )
    if quick and len(devices) > 4:
        idx = np.unique(np.linspace(0, len(devices) - 1, 4).round().astype(int))
        devices = [devices[i] for i in idx]
    n_train, n_cal, n_test = (500, 500, 2000) if quick else (1000, 2000, 5000)
    if fewest < n_train + n_cal + 200:
        n_train, n_cal = int(0.4 * fewest), int(0.3 * fewest)
        n_test = fewest - n_train - n_cal
    wanted = QUICK_PREDICTORS if quick else PREDICTORS_WANTED
    predictors = tuple(p for p in wanted if p in PREDICTORS)
    return Settings(tuple(devices), 1 if quick else 3, n_train, n_cal, n_test, predictors, quick)


def split_indices(n: int, s: Settings, seed: int, device_index: int) -> tuple[np.ndarray, ...]:
    """Disjoint train / calibration / test indices (seeded per device)."""
    perm = np.random.default_rng([seed, device_index]).permutation(n)
    tr = perm[: s.n_train]
    ca = perm[s.n_train : s.n_train + s.n_cal]
    te = perm[s.n_train + s.n_cal :][: s.n_test]
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
    if "n_jobs" in params:
        out["n_jobs"] = threads
    return out


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """Run (or resume) both levels; writes report.md and the plots into ``ctx.out``."""
    from latlab.experiments.conformal_layer_level import run_layer_level

    if ctx.data is None:
        raise DataError("the conformal experiment needs the nb201 latency table (--data)")
    start = time.monotonic()
    network = run_network_level(ctx)
    plot_network(network, ctx.out / "network_coverage_width.png")
    t_layer = time.monotonic()
    layer = run_layer_level(ctx)
    metrics = jsonable(
        {
            "network_level": network,
            "layer_level": layer,
            "seconds": time.monotonic() - start,
            "layer_seconds": time.monotonic() - t_layer,
        }
    )
    atomic_write_text(ctx.out / "report.md", report(metrics, ctx))
    return dict(metrics)


def run_network_level(ctx: ExperimentContext) -> dict[str, Any]:
    """Coverage and width of every method on held-out networks of the table (resumable)."""
    from latlab.datasets.tables import NB201_MIN_MS, load_table

    assert ctx.data is not None
    table = load_table(ctx.data, NB201_MIN_MS)  # the shared table's documented floor
    valid = {d: table.valid(d) for d in table.devices}
    s = plan(list(table.devices), {d: len(v) for d, v in valid.items()}, ctx.quick)
    runs = RunLog(ctx.out / "network_runs.jsonl")
    tag = config_hash(
        {"data": str(ctx.data), "n": [s.n_train, s.n_cal, s.n_test], "methods": METHODS}
    )
    seeds = range(ctx.seed, ctx.seed + s.seeds)
    total = len(s.devices) * s.seeds * len(s.predictors)
    count = 0
    # Seed-major: an interrupted run has covered every device before it repeats any.
    for seed in seeds:
        for di, dev in enumerate(s.devices):
            nets = list(valid[dev]["network"])
            y = valid[dev]["latency_ms"].to_numpy(dtype=float)
            tr, ca, te = split_indices(len(nets), s, seed, di)
            for name in s.predictors:
                key = f"{tag}|{dev}|{seed}|{name}"
                if not runs.done(key):
                    t0 = time.monotonic()
                    row = _one(name, nets, y, tr, ca, te, seed, ctx.threads)
                    row.update(key=key, device=dev, seed=seed, predictor=name)
                    row["seconds"] = time.monotonic() - t0
                    runs.add(row)
                    log.info("%s seed %d %s: %s (%.0f s)", dev, seed, name, ", ".join(
                        f"{m} {row['methods'][m]['0.9']['coverage']:.1f}%"
                        for m in row.get("methods", {})) or row.get("error", ""),
                        row["seconds"])  # fmt: skip
                count += 1
                ctx.progress("network-level runs", count, total)
    done = {k.split("|", 1)[1]: r for k, r in runs.records.items() if k.startswith(tag + "|")}
    out = summarise(done, list(s.devices), s, seeds)
    out["settings"] = {
        "quick": s.quick,
        "devices": list(s.devices),
        "seeds": s.seeds,
        "n_train": s.n_train,
        "n_cal": s.n_cal,
        "n_test": s.n_test,
        "predictors": list(s.predictors),
        "methods": list(METHODS),
        "threads": ctx.threads,
    }
    out["run_seconds"] = float(sum(r.get("seconds", 0.0) for r in done.values()))
    return out


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


def _in_band(coverage: float, confidence: float) -> bool:
    return abs(coverage - 100 * confidence) <= TOLERANCE


def summarise(
    done: dict[str, dict[str, Any]], cols: list[str], s: Settings, seeds: range
) -> dict[str, Any]:
    """Mean coverage and width over seeds per predictor, device, method and confidence."""
    table: dict[str, Any] = {}
    for name in s.predictors:
        table[name] = {}
        for dev in cols:
            rows = [done.get(f"{dev}|{seed}|{name}", {}) for seed in seeds]
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
    summary: dict[str, Any] = {}
    for method in METHODS:
        summary[method] = {}
        for c in CONFIDENCES:
            es = [e[method][str(c)] for per in table.values() for e in per.values()]
            if not es:
                continue
            summary[method][str(c)] = {
                "min_coverage": min(e["coverage_min"] for e in es),
                "max_coverage": max(e["coverage_max"] for e in es),
                "in_band": sum(
                    _in_band(e["coverage_min"], c) and _in_band(e["coverage_max"], c) for e in es
                ),
                "pairs": len(es),
                "mean_width": float(np.mean([e["mean_relative_width"] for e in es])),
            }
    return {"results": table, "summary": summary, "tolerance": TOLERANCE}


# --------------------------------------------------------------------------- plots


_COLORS = {"split": "C7", "cm-tv": "C0", "cm-lv": "C1", "cm-o": "C2"}


def plot_network(m: dict[str, Any], path: Path) -> None:
    """Per predictor: coverage and mean width at 90 % per device and method."""
    plt = pyplot()
    preds = [p for p in m["settings"]["predictors"] if m["results"].get(p)]
    devices = m["settings"]["devices"]
    c = str(MAIN_CONFIDENCE)
    fig, axes = plt.subplots(
        max(1, len(preds)), 2, figsize=(12, 2.6 * max(1, len(preds))), dpi=80, squeeze=False
    )
    x = np.arange(len(devices))
    w = 0.8 / len(METHODS)
    for row, name in zip(axes, preds, strict=False):
        res = m["results"][name]
        for j, method in enumerate(METHODS):
            got = [res[d][method][c] if d in res else None for d in devices]
            cov = [np.nan if g is None else g["coverage"] for g in got]
            wid = [np.nan if g is None else g["mean_relative_width"] for g in got]
            row[0].bar(x + (j - 1.5) * w, cov, w, color=_COLORS[method], label=method)
            row[1].bar(x + (j - 1.5) * w, wid, w, color=_COLORS[method], label=method)
        row[0].axhspan(90 - TOLERANCE, 90 + TOLERANCE, color="green", alpha=0.15)
        row[0].set_ylim(75, 100)
        row[0].set_ylabel(f"{name}\ncoverage at 90 % (%)", fontsize=8)
        row[1].set_ylabel("mean relative width (%)", fontsize=8)
        for ax in row:
            ax.set_xticks(x)
            ax.set_xticklabels(devices, rotation=45, ha="right", fontsize=7)
            ax.grid(axis="y", alpha=0.3)
    axes[0][1].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    save(fig, path, dpi=None)


# --------------------------------------------------------------------------- report


def report(m: dict[str, Any], ctx: ExperimentContext) -> str:
    from latlab.experiments.conformal_layer_level import report_section

    net = m["network_level"]
    s = net["settings"]
    c = str(MAIN_CONFIDENCE)
    lines = [
        "# Conformal intervals: CM_TV, CM_LV, CM_O (and split conformal)",
        "",
        f"Command: `{ctx.command or 'latlab experiment run conformal'}`  ",
        f"{'Quick' if s['quick'] else 'Full'} run: {net['run_seconds'] / 60:.1f} min of "
        "network-level fitting and scoring over all its runs (one thread each; runs already in "
        f"network_runs.jsonl are not repeated); this invocation {m['seconds']:.0f} s, layer "
        f"level {m['layer_seconds']:.0f} s.",
        "",
        "## Network level: held-out networks of the table",
        "",
        f"Data: `{ctx.data}`; per device and seed: {s['n_train']} training, {s['n_cal']} "
        f"calibration, up to {s['n_test']} test networks (disjoint, random); {s['seeds']} "
        f"seed(s); devices {', '.join(s['devices'])}. Every method wraps the same fitted base "
        "and calibrates on the same networks. Target: coverage within "
        f"±{TOLERANCE:g} % of the confidence for every predictor and device (each seed counts); "
        "at equal coverage a smaller width is better. Widths are relative to the measured "
        "latency (%).",
        "",
        "### Summary over predictors and devices",
        "",
    ]
    rows = []
    for method, per_c in net["summary"].items():
        for conf, w in per_c.items():
            rows.append(
                [
                    method,
                    f"{100 * float(conf):g} %",
                    f"{w['min_coverage']:.1f}",
                    f"{w['max_coverage']:.1f}",
                    f"{w['in_band']} / {w['pairs']}",
                    f"{w['mean_width']:.1f}",
                ]
            )
    lines += [
        markdown_table(
            ["method", "confidence", "min coverage %", "max coverage %", "in band", "width %"],
            rows,
        ),
        "",
    ]
    for name, per in net["results"].items():
        lines += [f"### {name}: coverage % / mean width % at {MAIN_CONFIDENCE:.0%}", ""]
        rows = [
            [dev, f"{e['point_mape']:.2f}", f"{e['point_spearman']:.3f}"]
            + [
                f"{e[meth][c]['coverage']:.1f} / {e[meth][c]['mean_relative_width']:.1f}"
                for meth in METHODS
            ]
            for dev, e in per.items()
        ]
        lines += [
            markdown_table(["device", "point MAPE %", "point ρ", *METHODS], rows),
            "",
        ]
    lines += ["![coverage and width per device](network_coverage_width.png)", ""]
    lines += report_section(m["layer_level"])
    return "\n".join(lines)
