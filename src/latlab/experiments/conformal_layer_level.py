"""Layer-level CM_TV / CM_LV / CM_O on this machine's layer benchmarks (part of ``conformal``).

Wess et al. (IEEE Access 2024) put their conformal metrics on random-forest *layer* models and
report coverage and width per layer type, interval bands along a parameter sweep (their
Figure 9) and the per-layer intervals of one network (their Figure 13). This module measures
the layer benchmarks it needs on this machine and reproduces those three views:

1. **Benchmarks** (resumable, in the SQLite store ``bench.db`` of the output folder): random
   single-layer ``kernel:`` benchmarks of six layer types (conv, dwconv, fc, maxpool, avgpool,
   add; :func:`latlab.datasets.bench.suites.random_configs`), the session probe, a sweep of
   conv output channels, and one zoo network end to end; onnxruntime, one thread, a short
   protocol (benchmarks are many and small).
2. **Coverage per layer type**: for each seed the benchmarks are split at random 50 / 25 / 25 %
   into training (the ``statistical`` layer-wise predictor: ANNETTE's per-layer-type random
   forests), calibration and test. ``cm-tv``, ``cm-lv``, ``cm-o`` (and ``split`` for reference)
   wrap the same fitted base, calibrate on the calibration benchmarks (difficulty models on the
   training benchmarks) and are scored on the test benchmarks, grouped by layer type (test
   points pooled over seeds). The calibration is marginal over all types, so per-type coverage
   is not guaranteed: a type the base predicts worse than average under-covers.
3. **Sweep** (Figure 9): the seed-0 models along ``conv`` output channels ``f`` (input 28x28x64,
   3x3 kernel; never trained or calibrated on): point prediction, the three 90 % bands and the
   measured latencies.
4. **Per-layer intervals of one network** (Figure 13): each mapped layer of the zoo network
   (``predict_layers``) becomes its single-layer benchmark reference (same input shape,
   kernel, stride, channels), whose 90 % interval each method gives.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from latlab.experiments.common import markdown_table
from latlab.experiments.context import ExperimentContext
from latlab.experiments.plots import save
from latlab.training.plots import pyplot

log = logging.getLogger(__name__)

LAYER_TYPES: tuple[str, ...] = ("conv", "dwconv", "fc", "maxpool", "avgpool", "add")
LAYER_METHODS: tuple[str, ...] = ("cm-tv", "cm-lv", "cm-o", "split")
CONFIDENCES: tuple[float, ...] = (0.8, 0.9, 0.95)
MAIN = 0.9
BASE = "statistical"
SESSION_PROBE = "kernel:padding?c=1"
SWEEP_BASE = {"h": 28, "c": 64, "k": 3}
NETWORK = "zoo:mobilenet_v2"


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"per_type": 30, "seeds": 4, "sweep_f": (8, 16, 32, 64, 128, 256, 512)}
    return {
        "per_type": 150,
        "seeds": 20,
        "sweep_f": (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
    }


def _protocol(threads: int) -> Any:
    from latlab.datasets.measure import MeasureConfig

    return MeasureConfig(
        threads=threads,
        repeats=30,
        min_repeats=5,
        time_budget_s=0.15,
        max_warmup=30,
        max_warmup_s=0.2,
        max_remeasures=0,
    )


def layer_type(ref: str) -> str:
    """The layer type of a single-op ``kernel:`` reference (``kernel:conv?...`` -> conv)."""
    return ref.split(":", 1)[1].split("?", 1)[0]


def kernel_ref_of_layer(layer: Any) -> str | None:
    """The single-layer benchmark reference of an IR layer (None when no benchmark type fits).

    The kernel grammar pads convolutions and pooling "same" (``(k-1)//2``), as the networks of
    the zoo do; the reference carries the layer's input shape, kernel, stride and channels.
    """
    from latlab.datasets.bench.kernels import kernel_reference

    shape = layer.input_shape
    kind, op = layer.kind, layer.op
    try:
        if kind == "fc":
            c = int(math.prod(shape[1:]))
            f = int(layer.output_shape[-1])
            return kernel_reference("fc", c=c, f=f)
        if len(shape) != 4:
            return None
        _, c, h, w = (int(v) for v in shape)
        k = int((layer.attrs.get("kernel") or [1])[0])
        s = int((layer.attrs.get("stride") or [1])[0])
        hw = {"h": h, "w": w} if w != h else {"h": h}
        if kind in ("conv", "dwconv"):
            groups = int(layer.attrs.get("groups", 1))
            f = int(layer.output_shape[1])
            if groups > 1 and groups == c and f == c:
                return kernel_reference("dwconv", c=c, k=k, s=s, **hw)
            return kernel_reference("conv", c=c, f=f, k=k, s=s, g=groups, **hw)
        if op in ("MaxPool", "AveragePool"):
            chain = "maxpool" if op == "MaxPool" else "avgpool"
            return kernel_reference(chain, c=c, k=k, s=s, **hw)
        if op == "Add":
            return kernel_reference("add", c=c, **hw)
    except (ValueError, TypeError, IndexError):
        return None
    return None


def measure(refs: list[str], ctx: ExperimentContext, what: str) -> dict[str, float]:
    """Median latency (ms) of each reference on this machine, through ``ctx.out/bench.db``."""
    from latlab.datasets.measure import default_device_name
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.store import Store

    config = _protocol(ctx.threads)
    device = default_device_name(config.backend, ctx.threads)
    store = Store(str(ctx.out / "bench.db"))
    try:
        measure_many(
            refs,
            config,
            store,
            device,
            anchor=None,
            progress=lambda e: ctx.progress(what, e.done, e.total),
        )
        df = store.measurements([device], config)
    finally:
        store.close()
    df = df[df["network"].isin(set(refs))].drop_duplicates("network", keep="last")
    got = dict(zip(df["network"], df["median_ms"].astype(float), strict=True))
    return {r: got[r] for r in refs if r in got and math.isfinite(got[r]) and got[r] > 0}


def run_layer_level(ctx: ExperimentContext) -> dict[str, Any]:
    """Measure (or resume), evaluate, plot; returns the layer-level metrics."""
    from latlab.datasets.bench.kernels import kernel_reference
    from latlab.datasets.bench.suites import random_configs
    from latlab.datasets.measure import default_device_name

    s = _settings(ctx.quick)
    rng = np.random.default_rng(ctx.seed)
    suite = [SESSION_PROBE]
    for t in LAYER_TYPES:
        suite += random_configs(t, s["per_type"], rng)
    sweep_f = {kernel_reference("conv", f=f, **SWEEP_BASE): f for f in s["sweep_f"]}
    sweep = [r for r in sweep_f if r not in set(suite)]
    measured = measure(suite + sweep, ctx, "layer benchmarks")
    net_ms = measure([NETWORK], ctx, "network").get(NETWORK)
    nets = [r for r in suite if r in measured and r != SESSION_PROBE]
    if SESSION_PROBE not in measured or len(nets) < 40:
        from latlab.errors import MeasurementError

        raise MeasurementError(
            f"only {len(nets)} layer benchmarks measured on this machine (need 40 and the "
            "session probe): see the log for the failures"
        )
    y = np.array([measured[r] for r in nets])
    types = np.array([layer_type(r) for r in nets])

    per_seed: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for seed in range(ctx.seed, ctx.seed + s["seeds"]):
        rec, models = _one_seed(nets, y, measured[SESSION_PROBE], seed)
        per_seed.append(rec)
        if not first:
            first = models
        ctx.progress("layer conformal seeds", seed - ctx.seed + 1, s["seeds"])
    per_type = _aggregate(per_seed, y, types)
    sweep_rows = _sweep(first, [r for r in sweep if r in measured], measured, sweep_f)
    layer_rows = _network_layers(first)
    plot_per_type(per_type, ctx.out / "layer_coverage_by_type.png")
    plot_sweep(sweep_rows, ctx.out / "layer_sweep_bands.png")
    plot_network_layers(layer_rows, net_ms, ctx.out / "network_layer_intervals.png")
    return {
        "device": default_device_name("onnxruntime", ctx.threads),
        "base": BASE,
        "benchmarks": len(nets),
        "benchmarks_per_type": {t: int((types == t).sum()) for t in LAYER_TYPES},
        "seeds": s["seeds"],
        "per_type": per_type,
        "sweep": {
            "parameter": "conv output channels f",
            "base": SWEEP_BASE,
            "points": sweep_rows,
            "coverage_90": {m: _share_inside(sweep_rows, m) for m in LAYER_METHODS},
        },
        "network": {
            "reference": NETWORK,
            "measured_ms": net_ms,
            "predicted_ms": first["network_point"],
            "layers": layer_rows,
        },
    }


def _share_inside(rows: list[dict[str, Any]], method: str) -> float | None:
    """% of the sweep's measured points inside ``method``'s 90 % band."""
    return float(100 * np.mean([r[method]["inside"] for r in rows])) if rows else None


def _one_seed(
    nets: list[str], y: np.ndarray, probe_ms: float, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    from latlab.predictors import make_predictor
    from latlab.predictors.conformal import make_conformal

    perm = np.random.default_rng([seed, 13]).permutation(len(nets))
    n_tr, n_ca = len(nets) // 2, len(nets) // 4
    tr, ca, te = perm[:n_tr], perm[n_tr : n_tr + n_ca], perm[n_tr + n_ca :]
    pick = lambda idx: [nets[i] for i in idx]  # noqa: E731
    base = make_predictor(BASE, random_state=seed).fit(
        [SESSION_PROBE, *pick(tr)], np.concatenate([[probe_ms], y[tr]])
    )
    point = base.predict(pick(te))
    rec: dict[str, Any] = {"test": te.tolist(), "point": point.tolist(), "methods": {}}
    wrappers = {}
    for method in LAYER_METHODS:
        cp = make_conformal(method, base).calibrate(
            pick(ca), y[ca], train_networks=pick(tr), train_latencies_ms=y[tr]
        )
        wrappers[method] = cp
        rec["methods"][method] = {
            str(c): [b.tolist() for b in cp.predict_interval(pick(te), c, point_ms=point)]
            for c in CONFIDENCES
        }
    return rec, {"base": base, "wrappers": wrappers}


def _aggregate(per_seed: list[dict[str, Any]], y: np.ndarray, types: np.ndarray) -> dict[str, Any]:
    """Coverage (%) and mean relative width (%) per layer type, test points pooled over seeds."""
    out: dict[str, Any] = {}
    idx = np.concatenate([np.asarray(r["test"], dtype=int) for r in per_seed])
    groups = {t: types[idx] == t for t in LAYER_TYPES}
    groups["all"] = np.ones(len(idx), dtype=bool)
    yt = y[idx]
    point = np.concatenate([np.asarray(r["point"]) for r in per_seed])
    for name, mask in groups.items():
        entry: dict[str, Any] = {
            "test_points": int(mask.sum()),
            "point_mape": float(100 * np.mean(np.abs(point[mask] - yt[mask]) / yt[mask]))
            if mask.any()
            else None,
        }
        for method in LAYER_METHODS:
            entry[method] = {}
            for c in CONFIDENCES:
                low = np.concatenate([r["methods"][method][str(c)][0] for r in per_seed])
                high = np.concatenate([r["methods"][method][str(c)][1] for r in per_seed])
                if not mask.any():
                    entry[method][str(c)] = {"coverage": None, "mean_relative_width": None}
                    continue
                inside = (yt[mask] >= low[mask]) & (yt[mask] <= high[mask])
                width = (high[mask] - low[mask]) / yt[mask]
                entry[method][str(c)] = {
                    "coverage": float(100 * inside.mean()),
                    "mean_relative_width": float(100 * np.mean(width)),
                }
        out[name] = entry
    return out


def _sweep(
    models: dict[str, Any], refs: list[str], measured: dict[str, float], fs: dict[str, int]
) -> list[Any]:
    if not refs:
        return []
    point = models["base"].predict(refs)
    rows: list[dict[str, Any]] = []
    bands = {
        m: cp.predict_interval(refs, MAIN, point_ms=point) for m, cp in models["wrappers"].items()
    }
    for i, ref in enumerate(refs):
        row: dict[str, Any] = {"f": fs[ref], "reference": ref, "measured_ms": measured[ref],
                               "point_ms": float(point[i])}  # fmt: skip
        for m, (low, high) in bands.items():
            row[m] = {
                "low_ms": float(low[i]),
                "high_ms": float(high[i]),
                "inside": bool(low[i] <= measured[ref] <= high[i]),
            }
        rows.append(row)
    rows.sort(key=lambda r: r["f"])
    return rows


def _network_layers(models: dict[str, Any]) -> list[dict[str, Any]]:
    from latlab.datasets.references import resolve

    base = models["base"]
    graph = resolve(NETWORK)
    frame = base.predict_layers([graph])
    models["network_point"] = float(base.predict([graph])[0])
    by_name = {la.name: la for la in graph.layers}
    refs = [kernel_ref_of_layer(by_name[h]) for h in frame["head"]]
    known = [r for r in refs if r is not None]
    intervals = {}
    if known:
        point = base.predict(known)
        for m, cp in models["wrappers"].items():
            low, high = cp.predict_interval(known, MAIN, point_ms=point)
            intervals[m] = dict(zip(known, zip(low, high, strict=True), strict=True))
        kp = dict(zip(known, point, strict=True))
    rows: list[dict[str, Any]] = []
    for i, (ref, head) in enumerate(zip(refs, frame["head"], strict=True)):
        row: dict[str, Any] = {
            "group": i,
            "head": head,
            "kind": str(frame["kind"].iloc[i]),
            "predicted_ms": float(frame["predicted_ms"].iloc[i]),
            "benchmark": ref,
        }
        if ref is not None:
            row["benchmark_point_ms"] = float(kp[ref])
            for m in intervals:
                low, high = intervals[m][ref]
                row[m] = {"low_ms": float(low), "high_ms": float(high),
                          "relative_width": float(100 * (high - low) / kp[ref])}  # fmt: skip
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- plots


_COLORS = {"cm-tv": "C0", "cm-lv": "C1", "cm-o": "C2", "split": "C7"}


def plot_per_type(per_type: dict[str, Any], path: Path) -> None:
    """Coverage and mean width at 90 % per layer type and method (grouped bars)."""
    plt = pyplot()
    names = [t for t in per_type if per_type[t]["test_points"]]
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    w = 0.8 / len(LAYER_METHODS)
    for j, m in enumerate(LAYER_METHODS):
        cov = [per_type[t][m][str(MAIN)]["coverage"] for t in names]
        wid = [per_type[t][m][str(MAIN)]["mean_relative_width"] for t in names]
        a.bar(x + (j - 1.5) * w, cov, w, color=_COLORS[m], label=m)
        b.bar(x + (j - 1.5) * w, wid, w, color=_COLORS[m], label=m)
    a.axhspan(87, 93, color="green", alpha=0.12, label="90 ± 3 %")
    a.set_ylim(0, 105)
    a.set_ylabel("coverage at 90 % (%)")
    b.set_ylabel("mean relative width (%)")
    b.set_yscale("log")
    for ax in (a, b):
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    a.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save(fig, path, dpi=None)


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """Figure 9: 90 % bands of each method along the conv output-channel sweep."""
    plt = pyplot()
    methods = ("cm-tv", "cm-lv", "cm-o")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=90, sharey=True)
    f = [r["f"] for r in rows]
    for ax, m in zip(axes, methods, strict=True):
        if rows:
            ax.fill_between(f, [r[m]["low_ms"] for r in rows], [r[m]["high_ms"] for r in rows],
                            color=_COLORS[m], alpha=0.25, label="90 % interval")  # fmt: skip
            ax.plot(f, [r["point_ms"] for r in rows], color=_COLORS[m], lw=1.5, label="predicted")
            ax.plot(f, [r["measured_ms"] for r in rows], "k.", ms=6, label="measured")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(m.upper().replace("-", "_"), fontsize=10)
        ax.set_xlabel("conv output channels f (28x28x64 input, 3x3)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=None)


def plot_network_layers(rows: list[dict[str, Any]], net_ms: float | None, path: Path) -> None:
    """Figure 13: per-layer 90 % interval widths of one network's mapped layers."""
    plt = pyplot()
    rows = [r for r in rows if r.get("benchmark")]
    methods = ("cm-tv", "cm-lv", "cm-o")
    x = np.arange(len(rows))
    fig, (a, b) = plt.subplots(2, 1, figsize=(max(8, 0.16 * len(rows)), 6), dpi=90, sharex=True)
    for j, m in enumerate(methods):
        if not rows:
            break
        p = np.array([r["benchmark_point_ms"] for r in rows])
        low = np.array([r[m]["low_ms"] for r in rows])
        high = np.array([r[m]["high_ms"] for r in rows])
        a.errorbar(x + (j - 1) * 0.25, p, yerr=[p - low, high - p], fmt="o", ms=2, lw=0.8,
                   color=_COLORS[m], label=m)  # fmt: skip
        b.bar(x + (j - 1) * 0.25, [r[m]["relative_width"] for r in rows], 0.25, color=_COLORS[m],
              label=m)  # fmt: skip
    a.set_yscale("log")
    a.set_ylabel("layer latency (ms)\npoint + 90 % interval")
    title = f"{NETWORK}: per-layer intervals"
    if net_ms is not None:
        title += f" (network measured end to end: {net_ms:.2f} ms)"
    a.set_title(title, fontsize=10)
    b.set_ylabel("relative width (%)")
    b.set_xlabel("mapped layer")
    b.set_xticks(x)
    b.set_xticklabels([r["kind"] for r in rows], rotation=90, fontsize=6)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=None)


