"""Validation of the LXNOROP model against real bit-packed measurements on this machine.

1. Calibrate the host (``latlab bnn calibrate``'s micro-benchmark suite: single binary and
   full-precision layers, element-wise chains -- no validation network among them).
2. Measure the inference rate of binary networks never used in calibration (binary MLPs and
   VGG-style binary CNNs, references of the ``bnn-fcnn``/``bnn-cnn`` schemes) with the
   ``bitpacked`` backend, interleaved in round-robin passes.
3. Compare the measured rate with three predictions:
   * calibrated LXNOROP model (the fitted host target),
   * uncalibrated LXNOROP model (the detected host with instruction-set constants),
   * a plain MAC-count proxy, ``t = k·MACs`` (binary and float MACs alike), ``k`` fitted on
     the same calibration measurements by relative least squares.
   The error is ``|fps_pred − fps_meas| / fps_meas``; the target is a median ≤ 20 % for the
   calibrated model.

Writes ``bnn_validation.json`` and ``bnn_validation.md`` (the table for the README) and the
fitted ``host-calibrated.json`` into ``--out``.

    python benchmarks/bnn_validation.py --quick      # ~40 s: quick suite, 10 networks
    python benchmarks/bnn_validation.py              # ~3 min: full suite, 14 networks

On a shared machine (this project's 2-core development VM) the same network's time flips
between two levels a factor ~2 apart as neighbours come and go; the thread CPU clock, the
randomised passes and keeping each network's least disturbed pass (``--reduce min``) are what
make the figures repeatable there.

Run it on an otherwise idle machine: other processes make every measurement noisier.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import latlab  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

#: Validation networks (none is part of the calibration suite).
NETWORKS = [
    "bnn-fcnn:784-512-512-10",
    "bnn-fcnn:784-1024-1024-1024-10",
    "bnn-fcnn:784-2048-2048-2048-10",
    "bnn-fcnn:256-256-256-256-256-256-10",
    "bnn-fcnn:3072-1536-1536-1536-100",
    "bnn-cnn:1x28x28-c16-p-c32-p-f128-10",
    "bnn-cnn:1x28x28-c32-c32-p-c64-c64-p-f256-10",
    "bnn-cnn:3x32x32-c32-c32-p-c64-c64-p-c128-p-f256-10",
    "bnn-cnn:3x32x32-c64-p-c128-p-c256-p-f512-f512-10",
    "bnn-cnn:3x32x32-c64-c64-p-c128-c128-p-c256-c256-p-f512-10",
]
#: Heavier ones for the full run (BinaryNet's CIFAR-10 VGG-small among them).
FULL_EXTRA = [
    "bnn-fcnn:1024-4096-4096-4096-10",
    "bnn-fcnn:2048-3072-3072-3072-3072-1000",
    "bnn-cnn:3x32x32-c128-c128-p-c256-c256-p-c512-c512-p-f1024-f1024-10",
    "bnn-cnn:1x28x28-c64k5-p-c128k5-p-f512-10",
]


def rel_err(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas


def fit_mac_proxy(macs: np.ndarray, ms: np.ndarray) -> float:
    """``k`` minimising Σ((k·m − t)/t)²: ms per MAC."""
    r = macs / ms
    return float(np.sum(r) / np.sum(r * r))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="quick suite, 10 networks, 5 rounds")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help="randomised passes (default 5/7)")
    ap.add_argument(
        "--reduce",
        default="min",
        choices=("min", "median"),
        help="per network: the least disturbed pass (min) or the median of the passes",
    )
    ap.add_argument(
        "--clock",
        default="auto",
        choices=("auto", "wall", "thread"),
        help="auto: the thread's CPU clock with one thread (robust on a shared machine), "
        "wall otherwise",
    )
    args = ap.parse_args(argv)

    from latlab.datasets.references import resolve
    from latlab.predictors.bnn import detect_host, forward, write_target
    from latlab.predictors.bnn.calibrate import (
        benchmark_suite,
        bitpacked_time_ms,
        calibrate,
        measure_rounds,
    )

    rounds = args.rounds or (5 if args.quick else 7)
    nets = NETWORKS if args.quick else NETWORKS + FULL_EXTRA

    def time_fn(net: object) -> float:
        return bitpacked_time_ms(net, threads=args.threads, clock=args.clock)  # type: ignore[arg-type]

    def progress(i: int, n: int, what: str) -> None:
        print(f"\r  [{i}/{n}] {what[:60]:60s}", end="", file=sys.stderr, flush=True)

    t0 = time.time()
    suite = benchmark_suite(args.quick)
    # Calibration and validation networks are measured together, in round-robin passes, so
    # that both see the same machine conditions (load from other processes drifts).
    print(f"measuring {len(suite)} calibration + {len(nets)} validation networks ...",
          file=sys.stderr)  # fmt: skip
    everything: list[object] = [*suite, *nets]
    times = measure_rounds(
        everything, time_fn, rounds=rounds, reduce=args.reduce, progress=progress
    )
    print(file=sys.stderr)
    cal_ms = times[: len(suite)]
    measured = times[len(suite) :]
    lookup = {g.reference: float(t) for g, t in zip(suite, cal_ms, strict=True)}
    cal = calibrate(lambda g: lookup[g.reference], networks=suite, threads=args.threads, rounds=1)
    cal.target.calibration["clock"] = args.clock
    cal.target.calibration["rounds"] = rounds
    target = cal.target
    uncal = detect_host(cores=args.threads)
    k = fit_mac_proxy(np.array([g.totals.macs for g in suite], dtype=float), cal_ms)

    rows = []
    for ref, ms in zip(nets, measured, strict=True):
        fps = 1e3 / ms
        p_cal = forward(ref, target).fps
        p_unc = forward(ref, uncal).fps
        p_mac = 1e3 / (k * resolve(ref).totals.macs)
        rows.append(
            {
                "network": ref,
                "measured_ms": float(ms),
                "measured_fps": fps,
                "calibrated_fps": p_cal,
                "uncalibrated_fps": p_unc,
                "mac_proxy_fps": p_mac,
                "calibrated_err": rel_err(p_cal, fps),
                "uncalibrated_err": rel_err(p_unc, fps),
                "mac_proxy_err": rel_err(p_mac, fps),
            }
        )
    med = {
        key: float(np.median([r[key] for r in rows]))
        for key in ("calibrated_err", "uncalibrated_err", "mac_proxy_err")
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_target(target, args.out / "host-calibrated.json")
    doc = {
        "quick": args.quick,
        "threads": args.threads,
        "rounds": rounds,
        "clock": args.clock,
        "reduce": args.reduce,
        "host": uncal.title,
        "seconds": time.time() - t0,
        "calibrated_target": target.to_dict(),
        "clocks_lxnorop": target.clocks_lxnorop,
        "mac_proxy_ms_per_mac": k,
        "median": med,
        "rows": rows,
        "calibration_rows": cal.rows,
    }
    (args.out / "bnn_validation.json").write_text(json.dumps(doc, indent=1))
    md = markdown(doc)
    (args.out / "bnn_validation.md").write_text(md)
    print(md)
    return 0


def markdown(doc: dict) -> str:
    t = doc["calibrated_target"]["clocks"]
    lines = [
        f"Host: {doc['host']}, {doc['threads']} thread(s), "
        f"{'quick' if doc['quick'] else 'full'} run, {doc['rounds']} randomised passes "
        f"({doc['reduce']} kept), clock {doc['clock']}. "
        f"Calibrated: Clocks_XNOROP = {t.get('xnorop', 0):.2f} (weights in L2), "
        f"Clocks_LXNOROP = {doc['clocks_lxnorop']:.2f} (from memory), "
        f"c_threshold = {t['threshold']:.2f}, "
        f"c_pack = {t['pack']:.2f}, c_mac = {t['mac']:.3f}, c_wbyte = {t['weight_byte']:.3f}, "
        f"c_flop = {t['flop']:.2f}, "
        f"c_layer = {t['layer']:.0f}, c_inference = {t['inference']:.0f} clocks.",
        "",
        "| network | measured fps | calibrated fps (err) | uncalibrated fps (err) "
        "| MAC proxy fps (err) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| `{r['network']}` | {r['measured_fps']:.1f} "
            f"| {r['calibrated_fps']:.1f} ({100 * r['calibrated_err']:.1f} %) "
            f"| {r['uncalibrated_fps']:.0f} ({100 * r['uncalibrated_err']:.0f} %) "
            f"| {r['mac_proxy_fps']:.1f} ({100 * r['mac_proxy_err']:.1f} %) |"
        )
    m = doc["median"]
    lines.append(
        f"| **median error** | | **{100 * m['calibrated_err']:.1f} %** "
        f"| {100 * m['uncalibrated_err']:.0f} % | {100 * m['mac_proxy_err']:.1f} % |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
