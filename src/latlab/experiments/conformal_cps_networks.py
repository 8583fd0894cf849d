"""Network-level coverage of layer-wise conformal predictive systems (``cps``) on this machine.

    latlab experiment run cps-networks [--quick] [--out DIR]

Layer errors are correlated (a device faster than modelled on every convolution), so summing
per-layer predictive distributions as if independent gives intervals that are too narrow; ``cps``
validates the sum on measured networks and recalibrates it at network level (see
:mod:`latlab.predictors.conformal.layers`). This experiment measures how much that matters:

1. Benchmarks and networks (resumable, in the store ``DIR/bench.db``; the same
   store as ``latlab.experiments.annette`` can be reused): the kernel, smart-padding and
   multi-layer suites, and nb201 + zoo networks measured end to end (onnxruntime, one thread).
2. The five layer-wise predictors are trained on a random 70 % of the single-layer benchmarks
   (plus the session probe and multi-layer benchmarks); the other 30 % are the layer-level
   calibration data.
3. For each seed the measured networks are split at random in half: calibration / test. On the
   test networks, at 90 % confidence: coverage and mean relative width of (a) the summed layer
   distributions as is ("independent sum"), (b) ``cps`` recalibrated at network level, and
   (c) network-level ``split`` conformal on the same predictor, for reference.

Writes ``report.md`` and ``metrics.json``. ``--quick``: ANNETTE's quick suites, 60 nb201 and 5
zoo networks, 3 seeds (about 6 minutes on two cores with an empty store); the full run uses
ANNETTE's full suites, 200 nb201 networks and the zoo, 5 seeds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from latlab.experiments.context import ExperimentContext
from latlab.fileio import atomic_write_text
from latlab.jsonio import dumps
from latlab.predictors import make_predictor
from latlab.predictors.conformal import coverage_report, make_conformal
from latlab.predictors.conformal.layers import LayerCps
from latlab.training.metrics import regression_metrics

log = logging.getLogger("latlab.experiments.conformal_cps_networks")

MODELS = ("roofline", "refined", "statistical", "mixed", "lut")
CONFIDENCE = 0.9
LAYER_CAL_FRACTION = 0.3


def run(
    out: Path,
    *,
    quick: bool = False,
    db: str | None = None,
    timer: str = "thread",
    command: str = "",
) -> dict[str, Any]:
    """Run the evaluation; returns the metrics written to ``out/metrics.json``."""
    from latlab.datasets.bench.export import training_table
    from latlab.datasets.measure import default_device_name
    from latlab.datasets.references import resolve
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store
    from latlab.experiments.annette_settings import Settings
    from latlab.experiments.annette_steps import measure_networks, run_benchmarks
    from latlab.predictors.layerwise.predictor import SESSION_PROBE, benchmarked_layer

    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    s = Settings.preset(quick, timer)
    n_nb201, seeds = (60, 3) if quick else (200, 5)
    device = default_device_name("onnxruntime", 1)
    store = Store(db or str(out / "bench.db"))
    bench_info = run_benchmarks(store, device, s)
    # the protocol run_benchmarks measured under (paired with the reference network)
    key = s.bench_config().protocol_key()
    table = training_table(store, device, protocol_key=key)
    table = table[table[device].notna() & (table[device] > 0)]

    refs = [f"zoo:{n}" for n in s.zoo] + sample("nb201", n_nb201, 1)
    measured = measure_networks(store, device, refs, s)
    measured = measured[np.isfinite(measured) & (measured > 0)]
    store.close()

    # Layer-level calibration: a random 30 % of the single-layer benchmarks, never trained on.
    single = np.array(
        [r != SESSION_PROBE and benchmarked_layer(resolve(r)) is not None for r in table["network"]]
    )
    rng = np.random.default_rng(0)
    held = single & (rng.random(len(table)) < LAYER_CAL_FRACTION)
    train_rows, layer_rows = table[~held], table[held]
    layer_nets = list(layer_rows["network"])
    layer_y = layer_rows[device].to_numpy(dtype=float)

    nets = list(measured.index)
    y = measured.to_numpy(dtype=float)
    results: dict[str, Any] = {}
    for name in MODELS:
        t0 = time.monotonic()
        base = make_predictor(name).fit(
            list(train_rows["network"]), train_rows[device].to_numpy(dtype=float)
        )
        point = base.predict(nets)
        per_seed: list[dict[str, Any]] = []
        for seed in range(seeds):
            perm = np.random.default_rng([seed, 7]).permutation(len(nets))
            cal, test = np.sort(perm[: len(nets) // 2]), np.sort(perm[len(nets) // 2 :])
            cal_nets, test_nets = [nets[i] for i in cal], [nets[i] for i in test]
            cps = make_conformal("cps", base, seed=seed).calibrate(
                cal_nets, y[cal], layer_networks=layer_nets, layer_latencies_ms=layer_y
            )
            assert isinstance(cps, LayerCps)
            low, high = cps.aggregate_interval(test_nets, CONFIDENCE)
            inside = (y[test] >= low) & (y[test] <= high)
            split = make_conformal("split", base).calibrate(cal_nets, y[cal])
            per_seed.append(
                {
                    "independent_sum": {
                        "coverage": float(100 * inside.mean()),
                        "mean_relative_width": float(100 * np.mean((high - low) / y[test])),
                    },
                    "cps": coverage_report(cps, test_nets, y[test], CONFIDENCE),
                    "split": coverage_report(
                        split, test_nets, y[test], CONFIDENCE, point_ms=point[test]
                    ),
                    "aggregate_coverage_on_calibration": cps.aggregate_coverage_,
                    "warnings": list(cps.warnings),
                }
            )
        results[name] = {
            "point": regression_metrics(y, point),
            "seeds": per_seed,
            "mean": {
                k: {
                    m: float(np.mean([r[k][m] for r in per_seed]))
                    for m in ("coverage", "mean_relative_width")
                }
                for k in ("independent_sum", "cps", "split")
            },
            "min_coverage": {
                k: float(np.min([r[k]["coverage"] for r in per_seed]))
                for k in ("independent_sum", "cps", "split")
            },
        }
        log.info(
            "%s: independent %.1f %%, cps %.1f %%, split %.1f %% (%.0f s)",
            name,
            results[name]["mean"]["independent_sum"]["coverage"],
            results[name]["mean"]["cps"]["coverage"],
            results[name]["mean"]["split"]["coverage"],
            time.monotonic() - t0,
        )
    metrics = {
        "command": command,
        "device": device,
        "settings": {
            "quick": quick,
            "kernels": s.kernels,
            "multilayer": s.multilayer,
            "zoo": s.zoo,
            "nb201": n_nb201,
            "seeds": seeds,
            "timer": s.timer,
            "confidence": CONFIDENCE,
        },
        "benchmarks": bench_info,
        "layer_calibration_points": len(layer_nets),
        "layer_training_rows": len(train_rows),
        "networks": len(nets),
        "results": results,
        "seconds": time.monotonic() - start,
    }
    atomic_write_text(out / "metrics.json", dumps(metrics))
    atomic_write_text(out / "report.md", report(metrics))
    return metrics


def report(m: dict[str, Any]) -> str:
    s = m["settings"]
    lines = [
        "# Layer-wise conformal predictive systems: coverage at network level",
        "",
        f"Command: `{m['command']}`  ",
        f"Device: `{m['device']}` (this machine, onnxruntime, one thread, {s['timer']} timer); "
        f"{m['layer_training_rows']} benchmark rows train the layer models, "
        f"{m['layer_calibration_points']} held-out single-layer benchmarks calibrate the "
        f"layer-kind CPS; {m['networks']} measured networks ({s['nb201']} nb201 + "
        f"{len(s['zoo'])} zoo) split in half (calibration / test), {s['seeds']} seeds; "
        f"{m['seconds']:.0f} s.",
        "",
        f"Coverage and mean relative width (%) on the test networks at {s['confidence']:.0%} "
        "(mean over seeds; min coverage in brackets).",
        "",
    ]
    header = [
        "model",
        "point MAPE",
        "independent sum",
        "cps (recalibrated)",
        "split (network level)",
    ]
    rows = []
    for name, r in m["results"].items():
        cells = [name, f"{r['point']['mape']:.1f}"]
        for k in ("independent_sum", "cps", "split"):
            cells.append(
                f"{r['mean'][k]['coverage']:.1f} ({r['min_coverage'][k]:.1f}) / "
                f"{r['mean'][k]['mean_relative_width']:.1f}"
            )
        rows.append(cells)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in rows]
    lines.append("")
    return "\n".join(lines)


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """``latlab experiment run cps-networks``: the quick or full run into ``ctx.out``."""
    return run(ctx.out, quick=ctx.quick, command=ctx.command)