# --------------------------------------------------------------------------- report


def report_section(m: dict[str, Any]) -> list[str]:
    """The layer-level part of ``report.md``."""
    c = str(MAIN)
    lines = [
        "## Layer level: per layer type (this machine)",
        "",
        f"Device `{m['device']}` (onnxruntime, one thread; this machine, measured while others "
        f"worked on it). {m['benchmarks']} single-layer benchmarks "
        f"({', '.join(f'{t} {n}' for t, n in m['benchmarks_per_type'].items())}); per seed "
        f"50 / 25 / 25 % train / calibration / test; {m['seeds']} seeds, test points pooled. "
        f"Base: `{m['base']}` (ANNETTE's per-layer-type random forests). Coverage (%) / mean "
        f"relative width (%) at {MAIN:.0%}; the calibration is marginal over all types, so "
        "per-type coverage is not guaranteed.",
        "",
    ]
    header = ["layer type", "test points", "point MAPE %"] + [m_ for m_ in LAYER_METHODS]
    rows = []
    for t, e in m["per_type"].items():
        if not e["test_points"]:
            continue
        rows.append(
            [t, str(e["test_points"]), f"{e['point_mape']:.1f}"]
            + [
                f"{e[meth][c]['coverage']:.1f} / {e[meth][c]['mean_relative_width']:.0f}"
                for meth in LAYER_METHODS
            ]
        )
    lines += [markdown_table(header, rows), ""]
    allc = m["per_type"]["all"]
    lines += [
        "Coverage over all layer types at 80 / 90 / 95 %: "
        + "; ".join(
            f"{meth} " + " / ".join(f"{allc[meth][str(cc)]['coverage']:.1f}" for cc in CONFIDENCES)
            for meth in LAYER_METHODS
        )
        + ".",
        "",
        "![coverage by layer type](layer_coverage_by_type.png)",
        "",
        "### Interval bands along a sweep (their Figure 9)",
        "",
        f"`conv` with a {SWEEP_BASE['h']}x{SWEEP_BASE['h']}x{SWEEP_BASE['c']} input and a "
        f"{SWEEP_BASE['k']}x{SWEEP_BASE['k']} kernel, output channels f swept; the seed-0 models "
        "(never trained on the sweep). Measured points inside the 90 % band: "
        + ", ".join(
            f"{meth} {v:.0f} %" for meth, v in m["sweep"]["coverage_90"].items() if v is not None
        )
        + f" of {len(m['sweep']['points'])}.",
        "",
        "![sweep bands](layer_sweep_bands.png)",
        "",
        "### Per-layer intervals of one network (their Figure 13)",
        "",
    ]
    net = m["network"]
    layers = [r for r in net["layers"] if r.get("benchmark")]
    meas = f"{net['measured_ms']:.2f} ms" if net["measured_ms"] is not None else "not measured"
    lines.append(
        f"`{net['reference']}`: {len(net['layers'])} mapped layers, {len(layers)} with a "
        f"benchmark type; predicted {net['predicted_ms']:.2f} ms (sum of layers + overhead), "
        f"measured end to end {meas}. Median relative width of the layers' 90 % intervals: "
        + ", ".join(
            f"{meth} {np.median([r[meth]['relative_width'] for r in layers]):.0f} %"
            for meth in ("cm-tv", "cm-lv", "cm-o")
            if layers
        )
        + "."
    )
    lines += ["", "![per-layer intervals](network_layer_intervals.png)", ""]
    return lines
