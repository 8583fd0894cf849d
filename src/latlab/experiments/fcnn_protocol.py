"""FCNN estimator protocol on this machine: measure the FCNN space, fit, score against noise.

Reproduces the evaluation of Beglaryan & Ringhofer's FCNN latency estimator with latlab's own
measurements:

1. sample ``n`` distinct networks of the paper's space (1-5 hidden layers of <= 50 neurons,
   ``latlab.datasets.spaces.fcnn``) and measure them with the measurement protocol into a
   SQLite store (resumable: a re-run skips what is stored);
2. re-measure the test networks in a second campaign (a separate device name in the same
   store): the disagreement of the two runs is the dataset's **noise floor**;
3. split 4,480 / 1,120 / 1,400 (64/16/20 %), fit the FCNN estimator on the width vectors
   (early stopping on the 1,120), and report on the test set MSE, MAE, RMSE (ms), MAPE and
   the average absolute deviation of the test latencies around their mean (the spread a
   constant predictor would leave), for several seeds -- with the FLOPs proxy, LightGBM and
   the random forest alongside for context;
4. report the same errors relative to the noise floor.

**Noise floor.** With two independent measurements ``a`` and ``b`` of each network (same
noise variance), a perfect predictor of the true latency would score an expected squared
error of ``E[(a - b)²] / 2`` against one measurement: the floor MSE is half the test-retest
MSE, the floor RMSE its square root, and the floor MAE the test-retest MAE divided by √2
(exact for Gaussian noise). The test-retest figures themselves are reported too.

    latlab experiment run fcnn [--quick] [--out DIR] [--threads N]
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import DataError
from latlab.experiments.common import (
    dump_json,
    fmt,
    markdown_table,
    mean_std,
)
from latlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

#: The paper's figures (ms).
PAPER = {"mse": 0.0007, "mae": 0.0211, "rmse": 0.0261}
PREDICTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "fcnn": ("fcnn", {}),
    "flops": ("flops", {}),
    "gbm": ("gbm", {}),
    "rf": ("rf", {}),
}


@dataclass
class FcnnProtocolConfig:
    """Settings of one reproduction."""

    out: str = "results/fcnn-protocol"
    count: int = 7000
    sample_seed: int = 0
    device: str = "this-machine"
    backend: str = "onnxruntime"
    threads: int = 1
    repeats: int = 300
    time_budget_s: float = 0.5
    max_warmup_s: float = 0.5
    seeds: int = 3
    fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)
    fit_threads: int | None = None
    quick: bool = False
    #: Filled by the run: device -> networks found in the store (not re-measured).
    reused: dict[str, int] = field(default_factory=dict)

    @classmethod
    def quick_config(cls, out: str, **kw: Any) -> FcnnProtocolConfig:
        kw.setdefault("count", 1000)
        kw.setdefault("repeats", 200)
        return cls(out=out, seeds=1, quick=True, **kw)

    def measure_config(self) -> Any:
        from latlab.datasets.measure import MeasureConfig

        return MeasureConfig(
            backend=self.backend,
            threads=self.threads,
            repeats=self.repeats,
            time_budget_s=self.time_budget_s,
            max_warmup_s=self.max_warmup_s,
        )


# --------------------------------------------------------------------------- measurement


def measure_campaign(
    cfg: FcnnProtocolConfig, refs: list[str], device: str, progress: Any = None
) -> dict[str, float]:
    """Measure ``refs`` into the store under ``device``; returns reference -> median ms."""
    from latlab.datasets.measure import measure_many
    from latlab.datasets.store import Store

    mcfg = cfg.measure_config()
    store = Store(Path(cfg.out) / "measurements.db")
    try:
        result = measure_many(refs, mcfg, store, device, progress=progress)
        if result.skipped:
            log.info("%s: %d networks already in the store, reused", device, len(result.skipped))
        cfg.reused[device] = len(result.skipped)
        frame = store.measurements([device], mcfg.protocol_key())
    finally:
        store.close()
    medians = dict(zip(frame["network"], frame["median_ms"].astype(float), strict=True))
    missing = [r for r in refs if r not in medians]
    if missing:
        raise DataError(f"{len(missing)} networks were not measured (e.g. {missing[0]})")
    return {r: medians[r] for r in refs}


def noise_floor(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Test-retest disagreement of two measurement runs and the implied predictor floor."""
    d = np.asarray(first, float) - np.asarray(second, float)
    mean_pair = (np.asarray(first) + np.asarray(second)) / 2
    retest = {
        "mse": float(np.mean(d**2)),
        "mae": float(np.mean(np.abs(d))),
        "rmse": float(np.sqrt(np.mean(d**2))),
        "median_rel_diff_pct": float(100 * np.median(np.abs(d) / mean_pair)),
    }
    floor = {
        "mse": retest["mse"] / 2,
        "rmse": retest["rmse"] / math.sqrt(2),
        "mae": retest["mae"] / math.sqrt(2),
    }
    return {"n": len(d), "retest": retest, "floor": floor}


