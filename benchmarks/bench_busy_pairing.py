"""What paired timing buys under load: raw vs drift-corrected medians, quiet vs busy processes.

Measures a few networks twice in one process, sharing one prepared reference session: once
with no busy process of ours, once while ``--busy`` spinning interpreters (default: one per
core) oversubscribe the cores, and reports how far each network's raw and corrected medians
moved. The reference value is a fixed number here (both measurements use it), so the
corrected change is the change of the per-round ratio alone.

    python benchmarks/bench_busy_pairing.py            # ~1 min
    python benchmarks/bench_busy_pairing.py --timer thread
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
from bench_common import load_note, machine, write_result

NETWORKS = ["zoo:mobilenet_v2@96", "zoo:resnet18@96", "cnn:r96-c32s2-rb32x2-rb64s2x2-fc10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=NETWORKS)
    parser.add_argument("--busy", type=int, default=None, help="busy processes [one per core]")
    parser.add_argument("--timer", default="wall", choices=["wall", "thread"])
    parser.add_argument("--time-budget", type=float, default=0.6)
    args = parser.parse_args()

    from latlab.datasets.measure import DEFAULT_REFERENCE, MeasureConfig, get_backend, measure
    from latlab.datasets.measure.protocol import prepare_reference

    be = get_backend("onnxruntime")
    cfg = MeasureConfig(
        time_budget_s=args.time_budget, reference=DEFAULT_REFERENCE, timer=args.timer
    )
    ref_run = prepare_reference(be, cfg)
    busy_n = args.busy if args.busy is not None else machine()["cores"]
    start_machine = machine()
    runs: dict[str, dict] = {}
    for condition, n in (("quiet", 0), ("busy", busy_n)):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        try:
            if procs:
                time.sleep(0.5)
            for net in args.networks:
                m = measure(net, cfg, be, reference_run=ref_run, reference_value_ms=1.0)
                runs.setdefault(net, {})[condition] = {
                    "raw_ms": m.median_ms,
                    "corrected_ms": m.corrected_ms,
                    "reference_ms": m.reference_median_ms,
                    "load": m.load,
                }
        finally:
            for p in procs:
                p.kill()
                p.wait()
    rows = []
    for net, r in runs.items():
        q, b = r["quiet"], r["busy"]
        rows.append(
            {
                "network": net,
                "raw_change": b["raw_ms"] / q["raw_ms"] - 1,
                "corrected_change": b["corrected_ms"] / q["corrected_ms"] - 1,
                **{f"{k}_{c}": r[c][k] for c in ("quiet", "busy") for k in ("raw_ms",)},
                "other_cores_quiet": q["load"]["other_cores"],
                "other_cores_busy": b["load"]["other_cores"],
            }
        )
    load = start_machine["load_average"][0]
    doc = {
        "command": " ".join(["python", "benchmarks/bench_busy_pairing.py", *sys.argv[1:]]),
        "busy_processes": busy_n,
        "timer": args.timer,
        "reference": DEFAULT_REFERENCE,
        "machine": start_machine,
        "rows": rows,
        "runs": runs,
    }
    lines = [
        "# Paired timing under load",
        "",
        f"`{doc['command']}`: onnxruntime, 1 thread, {args.timer} clock, reference "
        f"`{DEFAULT_REFERENCE}`; busy = {busy_n} spinning processes on "
        f"{start_machine['cores']} cores; load average {load:.2f} at the start "
        f"{load_note(load)}.",
        "",
        "| network | raw quiet (ms) | raw busy (ms) | raw change | corrected change "
        "| other cores quiet / busy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['network']}` | {r['raw_ms_quiet']:.3f} | {r['raw_ms_busy']:.3f} "
            f"| {100 * r['raw_change']:+.1f} % | {100 * r['corrected_change']:+.1f} % "
            f"| {r['other_cores_quiet']:.2f} / {r['other_cores_busy']:.2f} |"
        )
    stem = "busy_pairing" + ("_thread" if args.timer == "thread" else "")
    write_result(stem, doc, lines)


if __name__ == "__main__":
    main()
