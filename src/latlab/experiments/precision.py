"""``latlab experiment run precision``: FP32 and INT8 networks measured and predicted.

Real networks (``zoo:``, CNNs and transformers), never used in training, are measured on this
machine at FP32 and as statically quantised INT8 QDQ models (:mod:`latlab.encoders.quantize`,
onnxruntime, one thread), and predicted three ways:

* **fp32** -- the kernel-level predictor (:mod:`latlab.predictors.kernel`) trained on FP32
  kernels profiled in context (the ``context`` bench suite of generated networks);
* **int8** -- the same predictor trained on the INT8 kernels onnxruntime executes for the
  quantised versions of the same generated networks and of single-layer benchmarks of the
  kernel types real networks run (:func:`kernel_networks`; ``latlab bench --precision
  int8``; at FP32 the grouped convolutions among them, see :data:`KERNEL_TYPES_AT`);
* **int8 from fp32** -- cross-precision (``cross-precision``, :mod:`latlab.predictors.precision`):
  INT8 kernel models fitted on only ``k`` INT8 networks (their end-to-end latencies and
  profiles), the kernels they do not cover costed by the FP32 kernel model times their kernel
  group's INT8/FP32 ratio; also scored on the generated INT8 networks outside the ``k``.

The report gives per network the measured and predicted latencies, the measured and predicted
INT8/FP32 speed-up, and which kernel classes gain least (from profiles of both versions of
each held-out network). Training uses generated networks only. Everything is kept in
``DIR/bench.db`` (the bench store): a re-run resumes. Timings are taken on whatever load the
machine has; the report records the load average.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from latlab.experiments.common import dump_json, markdown_table
from latlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

#: Issue targets (INT8 networks never used in training).
TARGET_MAPE = 12.0
TARGET_RHO = 0.97
TARGET_SPEEDUP_ERR = 10.0
TARGET_FEW_SHOT_MAPE = 15.0


@dataclass(frozen=True)
class Settings:
    context: int  # generated networks of the context suite, per precision
    few_shot: int  # INT8 networks the cross-precision model sees
    zoo: tuple[str, ...]
    kernels: int = 0  # single-layer kernel: benchmarks (of KERNEL_TYPES), per precision


#: Single-layer benchmark types whose kernels real CNNs and transformers execute (at int8:
#: QLinearConv dense, depthwise and grouped, QGemm, QLinearMatMul, QLinearSoftmax, the float
#: Erf and LayerNormalization between QDQ pairs, QLinearAdd, pools).
KERNEL_TYPES = ("conv", "dwconv", "fc", "linear", "bmm", "softmax", "gelu", "ln", "add",
                "gpool", "maxpool", "gconv")  # fmt: skip
#: Precision -> the kernel benchmark types its predictor also trains on. At INT8 all: they give
#: QLinearSoftmax, Erf and QLinearMatMul the points a model needs (-91/-85/-62 % -> +9/+3/0 %).
#: At FP32 grouped convolutions only: the context networks cover every other family the
#: held-out networks run (1 grouped convolution in the first 20, so RegNet's were costed by a
#: model of a handful of points: -44 % on the Xeon), and isolated single-layer dense
#: convolutions (warm caches, no NCHWc neighbours) pulled the FP32 conv model low (ResNet-18's
#: profiled convolutions predicted -17 % instead of -4 %, quick run, load ~4.5); grouped ones
#: are a family of their own (``Conv/grouped``), so they cannot.
KERNEL_TYPES_AT: dict[str, tuple[str, ...]] = {"int8": KERNEL_TYPES, "fp32": ("gconv",)}
#: Cap on a kernel benchmark's FLOPs here (the suite's own cap, 4e9, is 25 ms a run).
KERNEL_MAX_FLOPS = 4e8

QUICK = Settings(
    context=10,
    kernels=36,
    few_shot=10,
    zoo=("zoo:resnet18@112", "zoo:mobilenet_v2@112", "zoo:vit_s16@112"),
)
FULL = Settings(
    context=120,
    kernels=360,
    few_shot=20,
    zoo=(
        "zoo:resnet18", "zoo:resnet50@160", "zoo:mobilenet_v2", "zoo:mobilenet_v3_large",
        "zoo:efficientnet_b0", "zoo:squeezenet1_1", "zoo:regnet_y_1_6gf@160", "zoo:vit_s16",
        "zoo:deit_s16", "zoo:bert_medium", "zoo:t5_small_encoder",
    ),
)  # fmt: skip

#: Report classes of executed kernels (finer than the speed-up model's classes).
_REPORT = {
    "QuantizeLinear": "quantise/dequantise",
    "DequantizeLinear": "quantise/dequantise",
    "Transpose": "layout",
    "ReorderInput": "layout",
    "ReorderOutput": "layout",
    "Reshape": "layout",
}


def report_class(op: str, family: str) -> str:
    """What a kernel is, for the "which layers gain least" table."""
    from latlab.predictors.precision import kernel_class

    base = op.rsplit(".", 1)[-1]
    if base in _REPORT:
        return _REPORT[base]
    cls = kernel_class(family)
    if cls != "other":
        return cls
    if "Norm" in base:
        return "normalisation"
    if "Softmax" in base:
        return "softmax"
    if "Pool" in base:
        return "pooling"
    return "elementwise/other"


def _profiled_classes(ref: str, precision: str, threads: int, timer: str) -> dict[str, float]:
    """Measured kernel time (ms) per report class of one network at one precision."""
    from latlab.datasets.bench.profile import profile_network

    prof = profile_network(ref, threads=threads, runs=20, warmup=3, time_budget_s=1.0,
                           precision=precision, timer=timer)  # fmt: skip
    out: dict[str, float] = defaultdict(float)
    for k in prof.kernels:
        t = prof.node_us(k.index)
        if t == t:
            out[report_class(k.op, k.family)] += t / 1e3
    return dict(out)


def training_networks(count: int, seed: int) -> list[str]:
    """The context suite's first networks; below 30, the last two replaced by the two of the
    suite's first 30 with the most depthwise convolutions: a family needs 12 kernels for a
    model of its own, and the first 10 networks hold 3 depthwise convolutions (MobileNet's
    INT8 depthwise kernels then fell to the roofline fallback, 4x too fast)."""
    from latlab.datasets.bench.context import initial_references
    from latlab.datasets.references import resolve

    pool = initial_references(max(2 * count, 60), seed)
    refs = pool[:count]
    if count >= 30:
        return refs
    rest = pool[count - 2 : 30]
    dw = {r: sum(la.kind == "dwconv" for la in resolve(r).layers) for r in rest}
    return refs[: count - 2] + sorted(rest, key=lambda r: -dw[r])[:2]


def kernel_networks(count: int, seed: int) -> dict[str, list[str]]:
    """Type -> single-layer benchmarks, ``count`` split evenly over :data:`KERNEL_TYPES` (the
    kernel suite's sweeps and random configurations, up to :data:`KERNEL_MAX_FLOPS`): every
    kernel family of the held-out networks seen alone (at the precisions of
    :data:`KERNEL_TYPES_AT`)."""
    from latlab.datasets.bench.kernels import resolve_kernel
    from latlab.datasets.bench.suites import SESSION_PROBE, kernel_suite

    if count <= 0:
        return {}
    per = -(-count // len(KERNEL_TYPES))
    out: dict[str, list[str]] = {}
    for t in KERNEL_TYPES:  # a type's references may name its chain (gconv: conv+relu?...&g=)
        refs = [r for r in kernel_suite(8 * per, seed, types=[t]) if r != SESSION_PROBE
                and resolve_kernel(r)[1].totals.flops <= KERNEL_MAX_FLOPS]  # fmt: skip
        step = max(1, len(refs) // per)
        out[t] = refs[::step][:per]
    return out


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from latlab.training.metrics import regression_metrics

    return regression_metrics(y, p)


def experiment(ctx: Any) -> dict[str, Any]:
    """Run the precision experiment (see the module docstring)."""
    from latlab.datasets.bench.campaign import BENCH_CONFIG, run_bench
    from latlab.datasets.measure import default_device_name, with_precision
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.store import Store
    from latlab.predictors.base import make_predictor

    s = QUICK if ctx.quick else FULL
    out = Path(ctx.out)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    store = Store(str(out / "bench.db"))
    url = store.url.render_as_string(hide_password=False)
    refs = training_networks(s.context, ctx.seed)
    krefs = kernel_networks(s.kernels, ctx.seed)
    base = default_device_name("onnxruntime", ctx.threads)
    devices = {p: with_precision(base, p) for p in ("fp32", "int8")}
    # one thread: the thread clock, so that other processes on a shared machine are not timed
    timer = "thread" if ctx.threads == 1 else "wall"
    configs = {
        p: replace(BENCH_CONFIG, threads=ctx.threads, precision=p, timer=timer) for p in devices
    }
    kernel_refs = {p: [r for t in types for r in krefs.get(t, [])]
                   for p, types in KERNEL_TYPES_AT.items()}  # fmt: skip
    steps = 2 * (len(refs) + len(s.zoo)) + sum(len(k) for k in kernel_refs.values())
    done = 0
    predictors: dict[str, Any] = {}
    train_y: dict[str, np.ndarray] = {}
    measured: dict[str, np.ndarray] = {}
    load_seen: list[float] = []
    for p, dev in devices.items():
        cfg = configs[p]
        ctx.progress(f"context suite at {p}", done, steps)
        res = run_bench("context", store, dev, threads=ctx.threads, config=cfg, references=refs)
        done += len(refs)
        ok = [r for r in refs if r not in res.failed]
        if kernel_refs.get(p):  # single kernels, each profiled (at int8 quantised)
            ctx.progress(f"kernel benchmarks at {p}", done, steps)
            kres = run_bench("kernels", store, dev, threads=ctx.threads, config=cfg,
                             references=kernel_refs[p])  # fmt: skip
            done += len(kernel_refs[p])
            ok += [r for r in kres.references if r not in kres.failed]
        frame = store.export_table(devices=[dev], protocol=cfg).set_index("network")
        ok = [r for r in ok if r in frame.index and frame.loc[r, dev] == frame.loc[r, dev]]
        train_y[p] = frame.loc[ok, dev].to_numpy(dtype=float)
        model = make_predictor("kernel", store=url, device=dev, random_state=ctx.seed)
        model.fit(ok, train_y[p])
        predictors[p] = (model, ok)
        ctx.progress(f"zoo at {p}", done, steps)
        result = measure_many(list(s.zoo), cfg, store, dev, anchor=None)
        load_seen += [float(m.load.get("loadavg", [0.0])[0]) for m in result.measured if m.load]
        done += len(s.zoo)
        table = store.export_table(devices=[dev], protocol=cfg, networks=list(s.zoo))
        measured[p] = table.set_index("network").loc[list(s.zoo), dev].to_numpy(dtype=float)
    zoo = list(s.zoo)
    kp32, _ = predictors["fp32"]
    kp8, refs8 = predictors["int8"]  # the INT8-trained predictor and its networks
    pred32 = kp32.predict(zoo)
    pred8 = kp8.predict(zoo)
    few = refs8[: s.few_shot]
    cross = make_predictor("cross-precision", store=url, device=devices["int8"],
                           source_device=devices["fp32"], random_state=ctx.seed)  # fmt: skip
    cross.fit(few, train_y["int8"][: len(few)])
    pred8x = cross.predict(zoo)
    # the generated INT8 networks the cross-precision model did not see (whole networks, not
    # single-kernel benchmarks): a second held-out set, of the kind the model was designed on
    rest = [i for i, r in enumerate(refs8) if i >= len(few) and not r.startswith("kernel:")]
    rest_y = train_y["int8"][rest]
    rest_p = cross.predict([refs8[i] for i in rest]) if rest else np.zeros(0)
    m32, m8 = measured["fp32"], measured["int8"]
    speed = m32 / m8
    speed_direct = pred32 / pred8
    speed_cross = pred32 / pred8x
    ctx.progress("profiling the held-out networks", done, steps)
    gains: dict[str, dict[str, dict[str, float]]] = {}
    for ref in zoo:
        c32 = _profiled_classes(ref, "fp32", ctx.threads, timer)
        c8 = _profiled_classes(ref, "int8", ctx.threads, timer)
        gains[ref] = {"fp32_ms": c32, "int8_ms": c8}
    from latlab.datasets.bench.kernels_quant import executed_precision

    prec = {ref: executed_precision(ref, ctx.threads) for ref in zoo}
    load_end = os.getloadavg()
    metrics: dict[str, Any] = {
        "fp32": _metrics(m32, pred32),
        "int8": _metrics(m8, pred8),
        "int8_from_fp32": _metrics(m8, pred8x),
        "int8_from_fp32_generated": _metrics(rest_y, rest_p) if len(rest) >= 3 else None,
        "speedup_rel_err_pct": {
            "int8": float(100 * np.mean(np.abs(speed_direct - speed) / speed)),
            "int8_from_fp32": float(100 * np.mean(np.abs(speed_cross - speed) / speed)),
        },
    }
    rows = []
    for i, ref in enumerate(zoo):
        pr = prec[ref]
        rows.append({
            "network": ref,
            "fp32_ms": float(m32[i]), "fp32_pred_ms": float(pred32[i]),
            "int8_ms": float(m8[i]), "int8_pred_ms": float(pred8[i]),
            "int8_from_fp32_ms": float(pred8x[i]),
            "speedup": float(speed[i]), "speedup_pred": float(speed_direct[i]),
            "speedup_pred_from_fp32": float(speed_cross[i]),
            "precision": pr["label"], "int8_mac_fraction": pr["int8_mac_fraction"],
        })  # fmt: skip
    class_gain = _class_gains(gains)
    doc = {
        "experiment": "precision",
        "quick": ctx.quick,
        "seconds": time.monotonic() - t0,
        "devices": devices,
        "training_networks": {p: len(r) for p, (_, r) in predictors.items()},
        "few_shot": len(few),
        "kernel_benchmarks": {p: len(k) for p, k in kernel_refs.items()},
        "speedup_model": {"speedups": cross.speedups(), "training": cross.training_},
        "generated_held_out": len(rest),
        "networks": rows,
        "class_gain": class_gain,
        "metrics": metrics,
        "load": {
            "loadavg_start": list(load_start),
            "loadavg_end": list(load_end),
            "measured_loadavg_median": float(np.median(load_seen)) if load_seen else None,
        },
    }
    from latlab.experiments import plots

    fig = plots.scatter_grid(
        {"fp32": (m32, pred32), "int8": (m8, pred8), "int8 from fp32": (m8, pred8x),
         "speed-up": (speed, speed_direct)},
        title="held-out networks: predicted vs measured (ms; speed-up FP32/INT8)",
    )  # fmt: skip
    plots.save(fig, out / "predicted_vs_measured.png")
    dump_json(out / "results.json", doc)
    atomic_write_text(out / "report.md", _report(doc, ctx.command))
    store.close()
    return {
        "experiment": "precision",
        "quick": ctx.quick,
        "metrics": metrics,
        "load": doc["load"],
        "summary": {
            "int8_mape": metrics["int8"]["mape"],
            "int8_spearman": metrics["int8"]["spearman"],
            "int8_from_fp32_mape": metrics["int8_from_fp32"]["mape"],
            "speedup_rel_err_pct": metrics["speedup_rel_err_pct"]["int8"],
        },
    }


def _class_gains(gains: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Per network and kernel class: measured FP32 and INT8 time and the speed-up."""
    out = []
    for ref, g in gains.items():
        for cls in sorted(set(g["fp32_ms"]) | set(g["int8_ms"])):
            a, b = g["fp32_ms"].get(cls, 0.0), g["int8_ms"].get(cls, 0.0)
            out.append({"network": ref, "class": cls, "fp32_ms": a, "int8_ms": b,
                        "speedup": a / b if b > 0 else None})  # fmt: skip
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _report(doc: dict[str, Any], command: str) -> str:
    m = doc["metrics"]
    load = doc["load"]
    net_rows = [
        [r["network"], _f(r["fp32_ms"]), _f(r["fp32_pred_ms"]), _f(r["int8_ms"]),
         _f(r["int8_pred_ms"]), _f(r["int8_from_fp32_ms"]), _f(r["speedup"]),
         _f(r["speedup_pred"]), _f(r["speedup_pred_from_fp32"]),
         f"{r['precision']} ({100 * r['int8_mac_fraction']:.0f} %)"]
        for r in doc["networks"]
    ]  # fmt: skip
    met_rows = [
        [name, _f(m[k]["mape"], 1), _f(m[k]["spearman"], 3), _f(m[k]["acc10"], 0)]
        for name, k in (("fp32 (kernel, FP32 kernels)", "fp32"),
                        ("int8 (kernel, INT8 kernels)", "int8"),
                        (f"int8 from fp32 + {doc['few_shot']} INT8 networks", "int8_from_fp32"))
    ]  # fmt: skip
    gain_rows = [
        [g["network"], g["class"], _f(g["fp32_ms"], 3), _f(g["int8_ms"], 3), _f(g["speedup"])]
        for g in sorted(doc["class_gain"], key=lambda g: (g["network"], g["speedup"] or 0.0))
    ]
    sp = doc["speedup_model"]["speedups"]
    se = m["speedup_rel_err_pct"]
    i8 = m["int8"]
    text = [
        "# FP32 and INT8 networks measured and predicted",
        "",
        f"{len(doc['networks'])} real networks never used in training, onnxruntime CPU, one "
        f"thread, devices `{doc['devices']['fp32']}` and `{doc['devices']['int8']}`; "
        f"predictors trained on {doc['training_networks']['fp32']} (FP32) / "
        f"{doc['training_networks']['int8']} (INT8) generated networks: the context suite's "
        f"and single-layer kernel benchmarks: "
        + "; ".join(
            f"{n} at {p} ({', '.join(KERNEL_TYPES_AT[p])})"
            for p, n in doc["kernel_benchmarks"].items()
            if n
        )
        + ". "
        f"{doc['seconds']:.0f} s." + (" **Quick run.**" if doc["quick"] else ""),
        "",
        f"Load average (1 min) at start {load['loadavg_start'][0]:.2f}, at end "
        f"{load['loadavg_end'][0]:.2f}, median during the held-out measurements "
        f"{_f(load['measured_loadavg_median'])}: timings on a shared machine.",
        "",
        "## Per network (ms; speed-up = FP32 / INT8)",
        "",
        markdown_table(
            [
                "network",
                "fp32",
                "fp32 pred",
                "int8",
                "int8 pred",
                "int8 from fp32",
                "speed-up",
                "pred",
                "pred from fp32",
                "runs at (MACs int8)",
            ],
            net_rows,
        ),
        "",
        "## Errors on the held-out networks",
        "",
        markdown_table(["predictor", "MAPE %", "Spearman ρ", "±10 % acc %"], met_rows),
        "",
        f"Speed-up predicted within {_f(se['int8'], 1)} % (relative, mean) by the INT8-trained "
        f"predictor, {_f(se['int8_from_fp32'], 1)} % by the cross-precision model.",
        "",
        f"Targets: INT8 MAPE ≤ {TARGET_MAPE:.0f} % ({_f(i8['mape'], 1)}), ρ ≥ {TARGET_RHO} "
        f"({_f(i8['spearman'], 3)}), speed-up within {TARGET_SPEEDUP_ERR:.0f} % "
        f"({_f(se['int8'], 1)}), few-shot MAPE ≤ {TARGET_FEW_SHOT_MAPE:.0f} % "
        f"({_f(m['int8_from_fp32']['mape'], 1)}).",
        "",
        "![predicted vs measured](predicted_vs_measured.png)",
        "",
        "## Cross-precision model",
        "",
        f"INT8 kernel models fitted on the {doc['few_shot']} INT8 networks' "
        f"{doc['speedup_model']['training'].get('int8_kernels', '?')} profiled kernels; the "
        "kernels no INT8 family model covers costed by the FP32 kernel model times their "
        "group's INT8/FP32 ratio. FP32/INT8 time per kernel group on those networks (the FP32 "
        "model's prediction of each kernel's float op over its measured INT8 time): "
        + ", ".join(f"{k}: {_f(v)}" for k, v in sp.items())
        + ".",
        "",
        *(
            [
                f"On the {doc['generated_held_out']} generated networks of the INT8 training "
                "set the cross-precision model did not see: MAPE "
                f"{_f(m['int8_from_fp32_generated']['mape'], 1)} %, ρ "
                f"{_f(m['int8_from_fp32_generated']['spearman'], 3)}.",
                "",
            ]
            if m.get("int8_from_fp32_generated")
            else []
        ),
        "## Which layers gain least (measured, profiled kernels per class)",
        "",
        markdown_table(["network", "kernel class", "fp32 ms", "int8 ms", "speed-up"], gain_rows),
        "",
        "`quantise/dequantise` and `layout` are kernels the INT8 model adds (speed-up below 1 or "
        "none): the conversions at the boundaries of ops left in float and onnxruntime's NHWC "
        "transposes around its quantised kernels.",
        "",
        "## How to repeat",
        "",
        f"`{command}`",
        "",
    ]
    return "\n".join(text)
