"""``transfer``: Spearman rho against the number k of target-device samples, per device.

    latlab experiment run transfer --data ../shared/data/nb201_latency.csv [--quick]

Leave one device out of a latency table (HELP's protocol, NeurIPS 2021: mean rho 0.932 over six
unseen devices with k = 10 on nb201). Each device column in turn is the *new* device; for each
k and seed, three predictors are trained on the same k random networks of it, each exactly as
``latlab train --data TABLE --target DEVICE --train-size K --val-size 0 --conformal none``
trains it (the public pipeline, :func:`latlab.training.pipeline.train`, one bundle per run):

* ``transfer`` -- few-shot transfer (``--predictor transfer --pretrain TABLE``): pretrained on
  the other device columns (the pipeline's device split removes the target's column), adapted
  with the k latencies (:mod:`latlab.predictors.transfer`);
* ``gbm`` -- LightGBM trained from scratch on the k networks;
* ``flops`` -- the FLOPs proxy fitted on the k networks.

The test set is every other valid network of the target in the full run (the protocol's "all
its other valid networks") and a seeded sample of 1000 of them in ``--quick``: Spearman rho
and MAPE on it. Reported: rho per device, k and predictor, mean ± std over seeds, a plot of rho
against k per device, and the mean over devices against the targets (mean rho >= 0.95 at
k = 10 and >= 0.97 at k = 50).

Settings: full -- every device column, k = 5, 10, 20, 50, 100, 5 seeds (975 runs for the
13-device nb201 table: 17 minutes on the 2-core VM with one other job running);
``--quick`` -- three device columns spread over the table, k = 5, 20, 50, 2 seeds (4.4 minutes
at a load average of ~10 on the shared 2-core VM).
Small tables scale down: k values that leave fewer than 20 test networks are dropped; fewer
than 25 valid rows or a single device column is a :class:`~latlab.errors.DataError` (nothing
to transfer from).

Few-shot intervals: for every device and seed, two more runs of ``transfer`` with k = 10,
``--conformal cv+`` (what ``latlab train`` does by default on a 10-row table: jackknife+ over
the 10 networks) and ``--conformal sources`` (the source devices' simulated k-shot residuals,
:mod:`latlab.predictors.conformal.sources`), record the coverage at 90 % and the mean relative
width on the same test networks; reported per device against the 87-95 % band.

Resumable: one line per finished run in ``runs.jsonl`` in the output folder.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import DataError
from latlab.experiments.common import RunLog, config_hash, markdown_table, mean_std
from latlab.experiments.context import ExperimentContext
from latlab.experiments.plots import save
from latlab.fileio import atomic_write_text
from latlab.training.plots import pyplot

log = logging.getLogger(__name__)

#: The predictors compared; the first is the transfer predictor.
MODELS: tuple[str, ...] = ("transfer", "gbm", "flops")
#: Options of the from-scratch baselines that make sense with k = 5 rows.
SCRATCH_OPTIONS: dict[str, dict[str, Any]] = {"gbm": {"min_child_samples": 2}}
KS_FULL: tuple[int, ...] = (5, 10, 20, 50, 100)
KS_QUICK: tuple[int, ...] = (5, 20, 50)
#: Test networks must number at least this many (a rank correlation of fewer is noise).
MIN_TEST = 20
MIN_ROWS = 25
TARGETS: dict[int, float] = {10: 0.95, 50: 0.97}
#: Few-shot intervals: k, method (CV+ with 10 folds = jackknife+ on 10 networks), confidence
#: (the pipeline's default, 90 %) and the target coverage band (percent).
COVERAGE_K = 10
#: ``cv+``: jackknife+ over the k networks (the default of ``latlab train`` on such a table);
#: ``sources``: the source devices' simulated k-shot residuals, scaled to the target.
COVERAGE_METHODS: tuple[str, ...] = ("cv+", "sources")
COVERAGE_BAND = (87.0, 95.0)
HELP_ANCHOR = 0.932


@dataclass(frozen=True)
class Settings:
    devices: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: int
    #: Held-out networks scored per run; ``None``: all the device's other valid networks.
    test_size: int | None
    quick: bool


def plan(devices: list[str], rows: dict[str, int], quick: bool) -> Settings:
    """The devices, k values and seeds of a run on a table with ``rows`` valid rows per device.

    Raises :class:`DataError` when the table cannot support leave-one-device-out transfer.
    """
    if len(devices) < 2:
        raise DataError(
            f"transfer needs at least two device columns (one to hold out, one to transfer "
            f"from); the table has {len(devices)}: {', '.join(devices) or 'none'}"
        )
    fewest = min(rows[d] for d in devices)
    if fewest < MIN_ROWS:
        worst = min(devices, key=lambda d: rows[d])
        raise DataError(
            f"device column {worst!r} has {fewest} valid rows; transfer needs at least "
            f"{MIN_ROWS} (k = 5 training networks and {MIN_TEST} test networks)"
        )
    if quick and len(devices) > 3:
        idx = np.unique(np.linspace(0, len(devices) - 1, 3).round().astype(int))
        devices = [devices[i] for i in idx]
    wanted = KS_QUICK if quick else KS_FULL
    ks = tuple(k for k in wanted if fewest - k >= MIN_TEST)
    return Settings(tuple(devices), ks, 2 if quick else 5, 1000 if quick else None, quick)


#: Device kinds by column-name prefix (the shared tables' devices); anything else is "other".
KIND_PREFIXES: dict[str, tuple[str, ...]] = {
    "gpu": ("1080ti", "titanx", "2080ti", "titan_xp", "gpu"),
    "cpu": ("silver", "gold", "xeon", "cpu"),
    "phone": ("pixel", "samsung", "essential", "phone"),
}


def device_kind(device: str) -> str:
    """The kind of a device column (``gpu``, ``cpu``, ``phone`` or ``other``)."""
    name = device.lower()
    for kind, prefixes in KIND_PREFIXES.items():
        if name.startswith(prefixes):
            return kind
    return "other"


def plan_kinds(devices: list[str], rows: dict[str, int], quick: bool) -> Settings:
    """Hold out whole device kinds: :func:`plan`, with at least two kinds required and, for
    ``--quick``, one device of each kind."""
    kinds = {device_kind(d) for d in devices}
    if len(kinds) < 2:
        raise DataError(
            f"transfer-kinds needs devices of at least two kinds (gpu, cpu, phone); the table "
            f"has only {', '.join(sorted(kinds)) or 'none'}"
        )
    s = plan(devices, rows, quick=False)
    if quick:
        first: dict[str, str] = {}
        for d in devices:
            first.setdefault(device_kind(d), d)
        q = plan(devices, rows, quick=True)
        return Settings(tuple(first.values()), q.ks, q.seeds, q.test_size, True)
    return s


def _run_one(
    source: Any,
    data: Path,
    device: str,
    model: str,
    k: int,
    seed: int,
    test_size: int,
    threads: int,
    exclude: list[str] | None = None,
    conformal: str | None = None,
) -> dict[str, Any]:
    """One ``latlab train`` run (bundle in a temporary folder); its test metrics. ``exclude``:
    source columns the transfer predictor must not pretrain on (the target's kind);
    ``conformal``: the interval method (its coverage and width are recorded)."""
    from latlab.datasets.tables import NB201_MIN_MS
    from latlab.predictors import make_predictor
    from latlab.training.pipeline import TrainConfig, train

    params: dict[str, Any] = dict(SCRATCH_OPTIONS.get(model, {}))
    defaults = make_predictor(model).get_params()
    if "n_jobs" in defaults:
        params["n_jobs"] = threads
    if exclude and model == "transfer":
        params["target_exclude"] = list(exclude)
    config = TrainConfig(
        predictor=model,
        params=params,
        train_size=k,
        val_size=0,
        test_size=test_size,
        conformal=conformal,
        seed=seed,
        pretrain=str(data) if model == "transfer" else None,
        min_ms=NB201_MIN_MS,
    )
    t0 = time.monotonic()
    sources: list[str] | None = None
    with tempfile.TemporaryDirectory(prefix="latlab-transfer-") as tmp:
        result = train(source, device, config, Path(tmp) / "bundle")
        if "target_exclude" in params:  # record what the predictor pretrained on
            from latlab.predictors.transfer import PSEUDO_SOURCES
            from latlab.training.bundle import load_bundle

            predictor: Any = load_bundle(Path(tmp) / "bundle").predictor  # a TransferPredictor
            weights = predictor.source_weights()
            sources = [n for n in weights if not n.startswith(PSEUDO_SOURCES)]
    test = result.metrics["test"]
    out: dict[str, Any] = {
        "spearman": float(test["spearman"]),
        "mape": float(test["mape"]),
        "n_test": int(test["n"]),
        "seconds": time.monotonic() - t0,
    }
    if sources is not None:
        out["sources"] = sources
    if conformal:
        out["coverage"] = float(test["coverage"])
        out["mean_relative_width"] = float(test["mean_relative_width"])
    return out


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """Run (or resume) the transfer experiment; writes report.md and plots into ``ctx.out``."""
    return _experiment(ctx, "device")


def experiment_kinds(ctx: ExperimentContext) -> dict[str, Any]:
    """``transfer-kinds``: the same runs, but the transfer predictor never pretrains on a device
    of the target's kind (all GPUs, all CPUs or all phones held out together): a new kind of
    device, not a sibling of the sources. Reported per device and per kind."""
    return _experiment(ctx, "kind")


def _experiment(ctx: ExperimentContext, protocol: str) -> dict[str, Any]:
    from latlab.datasets.tables import NB201_MIN_MS
    from latlab.training.data import load_source, training_data

    if ctx.data is None:
        raise DataError("the transfer experiment needs a latency table (--data)")
    start = time.monotonic()
    source = load_source(ctx.data, NB201_MIN_MS)  # the nb201 table's documented floor
    rows = {d: len(training_data(source, d)) for d in source.devices}
    all_devices = list(source.devices)
    if protocol == "kind":
        s = plan_kinds(all_devices, rows, ctx.quick)
    else:
        s = plan(all_devices, rows, ctx.quick)
    runs = RunLog(ctx.out / "runs.jsonl")
    total = len(s.devices) * len(s.ks) * s.seeds * len(MODELS)
    done = 0
    # The models' default parameters are part of the key: a changed default refits.
    from latlab.predictors import make_predictor

    defaults = {m: make_predictor(m).get_params() for m in MODELS}
    setting: dict[str, Any] = {
        "data": str(ctx.data),
        "test_size": s.test_size,
        "models": MODELS,
        "params": defaults,
    }
    if protocol != "device":
        setting["protocol"] = protocol
    tag = config_hash(setting)
    for device in s.devices:
        exclude = (
            [d for d in all_devices if device_kind(d) == device_kind(device)]
            if protocol == "kind"
            else None
        )
        for k in s.ks:
            for seed in range(ctx.seed, ctx.seed + s.seeds):
                for model in MODELS:
                    key = f"{tag}|{device}|{k}|{seed}|{model}"
                    if not runs.done(key):
                        test_size = rows[device] - k
                        if s.test_size is not None:
                            test_size = min(s.test_size, test_size)
                        rec = _run_one(
                            source,
                            ctx.data,
                            device,
                            model,
                            k,
                            seed,
                            test_size,
                            ctx.threads,
                            exclude,
                        )
                        runs.add({"key": key, "device": device, "k": k, "seed": seed,
                                  "model": model, **rec})  # fmt: skip
                        log.info("%s k=%d seed %d %s: rho %.4f", device, k, seed, model,
                                 rec["spearman"])  # fmt: skip
                    done += 1
                    ctx.progress("transfer runs", done, total)
    # Few-shot intervals: the transfer predictor with k = COVERAGE_K, CV+ over its k networks
    # (jackknife+: one network per fold), coverage and width on the same test networks.
    cov_total, cov_done = len(s.devices) * s.seeds * len(COVERAGE_METHODS), 0
    for device in s.devices:
        exclude = (
            [d for d in all_devices if device_kind(d) == device_kind(device)]
            if protocol == "kind"
            else None
        )
        # "sources" replays k-shot transfer on each source with the others: it needs two.
        n_sources = len(all_devices) - len(exclude or [device])
        methods = [m for m in COVERAGE_METHODS if m != "sources" or n_sources >= 2]
        for seed in range(ctx.seed, ctx.seed + s.seeds):
            for method in methods:
                name = f"{MODELS[0]}+{method}"
                key = f"{tag}|{device}|{COVERAGE_K}|{seed}|{name}"
                if not runs.done(key) and rows[device] - COVERAGE_K >= MIN_TEST:
                    test_size = rows[device] - COVERAGE_K
                    if s.test_size is not None:
                        test_size = min(s.test_size, test_size)
                    rec = _run_one(source, ctx.data, device, MODELS[0], COVERAGE_K, seed,
                                   test_size, ctx.threads, exclude, conformal=method)  # fmt: skip
                    runs.add({"key": key, "device": device, "k": COVERAGE_K, "seed": seed,
                              "model": name, **rec})  # fmt: skip
                    log.info("%s k=%d seed %d %s: coverage %.1f %%, width %.0f %%", device,
                             COVERAGE_K, seed, name, rec["coverage"],
                             rec["mean_relative_width"])  # fmt: skip
                cov_done += 1
                ctx.progress("few-shot interval runs", cov_done, cov_total)
    records = [r for r in runs.records.values() if r["key"].startswith(tag + "|")]
    metrics = summarise(records, s, ctx.seed)
    metrics["few_shot_intervals"] = {
        m: summarise_coverage(records, s, m, ctx.seed) for m in COVERAGE_METHODS
    }
    metrics["protocol"] = protocol
    metrics["kinds"] = {d: device_kind(d) for d in s.devices}
    metrics["by_kind"] = by_kind(metrics, s)
    metrics["settings"] = {
        "devices": list(s.devices),
        "ks": list(s.ks),
        "seeds": s.seeds,
        "test_size": s.test_size,
        "models": list(MODELS),
        "quick": s.quick,
        "threads": ctx.threads,
    }
    metrics["seconds"] = time.monotonic() - start
    metrics["run_seconds"] = float(sum(r.get("seconds", 0.0) for r in records))
    plot_rho_vs_k(metrics, ctx.out / "rho_vs_k.png")
    plot_mean_rho_vs_k(metrics, ctx.out / "mean_rho_vs_k.png")
    atomic_write_text(ctx.out / "report.md", report(metrics, ctx))
    return metrics


def summarise(records: list[dict[str, Any]], s: Settings, seed0: int = 0) -> dict[str, Any]:
    """Per model, k and device: rho and MAPE mean ± std over seeds; means over devices."""
    by_key = {(r["device"], r["k"], r["seed"], r["model"]): r for r in records}
    seeds = range(seed0, seed0 + s.seeds)
    results: dict[str, Any] = {}
    for model in MODELS:
        per_k: dict[str, Any] = {}
        for k in s.ks:
            per_dev: dict[str, Any] = {}
            for dev in s.devices:
                rs = [by_key[(dev, k, sd, model)] for sd in seeds if (dev, k, sd, model) in by_key]
                per_dev[dev] = {
                    "spearman": mean_std(r["spearman"] for r in rs),
                    "mape": mean_std(r["mape"] for r in rs),
                }
            means = [v["spearman"]["mean"] for v in per_dev.values()]
            finite = [m for m in means if m is not None and math.isfinite(m)]
            per_k[str(k)] = {
                "devices": per_dev,
                "mean_spearman": float(np.mean(finite)) if finite else None,
                "min_spearman": float(np.min(finite)) if finite else None,
            }
        results[model] = per_k
    targets = {}
    for k, goal in TARGETS.items():
        got = results[MODELS[0]].get(str(k), {}).get("mean_spearman")
        targets[str(k)] = {"target": goal, "measured": got, "met": got is not None and got >= goal}
    return {"results": results, "targets": targets}


def summarise_coverage(
    records: list[dict[str, Any]], s: Settings, method: str, seed0: int = 0
) -> dict[str, Any]:
    """Coverage and mean relative width of the k = 10 intervals of ``method`` per device (mean
    ± std over seeds), their mean over devices, and whether every device is inside the band."""
    per_dev: dict[str, Any] = {}
    name = f"{MODELS[0]}+{method}"
    for dev in s.devices:
        rs = [r for r in records if r["model"] == name and r["device"] == dev
              and seed0 <= r["seed"] < seed0 + s.seeds]  # fmt: skip
        if rs:
            per_dev[dev] = {
                "coverage": mean_std(r["coverage"] for r in rs),
                "width": mean_std(r["mean_relative_width"] for r in rs),
                "runs": [round(r["coverage"], 1) for r in rs],
            }
    means = [v["coverage"]["mean"] for v in per_dev.values()]
    lo, hi = COVERAGE_BAND
    return {
        "k": COVERAGE_K,
        "method": method,
        "confidence": 0.9,
        "band": list(COVERAGE_BAND),
        "devices": per_dev,
        "mean_coverage": float(np.mean(means)) if means else None,
        "mean_width": (
            float(np.mean([v["width"]["mean"] for v in per_dev.values()])) if per_dev else None
        ),
        "all_in_band": bool(means) and all(lo <= c <= hi for c in means),
    }


def by_kind(m: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Per model and k: mean Spearman rho over the devices of each kind."""
    out: dict[str, Any] = {}
    for model, per_k in m["results"].items():
        out[model] = {}
        for k, e in per_k.items():
            groups: dict[str, list[float]] = {}
            for dev, v in e["devices"].items():
                rho = v["spearman"]["mean"]
                if rho is not None and math.isfinite(rho):
                    groups.setdefault(device_kind(dev), []).append(rho)
            out[model][k] = {kind: float(np.mean(v)) for kind, v in sorted(groups.items())}
    return out


# --------------------------------------------------------------------------- plots


_STYLE = {"transfer": ("C0", "o"), "gbm": ("C1", "s"), "flops": ("C2", "^")}


def plot_rho_vs_k(m: dict[str, Any], path: Path) -> None:
    """One panel per device: rho (mean ± std over seeds) against k for every predictor."""
    plt = pyplot()
    devices, ks = m["settings"]["devices"], m["settings"]["ks"]
    cols = min(4, len(devices))
    rows = math.ceil(len(devices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=90, squeeze=False)
    for ax, dev in zip(axes.flat, devices, strict=False):
        for model in MODELS:
            stats = [m["results"][model][str(k)]["devices"][dev]["spearman"] for k in ks]
            mean = np.array([np.nan if st["mean"] is None else st["mean"] for st in stats])
            std = np.array([np.nan if st["std"] is None else st["std"] for st in stats])
            color, marker = _STYLE.get(model, ("k", "."))
            ax.errorbar(ks, mean, yerr=std, color=color, marker=marker, ms=4, capsize=2,
                        lw=1.2, label=model)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_title(dev, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(devices) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.supxlabel("k (target-device networks)", fontsize=9)
    fig.supylabel("Spearman ρ on held-out networks", fontsize=9)
    fig.tight_layout()
    save(fig, path, dpi=None)


def plot_mean_rho_vs_k(m: dict[str, Any], path: Path) -> None:
    """Mean rho over devices against k per predictor, with the targets."""
    plt = pyplot()
    ks = m["settings"]["ks"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for model in MODELS:
        ys = [m["results"][model][str(k)]["mean_spearman"] for k in ks]
        color, marker = _STYLE.get(model, ("k", "."))
        ax.plot(ks, [np.nan if y is None else y for y in ys], color=color, marker=marker,
                label=model)  # fmt: skip
    for k, goal in TARGETS.items():
        ax.plot([k], [goal], "k*", ms=9, label="target" if k == 10 else None)
    ax.axhline(HELP_ANCHOR, color="grey", ls=":", lw=1, label=f"HELP k=10 ({HELP_ANCHOR})")
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (target-device networks)")
    ax.set_ylabel("mean Spearman ρ over devices")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path, dpi=None)


# --------------------------------------------------------------------------- report


def _cell(st: dict[str, Any]) -> str:
    if st["mean"] is None:
        return "–"
    return f"{st['mean']:.3f} ± {st['std']:.3f}" if st["n"] > 1 else f"{st['mean']:.3f}"


def report(m: dict[str, Any], ctx: ExperimentContext) -> str:
    s = m["settings"]
    ks = [str(k) for k in s["ks"]]
    res = m["results"]
    test_set = (
        "all other valid networks of the device"
        if s["test_size"] is None
        else f"{s['test_size']} random held-out networks of the device (all when fewer)"
    )
    kind = m.get("protocol") == "kind"
    lines = [
        "# Few-shot transfer: Spearman ρ against k, per device"
        + (" -- whole device kinds held out" if kind else ""),
        "",
        f"Command: `{ctx.command or 'latlab experiment run transfer'}`  ",
        f"Data: `{ctx.data}`; {len(s['devices'])} device column(s) held out in turn; "
        f"k = {', '.join(ks)}; {s['seeds']} seed(s); test set: {test_set}; "
        f"{'quick' if s['quick'] else 'full'} run: {m['run_seconds']:.0f} s of fitting and "
        f"scoring over all its runs ({m['seconds']:.0f} s in the invocation that wrote this "
        "report; runs already in runs.jsonl are not repeated).",
        "",
        "Protocol: for every device column, k and seed, `latlab train --target DEVICE "
        "--train-size K --val-size 0 --conformal none` trains each predictor on the same k "
        "random networks of that device: `transfer` (`--pretrain` the same table; the device "
        "split removes the target's column, so only its k latencies are used), `gbm` and "
        "`flops` from scratch. Spearman ρ on the held-out networks, mean ± std over seeds. "
        f"Targets: mean ρ ≥ 0.95 at k = 10 and ≥ 0.97 at k = 50 (HELP: {HELP_ANCHOR} at "
        "k = 10).",
        "",
        *(
            [
                "Held out by kind: `transfer` pretrains only on devices of *other* kinds "
                "(`target_exclude` = every device of the target's kind: gpu, cpu, phone).",
                "",
            ]
            if kind
            else []
        ),
        "## Mean Spearman ρ over devices (min over devices in brackets)",
        "",
    ]
    rows = []
    for model in MODELS:
        cells = [model]
        for k in ks:
            e = res[model][k]
            cells.append(
                "–"
                if e["mean_spearman"] is None
                else f"{e['mean_spearman']:.3f} ({e['min_spearman']:.3f})"
            )
        rows.append(cells)
    lines += [markdown_table(["predictor"] + [f"k={k}" for k in ks], rows), ""]
    for k, t in m["targets"].items():
        if k not in ks:
            continue
        verdict = "met" if t["met"] else "**missed**"
        lines.append(f"- target mean ρ ≥ {t['target']} at k = {k}: {verdict} "
                     f"({t['measured']:.3f})")  # fmt: skip
    kinds = sorted({k for per in m.get("by_kind", {}).get(MODELS[0], {}).values() for k in per})
    if kinds:
        rows = [
            [model, kd, *(f"{m['by_kind'][model][k].get(kd, float('nan')):.3f}" for k in ks)]
            for model in MODELS
            for kd in kinds
        ]
        lines += ["", "## Mean Spearman ρ per device kind", ""]
        lines += [markdown_table(["predictor", "kind"] + [f"k={k}" for k in ks], rows)]
    lines += ["", "![rho vs k](mean_rho_vs_k.png)", "", "## Per device", ""]
    for model in MODELS:
        lines += [f"### {model}", ""]
        rows = [
            [dev] + [_cell(res[model][k]["devices"][dev]["spearman"]) for k in ks]
            for dev in s["devices"]
        ]
        lines += [markdown_table(["device"] + [f"ρ k={k}" for k in ks], rows), ""]
    lines += ["![rho vs k per device](rho_vs_k.png)", ""]
    mape_rows = []
    for model in MODELS:
        cells = [model]
        for k in ks:
            v = [res[model][k]["devices"][d]["mape"]["mean"] for d in s["devices"]]
            v = [x for x in v if x is not None]
            cells.append(f"{np.mean(v):.1f}" if v else "–")
        mape_rows.append(cells)
    lines += ["## Mean MAPE over devices (%)", "", markdown_table(["predictor", *ks], mape_rows)]
    lines.append("")
    for c in (m.get("few_shot_intervals") or {}).values():
        lines += _coverage_lines(c)
    return "\n".join(lines)


_COVERAGE_TEXT = {
    "cv+": "(the default of `latlab train` on a table this small): CV+ with one network per "
    "fold (jackknife+) over the k networks, each refitted without one",
    "sources": "(`latlab.predictors.conformal.sources`): the same k-shot transfer replayed "
    "on each source device of the pretrain table (2 draws of k networks, 200 test networks "
    "each), absolute log residuals divided by the pseudo-target's leave-one-out difficulty; "
    "the target's interval is that quantile times its own difficulty",
}


def _coverage_lines(c: dict[str, Any] | None) -> list[str]:
    """The report's few-shot interval section of one method."""
    if not c or not c["devices"]:
        return []
    lo, hi = c["band"]
    lines = [
        f"## Few-shot intervals: k = {c['k']}, {c['method']} at {c['confidence']:.0%}",
        "",
        f"`latlab train ... --predictor transfer --train-size {c['k']} --conformal "
        f"{c['method']}` {_COVERAGE_TEXT.get(c['method'], '')}; coverage and mean "
        "relative width (upper − lower) / measured on the same held-out networks as above, "
        f"mean ± std over seeds. Target: coverage within {lo:g}–{hi:g} % on every device.",
        "",
    ]
    rows = [
        [dev, _cell(v["coverage"]), ", ".join(f"{x:.1f}" for x in v["runs"]), _cell(v["width"])]
        for dev, v in c["devices"].items()
    ]
    lines += [markdown_table(["device", "coverage %", "per seed", "mean width %"], rows), ""]
    verdict = "met" if c["all_in_band"] else "**missed**"
    lines += [
        f"- mean coverage {c['mean_coverage']:.1f} %, mean width {c['mean_width']:.0f} % of "
        f"the latency; every device within {lo:g}–{hi:g} %: {verdict}",
        "",
    ]
    return lines
