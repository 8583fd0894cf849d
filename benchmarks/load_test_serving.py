"""A bounded load test of a bundle served by ``mlflow models serve`` on loopback.

Starts ``mlflow models serve -m BUNDLE/mlflow_model --env-manager local`` on a free loopback
port, sends ``--requests`` requests of ``--batch`` network references (random rows of the
table, 90 % intervals) from ``--clients`` concurrent clients, reports throughput and p50 / p90
/ p99 request latency, checks that no request failed, and stops the server by its process id.
Exits non-zero when a request failed.

The bundle: ``--bundle``, else a LightGBM bundle trained here on the shared nb201 table, else
(no table: CI on a fresh clone) on FCNN latencies measured here with onnxruntime.

    python benchmarks/load_test_serving.py --quick   # 2 clients x 200 requests (< 60 s)
    python benchmarks/load_test_serving.py           # 2 clients x 1000 requests of 64

Writes ``benchmarks/results/load_test_serving[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_common import TABLE, load_note, machine, write_result


def make_bundle(table: Path, tmp: Path) -> tuple[Path, list[str], str]:
    """A bundle and the references to send: nb201 when the table exists, else measured FCNNs."""
    from latlab.training.pipeline import TrainConfig, train

    if table.exists():
        config = TrainConfig("gbm", train_size=900, val_size=100, cal_size=500)
        out = train(table, "titanx_32", config, tmp / "gbm").out
        return out, pd.read_csv(table)["network"].tolist(), f"nb201 table ({table.name})"
    from latlab.datasets.measure import MeasureConfig
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store
    from latlab.datasets.tables import save_table

    refs = sample("fcnn", 60, seed=0)
    store = Store(tmp / "store.db")
    config_m = MeasureConfig(repeats=15, min_repeats=5, time_budget_s=0.05, max_warmup=20)
    measure_many(refs, config_m, store, "cpu", anchor=None)
    save_table(store.export_table(devices=["cpu"]), tmp / "fcnn.csv")
    store.close()
    config = TrainConfig("gbm", train_size=35, val_size=5, cal_size=20)
    out = train(tmp / "fcnn.csv", "cpu", config, tmp / "gbm").out
    return out, refs, "60 FCNNs measured here (onnxruntime)"


def main() -> None:
    import latlab
    from latlab.training.mlflow_server import ModelServer, load_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 clients x 200 requests")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    args = ap.parse_args()
    n_requests = args.requests or (200 if args.quick else 1000)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle is not None:
            bundle, what = args.bundle, str(args.bundle)
            refs = (
                pd.read_csv(args.table)["network"].tolist()
                if args.table.exists()
                else latlab.load_bundle(bundle).split.get("train", [])
            )
        else:
            bundle, refs, what = make_bundle(args.table, tmp)
        t_bundle = time.perf_counter() - t0
        server = ModelServer(bundle, workers=args.workers, log_path=tmp / "server.log")
        t1 = time.perf_counter()
        with server:
            startup = time.perf_counter() - t1
            pid = server.proc.pid if server.proc else None
            load_test(server.url, refs, clients=args.clients, requests=10, batch=args.batch)
            report = load_test(
                server.url,
                refs,
                clients=args.clients,
                requests=n_requests,
                batch=args.batch,
                confidence=0.9,
            )
    report.update(
        {
            "bundle": what,
            "server_pid": pid,
            "server_workers": args.workers,
            "startup_s": startup,
            "bundle_s": t_bundle,
            **machine(),
            "quick": args.quick,
        }
    )
    lines = [
        "# HTTP serving: `mlflow models serve --env-manager local` on loopback",
        "",
        f"`python benchmarks/load_test_serving.py{' --quick' if args.quick else ''}`; bundle: "
        f"LightGBM on {what}; {report['cores']} cores, load average "
        f"{report['load_average'][0]:.1f} "
        f"{load_note(report['load_average'][0])}. "
        f"Server "
        f"up in {startup:.1f} s, {args.workers} worker, stopped by its pid.",
        "",
        "| clients | requests | batch | failed | requests/s | networks/s | p50 ms | p90 ms "
        "| p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report['clients']} | {report['requests']} | {report['batch']} | "
        f"{report['failed']} | {report['requests_per_s']:.1f} | {report['networks_per_s']:.0f} "
        f"| {report['p50_ms']:.1f} | {report['p90_ms']:.1f} | {report['p99_ms']:.1f} |",
    ]
    write_result("load_test_serving_quick" if args.quick else "load_test_serving", report, lines)
    if report["failed"]:
        print("failed requests:", *report["failures"], sep="\n", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
