"""Where the INT8 (and FP32) kernel predictor's error on held-out networks comes from.

Reads the bench store a ``latlab experiment run precision`` left (``DIR/bench.db``), fits the
kernel predictor of each precision as the experiment does (on the networks of the store that
have context profiles), then for every held-out network profiles it at that precision and
compares, per kernel family, the profiled time with the predicted one; and, per network, the
measured end-to-end latency with the profiled kernel sum and with the prediction. A gap
between measured and profiled sum is the overhead model's; a gap between profiled and
predicted kernels is the kernel models'.

    python benchmarks/precision_kernel_errors.py /tmp/prec-quick      # ~1 min, prints markdown
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
from bench_common import load_note, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="output folder of latlab experiment run precision")
    ap.add_argument("--top", type=int, default=8, help="families shown per network")
    args = ap.parse_args()

    import numpy as np

    from latlab.datasets.bench.export import kernel_rows
    from latlab.datasets.bench.profile import profile_network
    from latlab.datasets.measure import default_device_name
    from latlab.datasets.store import Store
    from latlab.experiments.precision import QUICK
    from latlab.predictors.base import make_predictor

    db = f"{args.dir}/bench.db"
    store = Store(db)
    url = store.url.render_as_string(hide_password=False)
    base = default_device_name("onnxruntime", 1)
    load = machine()["load_average"][0]
    lines = ["# Kernel predictor error by kernel family (held-out networks)", "",
             f"load average {load:.2f} {load_note(load)}", ""]  # fmt: skip
    for prec in ("fp32", "int8"):
        dev = base + ("" if prec == "fp32" else "-int8")
        frame = store.export_table(devices=[dev]).set_index("network")
        train = sorted(set(kernel_rows(store, dev)["network"]) & set(frame.index))
        zoo = [z for z in QUICK.zoo if z in frame.index]
        model = make_predictor("kernel", store=url, device=dev, random_state=0)
        model.fit(train, frame.loc[train, dev].to_numpy(dtype=float))
        per = model.predict_layers(zoo)
        sc, pk, oh = per.attrs["scale"], per.attrs["per_kernel_ms"], per.attrs["overhead_ms"]
        lines += [f"## {prec} ({dev}, {len(train)} training networks)", "",
                  f"fitted overhead: scale {sc:.3f}, {1e3 * pk:.2f} us per kernel, "
                  f"{oh:.3f} ms per network", "",
                  "| network | measured ms | profiled kernels ms | predicted kernels ms | "
                  "predicted ms |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        fam_rows = []
        for ref in zoo:
            prof = profile_network(ref, runs=20, warmup=3, time_budget_s=1.0, precision=prec,
                                   timer="thread")  # fmt: skip
            meas: dict[str, float] = defaultdict(float)
            for k in prof.kernels:
                t = prof.node_us(k.index)
                if t == t:
                    meas[k.family] += t / 1e3
            mine = per[per["network"] == ref]
            pred = mine.groupby("family")["predicted_ms"].sum().to_dict()
            n = len(mine)
            total = sc * mine["predicted_ms"].sum() + pk * n + oh
            lines.append(f"| {ref} | {frame.loc[ref, dev]:.2f} | {sum(meas.values()):.2f} | "
                         f"{mine['predicted_ms'].sum():.2f} | {total:.2f} |")  # fmt: skip
            for fam in sorted(set(meas) | set(pred), key=lambda f: -meas.get(f, 0.0)):
                m, p = meas.get(fam, 0.0), pred.get(fam, 0.0)
                fam_rows.append((ref, fam, m, p, (p - m) / m * 100 if m > 0 else np.nan))
        lines += ["", "| network | family | profiled ms | predicted ms | error % |",
                  "|---|---|---:|---:|---:|"]  # fmt: skip
        shown: dict[str, int] = defaultdict(int)
        for ref, fam, m, p, e in fam_rows:
            if shown[ref] >= args.top:
                continue
            shown[ref] += 1
            lines.append(f"| {ref} | {fam} | {m:.3f} | {p:.3f} | {e:+.0f} |")
        lines.append("")
    store.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