# --------------------------------------------------------------------------- evaluation


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from latlab.training.metrics import regression_metrics

    m = regression_metrics(y, pred)
    m["mse"] = m["rmse"] ** 2
    m["aad"] = float(np.mean(np.abs(y - y.mean())))
    return m


def evaluate(
    cfg: FcnnProtocolConfig,
    refs: list[str],
    y: np.ndarray,
    test_idx: np.ndarray,
    floor: dict,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit every predictor for every seed on the fixed split; metrics on the test set.

    ``keep``, when given, receives the first seed's test predictions and training log per
    predictor (``{name: {"pred": array, "train_log": dict}}``) for the report's figures.
    """
    from latlab.predictors import make_predictor

    n = len(refs)
    n_tr = round(cfg.fractions[0] * n)
    rest = np.setdiff1d(np.arange(n), test_idx)
    out: dict[str, Any] = {}
    for name, (reg, params) in PREDICTORS.items():
        runs = []
        for seed in range(cfg.seeds):
            perm = np.random.default_rng(seed).permutation(rest)
            tr, va = perm[:n_tr], perm[n_tr:]
            p = dict(params)
            if reg != "flops":
                p["random_state"] = seed
            if cfg.fit_threads is not None and reg in ("fcnn", "gbm", "rf"):
                p["n_jobs"] = cfg.fit_threads
            model = make_predictor(reg, **p)
            t0 = time.perf_counter()
            model.fit([refs[i] for i in tr], y[tr], eval_set=([refs[i] for i in va], y[va]))
            fit_s = time.perf_counter() - t0
            pred = model.predict([refs[i] for i in test_idx])
            if keep is not None and seed == 0:
                keep[name] = {"pred": pred, "train_log": getattr(model, "train_log_", {}) or {}}
            s: dict[str, Any] = dict(_scores(y[test_idx], pred))
            s["fit_s"] = fit_s
            for k in ("mse", "mae", "rmse"):
                s[f"{k}_over_floor"] = s[k] / floor["floor"][k] if floor["floor"][k] > 0 else None
            runs.append(s)
            log.info(
                "%s seed %d: MAE %.5f ms (%.2fx floor), MAPE %.2f %%",
                name,
                seed,
                s["mae"],
                s["mae_over_floor"] or float("nan"),
                s["mape"],
            )
        keys = [k for k in runs[0] if isinstance(runs[0][k], int | float)]
        out[name] = {k: mean_std(r[k] for r in runs) for k in keys}
    return out


def run(
    cfg: FcnnProtocolConfig, progress: Any = None, keep: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Measure (or resume), re-measure the test networks, fit and score; returns metrics.

    ``keep`` (see :func:`evaluate`) also receives ``"_test": (test references, measured ms)``.
    """
    from latlab.datasets.spaces import sample

    if abs(sum(cfg.fractions) - 1) > 1e-9:
        raise DataError(f"split fractions must sum to 1, got {cfg.fractions}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = sample("fcnn", cfg.count, seed=cfg.sample_seed)
    t0 = time.perf_counter()
    first = measure_campaign(cfg, refs, cfg.device, progress)
    measure_s = time.perf_counter() - t0
    n_test = round(cfg.fractions[2] * len(refs))
    test_idx = np.sort(np.random.default_rng(12345).permutation(len(refs))[:n_test])
    test_refs = [refs[i] for i in test_idx]
    t0 = time.perf_counter()
    second = measure_campaign(cfg, test_refs, f"{cfg.device}-rerun", progress)
    remeasure_s = time.perf_counter() - t0
    y = np.array([first[r] for r in refs])
    floor = noise_floor(y[test_idx], np.array([second[r] for r in test_refs]))
    log.info(
        "noise floor on %d test networks: MAE %.5f ms (test-retest %.5f ms)",
        floor["n"],
        floor["floor"]["mae"],
        floor["retest"]["mae"],
    )
    if keep is not None:
        keep["_test"] = (test_refs, y[test_idx])
    results = evaluate(cfg, refs, y, test_idx, floor, keep)
    doc = {
        "experiment": "fcnn-protocol",
        "config": asdict(cfg),
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "protocol": cfg.measure_config().protocol(),
        "dataset": {
            "networks": len(refs),
            "latency_ms": {
                "min": float(y.min()),
                "median": float(np.median(y)),
                "max": float(y.max()),
                "mean": float(y.mean()),
            },
            "split": [
                round(cfg.fractions[0] * len(refs)),
                len(refs) - n_test - round(cfg.fractions[0] * len(refs)),
                n_test,
            ],
            "measure_s": measure_s,
            "remeasure_s": remeasure_s,
        },
        "noise_floor": floor,
        "paper": PAPER,
        "results": results,
        "targets": {
            "fcnn_mae_over_floor": results["fcnn"]["mae_over_floor"]["mean"],
            "fcnn_mae_within_1_5x_floor": (results["fcnn"]["mae_over_floor"]["mean"] or 1e9) <= 1.5,
        },
    }
    dump_json(out / "metrics.json", doc)
    atomic_write_text(out / "report.md", report(doc))
    return doc


def report(doc: dict[str, Any]) -> str:
    cfg, ds, nf, res = doc["config"], doc["dataset"], doc["noise_floor"], doc["results"]
    lines = [
        "# FCNN estimator protocol on this machine",
        "",
        f"{ds['networks']} networks of the FCNN space (1-5 hidden layers, <= 50 neurons), "
        f"measured with {cfg['backend']} on {cfg['threads']} thread(s) "
        f"({cfg['repeats']} repeats / {cfg['time_budget_s']} s per network; measuring took "
        f"{ds['measure_s']:.0f} s, re-measuring the test networks {ds['remeasure_s']:.0f} s"
        + (
            f" in this run, which reused {sum(cfg['reused'].values())} measurements "
            "already in the store"
            if sum(cfg.get("reused", {}).values())
            else ""
        )
        + "). "
        f"Latency: median {ds['latency_ms']['median']:.4f} ms, range "
        f"{ds['latency_ms']['min']:.4f}-{ds['latency_ms']['max']:.4f} ms. Split "
        f"{' / '.join(map(str, ds['split']))}; {cfg['seeds']} seed(s), mean ± std."
        + (" **Quick run.**" if cfg["quick"] else ""),
        f"Environment: {doc['environment']['platform']}.",
        "",
        "## Errors on the test set",
        "",
        "MSE in ms², MAE, RMSE and the average absolute deviation (AAD) of the measured test "
        "latencies around their mean in ms (the error a constant predictor would make); the "
        "same in µs in brackets.",
        "",
    ]
    rows = [
        [
            name,
            fmt(r["mse"], ".2e"),
            f"{fmt(r['mae'], 5)} ({fmt(r['mae'], 3, 1000)})",
            f"{fmt(r['rmse'], 5)} ({fmt(r['rmse'], 3, 1000)})",
            f"{fmt(r['aad'], 5)} ({fmt(r['aad'], 3, 1000)})",
            fmt(r["mape"], 2),
            fmt(r["acc10"], 1),
            fmt(r["spearman"], 4),
        ]
        for name, r in res.items()
    ]
    rows.append(
        [
            "paper (its device)",
            str(doc["paper"]["mse"]),
            str(doc["paper"]["mae"]),
            str(doc["paper"]["rmse"]),
            "–",
            "–",
            "–",
            "–",
        ]
    )
    lines += [
        markdown_table(
            ["predictor", "MSE", "MAE", "RMSE", "AAD of data", "MAPE %", "acc10 %", "ρ"], rows
        ),
        "",
        "## Relative to the measurement noise floor",
        "",
        f"Noise floor from re-measuring the {nf['n']} test networks: test-retest MAE "
        f"{nf['retest']['mae']:.5f} ms, RMSE {nf['retest']['rmse']:.5f} ms, median relative "
        f"difference {nf['retest']['median_rel_diff_pct']:.2f} %; the floor of a perfect "
        f"predictor is MAE {nf['floor']['mae']:.5f} ms, RMSE {nf['floor']['rmse']:.5f} ms, "
        f"MSE {nf['floor']['mse']:.2e} ms² (half the test-retest MSE). The MSE ratio needs no "
        "assumption on the noise; the MAE floor (test-retest MAE / √2) is exact for Gaussian "
        "noise and too high for heavier tails, so MAE ratios below 1 mean heavy-tailed noise, "
        "not a predictor better than the measurements.",
        "",
    ]
    rows = [
        [
            name,
            fmt(r["mse_over_floor"], 2),
            fmt(r["mae_over_floor"], 2),
            fmt(r["rmse_over_floor"], 2),
        ]
        for name, r in res.items()
    ]
    lines += [
        markdown_table(["predictor", "MSE / floor", "MAE / floor", "RMSE / floor"], rows),
        "",
        f"Target: FCNN MAE within 1.5x the noise floor -- "
        f"{doc['targets']['fcnn_mae_over_floor']:.2f}x: "
        + ("met." if doc["targets"]["fcnn_mae_within_1_5x_floor"] else "**not met**."),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- latlab experiment


def experiment(ctx: Any) -> dict[str, Any]:
    """``latlab experiment run fcnn``: the protocol, plus the paper's figures.

    The measurement store ``measurements.db`` in ``ctx.out`` makes the run resumable: a
    folder from an earlier run (or ``latlab experiment run fcnn``) with the
    same protocol is reused, only missing networks are measured. Adds to the report the
    FCNN's training / validation loss curves (first seed) and the violin and box plots of the
    absolute deviations |predicted - measured| on the test set per predictor (Figures 7-8 of
    the FCNN paper).
    """
    from latlab.experiments import plots

    kw: dict[str, Any] = {"fit_threads": ctx.threads}
    cfg = (
        FcnnProtocolConfig.quick_config(str(ctx.out), **kw)
        if ctx.quick
        else FcnnProtocolConfig(str(ctx.out), **kw)
    )
    cfg.sample_seed = ctx.seed

    def progress(event: Any) -> None:
        if event.kind in ("start", "measured", "skipped"):
            ctx.progress("measuring", event.done, event.total)

    keep: dict[str, Any] = {}
    import torch

    torch.set_num_threads(ctx.threads)
    doc = run(cfg, progress, keep)
    out = Path(cfg.out)
    _, y_test = keep.pop("_test")
    curves = {
        name: k["train_log"]
        for name, k in keep.items()
        if k["train_log"].get("val_loss") or k["train_log"].get("train_loss")
    }
    figures = []
    if curves:
        plots.save(plots.loss_curves(curves, title="FCNN loss per epoch (seed 0)"),
                   out / "loss_curves.png")  # fmt: skip
        figures.append("loss_curves.png")
    deviations = {name: 1000 * np.abs(k["pred"] - y_test) for name, k in keep.items()}
    plots.save(
        plots.deviation_plots(
            deviations, unit="µs", title="absolute deviation on the test set (seed 0)"
        ),
        out / "deviations.png",
    )
    figures.append("deviations.png")
    dev_stats = {
        name: {
            "median_us": float(np.median(d)),
            "p90_us": float(np.percentile(d, 90)),
            "max_us": float(d.max()),
        }
        for name, d in deviations.items()
    }
    doc["deviations_seed0"] = dev_stats
    doc["training_seed0"] = {
        name: {
            "epochs": c.get("epochs"),
            "best_epoch": c.get("best_epoch"),
            "best_val_loss": c.get("best_val_loss"),
        }
        for name, c in curves.items()
    }
    rows = [
        [name, f"{s['median_us']:.3f}", f"{s['p90_us']:.3f}", f"{s['max_us']:.3f}"]
        for name, s in dev_stats.items()
    ]
    lines = [
        "",
        "## Absolute deviations (Figures 7-8 of the paper)",
        "",
        "|predicted − measured| on the test set for the first seed, in µs.",
        "",
        markdown_table(["predictor", "median", "90th percentile", "max"], rows),
        "",
        "![violin and box plots of the absolute deviations](deviations.png)",
        "",
    ]
    if curves:
        t = doc["training_seed0"]
        lines += [
            "## Training",
            "",
            "Loss per epoch of the FCNN fit (first seed): mean-squared error of the "
            "standardised log latency on the training batches (with dropout) and on the "
            "validation networks; training stops early on the validation loss and keeps "
            "the best epoch ("
            + ", ".join(f"{n}: epoch {v['best_epoch']} of {v['epochs']}" for n, v in t.items())
            + ").",
            "",
            "![training and validation loss](loss_curves.png)",
            "",
        ]
    lines += ["## How to repeat", "", f"`{ctx.command}`", ""]
    atomic_write_text(out / "report.md", report(doc) + "\n".join(lines))
    doc["figures"] = figures
    fc = doc["results"]["fcnn"]
    doc["summary"] = {
        "networks": doc["dataset"]["networks"],
        "fcnn MSE ms²": fc["mse"]["mean"],
        "fcnn MAE ms": fc["mae"]["mean"],
        "fcnn RMSE ms": fc["rmse"]["mean"],
        "fcnn MAE / noise floor": fc["mae_over_floor"]["mean"],
        "noise floor MAE ms": doc["noise_floor"]["floor"]["mae"],
    }
    return doc
