"""Prediction speed: all 15,625 NAS-Bench-201 networks, from references, features included.

Fits each learned predictor (gbm, rf, fcnn, gcn with its full-size defaults; few epochs, since
speed does not depend on them) on 900 networks of one device of the shared nb201 table, then
times ``predict`` over the whole space given as *reference strings* -- resolving, feature
encoding and the model together -- on ``--threads`` cores (default 2). Reported: the best of
``--repeats`` timed calls, and separately the time to resolve the references alone.
Targets: <= 1 s for gbm, rf and fcnn, <= 5 s for gcn.

nb201 references resolve through ``latlab.datasets.resolve`` when the ``nb201:`` scheme is
registered; otherwise (``--source testnets``, or ``auto`` before the nb201 space exists) the
test-only lazy graphs of ``tests/nb201_testnets.py`` are registered as the scheme.

    python benchmarks/bench_predict_speed.py --quick [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TARGETS_S = {"gbm": 1.0, "rf": 1.0, "fcnn": 1.0, "gcn": 5.0}
DATA = ROOT.parent / "shared" / "data" / "nb201_latency.csv"


def ensure_nb201(source: str) -> str:
    """Make ``nb201:`` references resolvable; returns where graphs come from."""
    from latlab.datasets import references

    if source in ("auto", "resolve") and "nb201" in references.SCHEMES:
        return "latlab nb201 scheme"
    if source == "resolve":
        raise SystemExit("the nb201: scheme is not registered in this checkout")
    sys.path.insert(0, str(ROOT / "tests"))
    from nb201_testnets import nb201_graph

    references.register_scheme(
        references.Scheme("nb201", lambda body, opts: nb201_graph(body), help="test nets")
    )
    return "tests/nb201_testnets.py (test-only stand-in)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 timed repeat, 2 GCN epochs")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--device", default="1080ti_1", help="table column to fit on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--predictors", default="gbm,rf,fcnn,gcn")
    ap.add_argument("--source", choices=("auto", "resolve", "testnets"), default="auto")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    torch.set_num_threads(args.threads)
    from latlab.datasets.references import resolve
    from latlab.encoders.nb201_cell import all_archs
    from latlab.predictors import make_predictor

    source = ensure_nb201(args.source)
    refs = [f"nb201:{a}" for a in all_archs()]
    table = pd.read_csv(args.data, usecols=["network", args.device])
    table = table[table[args.device] > 0].sample(n=900, random_state=0)
    train_refs, y = table["network"].tolist(), table[args.device].to_numpy()

    t0 = time.perf_counter()
    graphs = [resolve(r) for r in refs]
    for g in graphs:
        g.totals  # noqa: B018  (the summary features read them)
    resolve_s = time.perf_counter() - t0
    print(f"graphs from {source}; resolving + totals of {len(refs)} references: {resolve_s:.2f} s")

    params = {
        "gbm": {"n_jobs": args.threads},
        "rf": {"n_jobs": args.threads},
        "fcnn": {"max_epochs": 5 if args.quick else 30},
        "gcn": {"max_epochs": 2 if args.quick else 10},
    }
    results = {}
    for name in args.predictors.split(","):
        model = make_predictor(name, **params[name]).fit(train_refs, y)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred = model.predict(refs)
            best = min(best, time.perf_counter() - t0)
        assert len(pred) == len(refs) and np.all(np.isfinite(pred)) and np.all(pred > 0)
        t0 = time.perf_counter()
        model.predict(graphs)
        from_graphs = time.perf_counter() - t0
        ok = best <= TARGETS_S[name]
        results[name] = {"from_references_s": best, "from_graphs_s": from_graphs, "ok": ok}
        print(
            f"{name:5s} {len(refs)} networks from references: {best:6.2f} s "
            f"(model + features on resolved graphs {from_graphs:5.2f} s) "
            f"target <= {TARGETS_S[name]:.0f} s: {'ok' if ok else 'MISSED'}",
            flush=True,
        )
    doc = {
        "benchmark": "predict_speed",
        "threads": args.threads,
        "networks": len(refs),
        "graph_source": source,
        "resolve_s": resolve_s,
        "repeats": repeats,
        "platform": platform.platform(),
        "results": results,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
