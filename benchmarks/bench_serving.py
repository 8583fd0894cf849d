"""The in-process NAS fast path: every NAS-Bench-201 network predicted with intervals through
``latlab.load_bundle(...)``, cold and warm feature cache, and the overhead over the bare model.

For a LightGBM and a GCN bundle (trained here on the shared nb201 table, or given with
``--gbm-bundle``/``--gcn-bundle``), on all 15,625 networks:

* **cold**: a freshly loaded bundle (empty feature cache) and the process-wide reference cache
  cleared: ``point = b.predict(refs); low, high = b.predict_interval(refs, 0.9, point_ms=point)``;
* **warm**: the same call again (every network's features come from the cache);
* **bare**: the model alone on precomputed features (the LightGBM booster on the feature
  matrix; the GCN's inference on the encoded graphs) -- the floor any API sits on;
* overhead ratios cold/bare and warm/bare (targets: <= 2x cold, <= 1.2x warm), and the
  absolute targets (<= 1 s LightGBM, <= 5 s GCN, cold and warm, on 2 cores).

Speed does not depend on how well a model was trained, so the GCN bundle is trained for a few
epochs only (BRP-NAS's architecture: 4 x 600 units; ``--gcn-epochs``). Medians of
``--repeats`` runs. The machine's load is recorded; figures from a busy machine are noisy.

    python benchmarks/bench_serving.py --quick      # fewer repeats, a smaller GCN training set
    python benchmarks/bench_serving.py

Writes ``benchmarks/results/bench_serving[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import TABLE, load_note, machine, write_result

TARGET = "titanx_32"


def train_bundle(table: Path, out: Path, predictor: str, params: dict, sizes: tuple) -> Path:
    from latlab.training.pipeline import TrainConfig, train

    config = TrainConfig(
        predictor=predictor,
        params=params,
        train_size=sizes[0],
        val_size=sizes[1],
        cal_size=sizes[2],
        conformal="split",
    )
    train(table, TARGET, config, out)
    return out


def clear_reference_cache() -> None:
    """Process-wide caches a fresh process would not have: resolved references, the nb201
    fast path's table of the space."""
    from latlab.datasets import references
    from latlab.encoders import nb201_cell, vector

    with references._CACHE.lock:
        references._CACHE.data.clear()
    nb201_cell.arch_index.cache_clear()
    vector._op_indices_of_space.cache_clear()


def bare_seconds(bundle: Any, refs: list[str]) -> float:
    """The model alone on features computed beforehand."""
    from latlab.datasets.references import resolve_many

    stage = bundle.fast.stage
    items = stage.encode(resolve_many(refs))
    if stage.kind.endswith("-rows"):
        x = np.vstack(items)
        items = [x]  # the stage stacks its items: one pre-stacked matrix is the bare model
    t0 = time.perf_counter()
    out = stage.predict(items)
    elapsed = time.perf_counter() - t0
    assert len(out) == len(refs)
    return elapsed


def with_intervals(bundle: Any, refs: list[str]) -> float:
    t0 = time.perf_counter()
    point = bundle.predict(refs)
    low, high = bundle.predict_interval(refs, 0.9, point_ms=point)
    elapsed = time.perf_counter() - t0
    assert len(high) == len(refs) and np.all(low <= point) and np.all(point <= high)
    return elapsed


def measure(path: Path, refs: list[str], repeats: int) -> dict[str, Any]:
    import latlab

    cold, warm, bare = [], [], []
    for _ in range(repeats):
        clear_reference_cache()
        b = latlab.load_bundle(path)
        b.fast  # noqa: B018  (the adapter, outside the timing: loading is not predicting)
        cold.append(with_intervals(b, refs))
        warm.append(with_intervals(b, refs))
        assert b.cache.stats()["encoded"] == len(set(refs))
    b = latlab.load_bundle(path)
    for _ in range(repeats):
        bare.append(bare_seconds(b, refs))
    c, w, r = (float(np.median(v)) for v in (cold, warm, bare))
    return {
        "predictor": b.predictor_name,
        "stage": b.fast.stage.kind,
        "networks": len(refs),
        "cold_s": c,
        "warm_s": w,
        "bare_s": r,
        "cold_ratio": c / r,
        "warm_ratio": w / r,
        "cold_runs_s": cold,
        "warm_runs_s": warm,
        "bare_runs_s": bare,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats, a small GCN training set")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--gbm-bundle", type=Path, default=None)
    ap.add_argument("--gcn-bundle", type=Path, default=None)
    ap.add_argument("--gcn-epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--skip-gcn", action="store_true")
    args = ap.parse_args()
    if not args.table.exists():
        sys.exit(f"the nb201 table is needed: {args.table} not found (--table)")
    repeats = args.repeats or (2 if args.quick else 5)
    refs = pd.read_csv(args.table)["network"].tolist()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        gbm = args.gbm_bundle or train_bundle(
            args.table, Path(tmp) / "gbm", "gbm", {}, (900, 100, 500)
        )
        rows.append(measure(gbm, refs, repeats))
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("runs_s")}))
        if not args.skip_gcn:
            sizes = (200, 50, 100) if args.quick else (900, 100, 500)
            gcn = args.gcn_bundle or train_bundle(
                args.table, Path(tmp) / "gcn", "gcn", {"max_epochs": args.gcn_epochs}, sizes
            )
            rows.append(measure(gcn, refs, repeats))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("runs_s")}))
    targets = {"gbm": 1.0, "gcn": 5.0}
    doc = {
        "what": "all nb201 networks predicted with 90 % intervals, through Bundle.predict and "
        "Bundle.predict_interval; medians of repeats",
        **machine(),
        "repeats": repeats,
        "quick": args.quick,
        "results": rows,
        "targets_s": targets,
        "ratio_targets": {"cold": 2.0, "warm": 1.2},
    }
    lines = [
        "# In-process serving: all 15,625 nb201 networks with 90 % intervals",
        "",
        f"`python benchmarks/bench_serving.py{' --quick' if args.quick else ''}`; "
        f"{doc['cores']} cores, load average {doc['load_average'][0]:.1f} at the end "
        f"{load_note(doc['load_average'][0])}; "
        f"medians of {repeats} runs.",
        "",
        "| bundle | cold s | warm s | bare model s | cold / bare | warm / bare | target s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['predictor']} ({r['stage']}) | {r['cold_s']:.3f} | {r['warm_s']:.3f} | "
            f"{r['bare_s']:.3f} | {r['cold_ratio']:.2f} | {r['warm_ratio']:.2f} | "
            f"<= {targets.get(r['predictor'], float('nan')):g} |"
        )
    lines += [
        "",
        "cold: fresh bundle, empty feature cache, process-wide reference cache cleared; warm: "
        "the same call again; bare: the model alone on precomputed features. Targets: "
        "cold / bare <= 2, warm / bare <= 1.2.",
    ]
    write_result("bench_serving_quick" if args.quick else "bench_serving", doc, lines)


if __name__ == "__main__":
    main()
