"""Benchmark store -> tables the layer predictors train on.

:func:`training_table` is a dataset table in the usual format (``network`` + latency columns in
ms), so ``latlab train --data TABLE --target DEVICE`` fits a layer-wise predictor on it. Rows:

* every single-layer benchmark (``kernel:`` reference): its **layer time**. Column ``DEVICE``
  holds the chosen method (``padded`` by default: smart padding, the layer's marginal cost in a
  network, without the session overhead); ``DEVICE@single``, ``DEVICE@padded`` and
  ``DEVICE@profile`` hold all three, so ``--target DEVICE@single`` trains on plain single-layer
  benchmarks for comparison. Smart-padding differences of layers that cost less than the
  measurement noise can come out at or below zero; they are raised to ``floor_ms`` (0.5 us).
  Embedding benchmarks (``kernel:embed``, which read token ids no padding layer produces) get
  their single-layer time less the session probe's as their ``padded`` value.
* multi-layer benchmarks: the time of the whole chain by each method (no ``padded`` value: the
  padding suite measures single layers); layer predictors learn fusion from their structure.
* the session probe (:data:`~.suites.SESSION_PROBE`): its end-to-end latency in every column:
  the per-inference overhead a layer-wise predictor adds once per network.

:func:`fusion_table` exports the stored fusion labels (one row per layer pair).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from latlab.datasets.bench.suites import SESSION_PROBE
from latlab.datasets.bench.tables import METHODS, BenchStore
from latlab.datasets.store import Store
from latlab.errors import DataError

#: Smallest layer time written to a training table (ms).
FLOOR_MS = 5e-4


def training_table(
    store: Store,
    device: str,
    *,
    method: str = "padded",
    protocol_key: str | None = None,
    floor_ms: float = FLOOR_MS,
    other_protocols: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The training table of ``device``'s benchmarks (see the module docstring).

    ``other_protocols`` maps protocol keys other than ``protocol_key`` to the option that
    selects them (``{key: "--timer thread"}``): when the store holds the device's benchmarks
    only under one of those, the error says which option finds them."""
    if method not in METHODS:
        raise DataError(f"unknown layer benchmark method {method!r} (known: {', '.join(METHODS)})")
    bench = BenchStore(store)
    every = bench.layer_benchmarks(device)
    # the context suite's generated networks are the kernel predictor's data (kernel_rows),
    # not layer benchmarks: the layer models train on the kernel:/multi-layer suites only
    every = every[every["suite"] != "context"] if "suite" in every else every
    long = every
    if protocol_key is not None:
        long = long[long["protocol_key"] == protocol_key]
    if long.empty and not every.empty:
        counts = every["network"].groupby(every["protocol_key"]).nunique()
        hints = [
            f"{int(n)} measured with {(other_protocols or {})[key]}"
            for key, n in counts.items()
            if key in (other_protocols or {})
        ]
        where = f"device {device!r} in store {store.display_url}"
        if hints:
            raise DataError(
                f"no layer benchmarks of {where} were measured with this protocol, but "
                f"{'; '.join(hints)}: pass those options"
            )
        raise DataError(
            f"no layer benchmarks of {where} with protocol {protocol_key}: its {int(counts.sum())}"
            f" benchmarks were measured under other protocols ({', '.join(map(str, counts.index))})"
        )
    if long.empty:
        raise DataError(f"no layer benchmarks of device {device!r} in store {store.display_url}")
    long = long.drop_duplicates(["network", "method"], keep="last")
    wide = long.pivot(index="network", columns="method", values="latency_ms")
    order = list(dict.fromkeys(long["network"]))
    wide = wide.reindex(index=order, columns=list(METHODS))
    probe = wide.index == SESSION_PROBE
    if probe.any():
        wide.loc[probe, list(METHODS)] = wide.loc[probe, "single"].to_numpy()[:, None]
        # an embedding reads token ids, which no padding layer produces (not in the padding
        # suite): its padded value is its single-layer time less the session overhead
        embed = wide.index.str.startswith("kernel:embed?") & wide["padded"].isna().to_numpy()
        overhead = float(wide.loc[probe, "single"].median())
        wide.loc[embed, "padded"] = wide.loc[embed, "single"] - overhead
    wide = wide.clip(lower=floor_ms)
    out = pd.DataFrame({"network": wide.index})
    out[device] = wide[method].to_numpy()
    for m in METHODS:
        out[f"{device}@{m}"] = wide[m].to_numpy()
    return out


def fusion_table(store: Store, device: str) -> pd.DataFrame:
    """The stored fusion labels of ``device`` (network, producer, consumer, ops, kinds, label)."""
    df = BenchStore(store).fusion_labels(device)
    if df.empty:
        raise DataError(
            f"no fusion labels of device {device!r} in store {store.display_url}: "
            "run latlab bench --suite multilayer first"
        )
    return df.drop(columns=["device"])


def kernel_rows(
    store: Store, device: str, networks: set[str] | None = None, *, exclude_zoo: bool = True
) -> pd.DataFrame:
    """Every stored profiled kernel of ``device`` with its features: the kernel models' data.

    One row per executed node of every profile that carries kernel features (profiles taken
    by this version of the bench suites): ``network``, ``node_index``, ``node`` (the node's name
    in the optimised graph, "" when unnamed), ``op``, ``family``,
    ``features`` (dict), ``time_us`` (the profile's statistic: the median, or the 10th
    percentile under the ``thread`` timer, times the profile's reference scale) and ``runs``.
    ``networks`` restricts the rows to those references (a training split); real networks
    (``zoo:``) are left out unless ``exclude_zoo`` is False, because they are the test set
    of every kernel model.
    """
    bench = BenchStore(store)
    nodes = bench.profile_nodes(device)
    cols = ["network", "node_index", "node", "op", "family", "features", "time_us", "runs"]
    if nodes.empty:
        return pd.DataFrame(columns=cols)
    profs = bench.profiles(device)
    timer = {
        (r.network, r.settings_key): (r.settings or {}).get("timer", "wall")
        for r in profs.itertuples()
    }
    # the reference scale of each profile (1 for unpaired benches and older profiles)
    scale = {
        (r.network, r.settings_key): float((r.extra or {}).get("scale", 1.0))
        for r in profs.itertuples()
    }
    rows = []
    for r in nodes.itertuples():
        if networks is not None and r.network not in networks:
            continue
        if exclude_zoo and str(r.network).startswith("zoo:"):
            continue
        kern = (r.extra or {}).get("kernel") if isinstance(r.extra, dict) else None
        if not kern or not r.runs:
            continue
        stat = r.p10_us if timer.get((r.network, r.settings_key)) == "thread" else r.median_us
        if stat is None or stat != stat:
            continue
        rows.append(
            {
                "network": r.network,
                "node_index": int(r.node_index),
                "node": str(r.node or ""),
                "op": kern["op"],
                "family": kern["family"],
                "features": kern["features"],
                "time_us": float(stat) * scale.get((r.network, r.settings_key), 1.0),
                "runs": int(r.runs),
            }
        )
    return pd.DataFrame(rows, columns=cols)
