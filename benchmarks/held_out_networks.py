"""The ``kernel`` predictor on real networks nobody looked at: the held-out set.

    python benchmarks/held_out_networks.py [--quick] --db STORE [--device NAME] [--bundle B]
                                           [--tag T]

The networks are :mod:`latlab.datasets.heldout` (written after the predictors were finished,
never in the zoo, never used for a design decision). Each is exported by latlab's ONNX
exporter and handled as a user's file, ``onnx:PATH``:

1. trains ``kernel`` on the bench store ``--db`` exactly as ``latlab compare`` does
   (:func:`latlab.experiments.annette_steps.train_kernel` with the ``main`` preset: the
   ``kernel:`` and ``block:`` benchmark networks under the benchmark protocol, drift-corrected
   medians) -- or, with ``--bundle B``, uses the ``kernel`` predictor of a bundle written by
   ``latlab train --predictor kernel --out B``;
2. measures every held-out network INTO ``--db`` under the main preset's network protocol
   (paired with the store's reference network, thread clock, groups of 4: the protocol the zoo
   networks of ``latlab compare`` are measured with), so measured and training figures share
   the device's reference scale; corrected medians. Resumable: networks already measured under
   that protocol are read back. Work on a copy of a store someone else is writing;
3. predicts each and writes ``benchmarks/results/held_out_networks{,_quick}.json`` + ``.md``:
   per network measured vs predicted ms, error, uncovered kernels; MAPE, ±10 % share,
   Spearman ρ, attention-model and CNN MAPE, and the load average before and after.

``--quick``: 4 networks (:data:`QUICK`). ``--tag T`` writes ``held_out_networks_T.*`` instead
(a repeat on a fresh store copy, to see how much the measurements move).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import bench_common
import numpy as np
from bench_common import fail, network_metrics, open_store

log = logging.getLogger("held_out_networks")

#: The --quick subset: two CNNs, a vision transformer and a text encoder.
QUICK = ("ghostnet_100", "regnet_x_400mf", "deit_tiny", "distilbert_base")
ONNX_DIR = bench_common.ROOT / "latlab-cache" / "heldout"


def check_inputs(db: str, device: str | None, bundle: str | None) -> str:
    """The device to use; exits with one line naming the culprit before any work."""
    store, device = open_store(db, device)
    store.close()
    if bundle is not None:
        from latlab.training.bundle import read_manifest

        try:
            read_manifest(bundle)
        except Exception as exc:  # any unreadable bundle: one line
            fail(f"--bundle {bundle}: {exc}")
    return device


def kernel_predictor(db: str, device: str, bundle: str | None, settings: Any) -> tuple[Any, str]:
    """The fitted ``kernel`` predictor and how it was obtained."""
    from latlab.datasets.store import Store
    from latlab.experiments.annette_steps import train_kernel

    if bundle is not None:
        from latlab.training.bundle import load_bundle

        b = load_bundle(bundle)
        if b.predictor_name != "kernel":
            fail(f"--bundle {bundle} holds predictor {b.predictor_name!r}, not 'kernel'")
        return b.predictor, f"bundle {bundle}"
    store = Store(db)
    try:
        model = train_kernel(store, device, settings)
    finally:
        store.close()
    if model is None:
        fail(f"--db {db} holds no kernel benchmarks of {device!r}: run latlab bench first")
    return model, f"trained on {db} in {model.fit_seconds_:.0f} s (latlab compare's train_kernel)"


def measure(db: str, device: str, refs: list[str], settings: Any) -> Any:
    """Corrected medians (ms) of ``refs`` measured into the store (resumable)."""
    from latlab.datasets.store import Store
    from latlab.experiments.annette_steps import measure_networks

    store = Store(db)
    try:
        return measure_networks(store, device, refs, settings)
    finally:
        store.close()


def _fmt(v: float | int | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--db", required=True, help="bench store (written: held-out measurements)")
    ap.add_argument("--device", default=None, help="device in the store (default: its only one)")
    ap.add_argument("--bundle", default=None, help="a kernel bundle to use instead of training")
    ap.add_argument("--onnx-dir", type=Path, default=ONNX_DIR, help="where the ONNX files go")
    ap.add_argument("--tag", default=None, help="suffix of the result files (a repeat run)")
    args = ap.parse_args()
    if args.tag is not None and not args.tag.replace("_", "").isalnum():
        fail(f"--tag {args.tag!r}: use letters, digits and underscores")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = check_inputs(args.db, args.device, args.bundle)

    from latlab.datasets import heldout
    from latlab.experiments.annette_settings import Settings

    settings = Settings.preset_named("main", timer="thread")
    machine0 = bench_common.machine()
    t_start = time.perf_counter()
    names = list(QUICK) if args.quick else heldout.names()
    refs = [heldout.reference(n, args.onnx_dir) for n in names]
    kernel, how = kernel_predictor(args.db, device, args.bundle, settings)
    t0 = time.perf_counter()
    measured = measure(args.db, device, refs, settings)
    measure_s = time.perf_counter() - t0
    predicted = np.asarray(kernel.predict(refs), dtype=float)
    per = kernel.predict_layers(refs)
    rows: list[dict[str, Any]] = []
    for i, (name, ref) in enumerate(zip(names, refs, strict=True)):
        k = per[per["network_index"] == i]
        model = heldout.get_model(name)
        t, p = float(measured[ref]), float(predicted[i])
        rows.append(
            {
                "network": name,
                "reference": os.path.relpath(ref.removeprefix("onnx:"), bench_common.ROOT),
                "family": model.family,
                "attention": model.attention,
                "measured_ms": t,
                "kernel_ms": p,
                "error_pct": 100 * (p - t) / t,
                "kernels": len(k),
                "uncovered": sorted({str(op) for op in k.loc[~k["covered"], "op"]}),
            }
        )
    t_all = np.array([r["measured_ms"] for r in rows])
    p_all = np.array([r["kernel_ms"] for r in rows])
    att = np.array([r["attention"] for r in rows])
    summary = {
        "all": network_metrics(t_all, p_all),
        "attention": network_metrics(t_all[att], p_all[att]),
        "cnn": network_metrics(t_all[~att], p_all[~att]),
    }
    machine1 = bench_common.machine()
    result = {
        "quick": args.quick,
        "store": args.db,
        "device": device,
        "predictor": "kernel",
        "predictor_source": how,
        "protocol": settings.network_protocol.protocol_key(),
        "networks": rows,
        "summary": summary,
        "measure_s": round(measure_s, 1),
        "measured_now": int(measured.attrs.get("measured_now", 0)),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine_start": machine0,
        "machine_end": machine1,
    }
    load0, load1 = machine0["load_average"][0], machine1["load_average"][0]
    flag = (" --quick" if args.quick else "") + (f" --tag {args.tag}" if args.tag else "")
    s = summary["all"]
    lines = [
        f"# Held-out real networks{' (quick)' if args.quick else ''}: kernel predictor",
        "",
        f"Command: `python benchmarks/held_out_networks.py{flag} --db STORE --device {device}`"
        f"; onnxruntime CPU, 1 thread, `latlab compare`'s network protocol (paired with the "
        f"store's reference, thread clock, groups of 4; corrected medians). `kernel` {how}. "
        f"Load average {load0:.1f} -> {load1:.1f} on {machine0['cores']} cores "
        f"{bench_common.load_note(max(load0, load1))}; measuring took {measure_s:.0f} s "
        f"({result['measured_now']} networks measured now).",
        "",
        "The networks (`latlab.datasets.heldout`) were written after the predictor was "
        "finished and shaped no design decision; nothing in latlab was tuned to these figures.",
        "",
        "| set | networks | MAPE % | ±10 % | Spearman ρ |",
        "|---|---|---|---|---|",
    ]
    for label, m in summary.items():
        lines.append(
            f"| {label} | {m['networks']} | {_fmt(m['mape'], '.1f')} | "
            f"{_fmt(m['within_10'], '.0f')} | {_fmt(m['spearman'], '.3f')} |"
        )
    lines += [
        "",
        "| network | family | attention | measured ms | kernel ms | error % | kernels "
        "| uncovered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['family']} | {'yes' if r['attention'] else ''} | "
            f"{r['measured_ms']:.3f} | {r['kernel_ms']:.3f} | {r['error_pct']:+.1f} | "
            f"{r['kernels']} | {', '.join(r['uncovered'])} |"
        )
    lines += ["", f"Overall: MAPE {_fmt(s['mape'], '.1f')} %, wall {result['wall_s']:.0f} s."]
    stem = "held_out_networks" + ("_quick" if args.quick else "")
    bench_common.write_result(stem + (f"_{args.tag}" if args.tag else ""), result, lines)


if __name__ == "__main__":
    main()
