"""The measurement and training steps of the ``annette`` experiment
(:mod:`latlab.experiments.annette`): benchmarks, network measurements, profiles, the
layer-wise and kernel predictors."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from latlab.datasets.bench.campaign import run_bench
from latlab.datasets.bench.tables import BenchStore
from latlab.datasets.references import resolve
from latlab.datasets.store import Store
from latlab.experiments.annette_settings import KERNEL, MODELS, Settings, step_progress
from latlab.experiments.context import Progress
from latlab.predictors import make_predictor
from latlab.predictors.layerwise import LayerwisePredictor

log = logging.getLogger("latlab.experiments.annette")


# --------------------------------------------------------------------------- steps


def run_benchmarks(
    store: Store, device: str, s: Settings, notify: Progress | None = None
) -> dict[str, Any]:
    cfg = s.bench_config()
    out = {}
    for suite, count in (
        ("kernels", s.kernels),
        ("padding", s.kernels),
        ("multilayer", s.multilayer),
        ("context", s.context),
    ):
        if suite == "context" and not count:
            continue
        t0 = time.monotonic()
        res = run_bench(
            suite,
            store,
            device,
            count=count,
            seed=s.seed,
            config=cfg,
            profile_runs=s.profile_runs,
            progress=step_progress(f"benchmarks: {suite}", notify),
        )
        out[suite] = {
            "benchmarks": len(res.references),
            "measured_now": len(res.measured),
            "failed": len(res.failed),
            "seconds": round(time.monotonic() - t0, 1),
        }
        log.info("%s: %s", suite, out[suite])
    return out


def measure_networks(
    store: Store, device: str, refs: list[str], s: Settings, notify: Progress | None = None
) -> pd.Series:
    """End-to-end medians (ms) of ``refs`` under the network protocol (resumable)."""
    from latlab.datasets.measure.protocol import measure_many

    res = measure_many(
        refs,
        s.network_protocol,
        store,
        device,
        anchor=None,
        progress=step_progress("networks", notify),
    )
    log.info("networks: %d measured now, %d from the store", len(res.measured), len(res.skipped))
    df = store.measurements([device], s.network_protocol)
    df = df[df["network"].isin(set(refs))].drop_duplicates("network", keep="last")
    # the drift-corrected median where the protocol is paired, the raw one otherwise
    value = df["corrected_ms"].where(df["corrected_ms"].notna(), df["median_ms"])
    out = value.set_axis(df["network"]).reindex(refs)
    out.attrs["measured_now"] = len(res.measured)
    return out


def profile_networks(
    store: Store, device: str, refs: list[str], s: Settings, notify: Progress | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Runtime groups with profiled times per network (profiled once, then read back).

    Where the network has a paired measurement under ``s.network_protocol`` (measure it
    first), its profile is stored with that measurement's reference scale (corrected / raw
    median), as ``latlab bench`` stores the profiles of its benchmarks: the kernel times the
    predictor trained on and the zoo's profiled kernels then share the device's reference
    scale, so a per-kernel comparison is not shifted by the machine's drift in between.
    """
    import onnxruntime as ort

    from latlab.datasets.bench.profile import profile_network
    from latlab.datasets.bench.tables import settings_key
    from latlab.datasets.bench.trace import fusion_labels

    bench = BenchStore(store)
    out: dict[str, list[dict[str, Any]]] = {}
    key = settings_key(
        {
            "threads": 1,
            "onnxruntime": ort.__version__,
            "graph_optimization": "all",
            "timer": s.timer,
        }
    )
    stored = bench.profiles(device)
    stored = stored[stored["settings_key"] == key]
    scales = _reference_scales(store, device, s.network_protocol)
    for i, ref in enumerate(refs):
        if notify is not None:
            notify("profiling zoo", i, len(refs))
        got = stored[stored["network"] == ref]
        if len(got):
            out[ref] = list(got["groups"].iloc[-1])
            continue
        runs, warmup, budget = s.zoo_profile
        prof = profile_network(ref, runs=runs, warmup=warmup, time_budget_s=budget, timer=s.timer)
        labels = fusion_labels(prof.mapping, set(prof.node_samples_us))
        bench.add_profile(device, prof, labels, scale=scales.get(ref, 1.0))
        out[ref] = prof.group_table().to_dict(orient="records")
        log.info("profiled %s (%d/%d)", ref, i + 1, len(refs))
    if notify is not None:
        notify("profiling zoo", len(refs), len(refs))
    return out


def _reference_scales(store: Store, device: str, protocol: Any) -> dict[str, float]:
    """``{network: corrected / raw median}`` of the latest paired measurement of each network
    under ``protocol`` (networks measured unpaired are absent: their scale is 1)."""
    df = store.measurements([device], protocol)
    df = df[df["corrected_ms"].notna() & (df["median_ms"] > 0)]
    df = df.drop_duplicates("network", keep="last")
    return dict(zip(df["network"], df["corrected_ms"] / df["median_ms"], strict=True))


def train_models(
    table: pd.DataFrame, device: str, methods: tuple[str, ...], notify: Progress | None = None
) -> dict[tuple[str, str], LayerwisePredictor]:
    """``{(model, method): fitted predictor}`` on the benchmark table."""
    fitted: dict[tuple[str, str], LayerwisePredictor] = {}
    total = len(methods) * len(MODELS)
    for method in methods:
        col = f"{device}@{method}"
        rows = table[table[col].notna()]
        for name in MODELS:
            if notify is not None:
                notify("layer models", len(fitted), total)
            t0 = time.monotonic()
            model = make_predictor(name)
            model.fit(list(rows["network"]), rows[col].to_numpy(dtype=float))
            assert isinstance(model, LayerwisePredictor)
            fitted[(name, method)] = model
            if notify is not None:
                notify("layer models", len(fitted), total)
            log.info(
                "trained %s on %s (%d rows) in %.1f s",
                name,
                method,
                len(rows),
                time.monotonic() - t0,
            )
    return fitted


def train_kernel(store: Store, device: str, s: Settings) -> Any | None:
    """The ``kernel`` predictor fitted on the store's benchmark networks (None without the
    context suite): every ``kernel:`` and ``block:`` network with an end-to-end median under
    the benchmark protocol; the held-out generated, nb201 and zoo networks never are."""
    if not s.context:
        return None
    frame = store.export_table(
        devices=[device], protocol=s.bench_config(), value="corrected" if s.paired else "raw"
    )
    if device not in frame:
        return None
    ok = frame[device].notna() & frame["network"].str.startswith(("kernel:", "block:"))
    rows = frame[ok]
    url = store.url.render_as_string(hide_password=False)
    model = make_predictor(KERNEL, store=url, device=device, random_state=s.seed)
    t0 = time.monotonic()
    model.fit(list(rows["network"]), rows[device].to_numpy(dtype=float))
    model.fit_seconds_ = time.monotonic() - t0
    log.info("trained kernel on %d benchmark networks in %.1f s", len(rows), model.fit_seconds_)
    return model


def is_attention(reference: str) -> bool:
    """Whether a zoo network is an attention model (its graph's ``meta["attention"]``)."""
    return bool(resolve(reference).meta.get("attention", False))
