"""Cross-precision designs compared on generated networks the few-shot set did not contain.

``latlab experiment run precision`` keeps its bench store (``DIR/bench.db``): FP32 and INT8
profiles of the context suite's generated networks. This script fits three ways of predicting
INT8 latency from the device's FP32 data plus its first ``--k`` INT8 networks and scores them
on the other generated INT8 networks of that store (never on the experiment's real ``zoo:``
test networks, which shaped nothing here):

* ``class-ratio`` -- the first ``cross-precision`` design: the FP32 kernel model's predicted
  time per kernel class (conv, dwconv, matmul, other) times the class's INT8/FP32 ratio of
  profiled sums on the k networks, times one median scale;
* ``int8-kernels`` -- the kernel predictor fitted on the k networks' INT8 kernels alone;
* ``cross-precision`` -- the registered predictor: those INT8 kernel models, and the FP32
  prior (FP32 model x kernel-group ratio) for the kernels they do not cover.

    python benchmarks/cross_precision_variants.py --store reports/precision/bench.db
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import latlab  # noqa: F401
except ImportError:  # a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from latlab.datasets.bench.export import kernel_rows
from latlab.datasets.store import Store
from latlab.experiments.precision import training_networks
from latlab.predictors.base import make_predictor
from latlab.predictors.precision import CLASSES, kernel_class


def _class_sums(rows, column: str, networks: list[str]) -> np.ndarray:
    """(len(networks), len(CLASSES)) sums of ``column`` (ms) per kernel class."""
    out = np.zeros((len(networks), len(CLASSES)))
    at = {n: i for i, n in enumerate(networks)}
    for net, fam, t in zip(rows["network"], rows["family"], rows[column], strict=True):
        if net in at:
            out[at[net], CLASSES.index(kernel_class(str(fam)))] += float(t)
    return out


def class_ratio(fp32, store: Store, devices: tuple[str, str], few: list[str], y_few, test):
    """The first design (see the module docstring): predictions for ``test``."""
    r32 = kernel_rows(store, devices[0], set(few)).assign(ms=lambda d: d["time_us"] / 1e3)
    r8 = kernel_rows(store, devices[1], set(few)).assign(ms=lambda d: d["time_us"] / 1e3)
    both = sorted(set(r32["network"]) & set(r8["network"]))
    a, b = _class_sums(r32, "ms", both).sum(0), _class_sums(r8, "ms", both).sum(0)
    ratios = np.where(a > 0, b / np.maximum(a, 1e-12), b.sum() / a.sum())

    def raw(nets: list[str]) -> np.ndarray:
        table = fp32.predict_layers(nets)
        table = table.assign(
            network=[nets[i] for i in table["network_index"]], ms=table["predicted_ms"]
        )
        return _class_sums(table, "ms", nets) @ ratios * float(table.attrs.get("scale", 1.0))

    scale = float(np.median(np.asarray(y_few) / np.maximum(raw(few), 1e-9)))
    return scale * raw(test)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--store", required=True, help="a precision experiment's bench.db")
    ap.add_argument("--k", type=int, default=20, help="INT8 networks the models see")
    ap.add_argument("--context", type=int, default=120, help="the experiment's context count")
    ap.add_argument("--device", default="epyc-2c-ort", help="the FP32 device column")
    args = ap.parse_args(argv)
    if not Path(args.store).is_file():
        ap.error(f"--store {args.store}: no such file")
    url = f"sqlite:///{Path(args.store).resolve()}"
    d32, d8 = args.device, f"{args.device}-int8"
    store = Store(url)
    frame = store.export_table(devices=[d8]).set_index("network")
    if d8 not in frame:
        ap.error(f"--store {args.store} has no column {d8!r} (--device names the FP32 one)")
    refs = [r for r in training_networks(args.context, 0) if r in frame.index]
    refs = [r for r in refs if frame.loc[r, d8] == frame.loc[r, d8]]
    few, test = refs[: args.k], refs[args.k :]
    y = frame[d8]
    cross = make_predictor("cross-precision", store=url, device=d8, source_device=d32)
    cross.fit(few, y[few].to_numpy())
    int8 = make_predictor("kernel", store=url, device=d8).fit(few, y[few].to_numpy())
    preds = {
        "class-ratio": class_ratio(cross.prior_.fp32, store, (d32, d8), few, y[few], test),
        "int8-kernels": int8.predict(test),
        "cross-precision": cross.predict(test),
    }
    store.close()
    m = y[test].to_numpy()
    big = m >= 1.0
    print(f"{len(few)} INT8 networks seen, {len(test)} held out ({big.sum()} of them >= 1 ms)")
    print("| design | MAPE % | MAPE % (>= 1 ms) | median APE % |")
    print("|---|---:|---:|---:|")
    for name, p in preds.items():
        ape = 100 * np.abs(p - m) / m
        print(f"| {name} | {ape.mean():.1f} | {ape[big].mean():.1f} | {np.median(ape):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
