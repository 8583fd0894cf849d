"""Paired timing against a reference: corrected medians, reference values, drift, exports.

Real onnxruntime runs into real SQLite stores. Timing assertions are structural (the ratio is
the median of same-round ratios, recomputed from the stored samples) or have generous bounds.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from latlab.datasets.measure import MeasureConfig, measure, measure_many
from latlab.datasets.measure.reference import establish_reference, stored_reference
from latlab.datasets.measure.rounds import runs_per_block, time_rounds
from latlab.datasets.store import Store
from latlab.datasets.tables import load_table, save_table
from latlab.errors import DriftError, MeasurementError, StoreError

REF = "fcnn:128-256-128"
PAIRED = MeasureConfig(
    repeats=30, min_repeats=5, time_budget_s=0.05, max_warmup_s=0.05, reference=REF
)
NETS = ["fcnn:64-256-256-10", "fcnn:32-512-64", "fcnn:256-256-256-10"]
FASTREF = {"reference_blocks": 3, "reference_spacing_s": 0.02}


def _block_medians(samples: list[float], k: int) -> np.ndarray:
    x = np.asarray(samples)
    return np.median(x[: len(x) // k * k].reshape(-1, k), axis=1)


def test_ratio_is_the_median_of_same_round_ratios() -> None:
    m = measure(NETS[0], PAIRED, reference_value_ms=2.0)
    k_net, k_ref = m.extra["runs_per_block"]
    net = _block_medians(m.samples_ms, k_net)
    ref = _block_medians(m.reference_samples_ms, k_ref)
    assert len(net) == len(ref) == m.rounds >= 5
    # exactly the median over rounds of (network / reference in that round) ...
    assert m.ratio == pytest.approx(float(np.median(net / ref)), rel=1e-9)
    # ... not a ratio of separately taken medians (they differ whenever rounds differ)
    assert m.corrected_ms == pytest.approx(2.0 * m.ratio)
    assert m.median_ms == pytest.approx(float(np.median(net)))
    assert m.reference_median_ms == pytest.approx(float(np.median(ref)))
    assert m.load["seconds"] > 0 and m.load["cores"] >= 1 and "other_cores" in m.load
    assert m.protocol["reference"] == REF


def test_interleaved_rounds_cancel_a_slowdown_that_hits_both() -> None:
    # A machine that halves its speed half-way: every run takes twice as long from then on.
    now = [0]
    calls = [0]

    def clock() -> int:
        return now[0]

    def runner(cost_ns: int):
        def run() -> None:
            calls[0] += 1
            now[0] += cost_ns * (2 if calls[0] > 120 else 1)

        return run

    rounds = time_rounds(
        [runner(3000), runner(1000)],
        clock,
        blocks=[3, 3],
        max_rounds=40,
        min_rounds=40,
        budget_s=1.0,
    )
    net, ref = rounds.blocks_ms
    assert rounds.rounds == 40 and set(np.round(net / ref, 9)) == {3.0}  # every round
    assert net.max() == 2 * net.min()  # the raw times moved by 100 %
    assert runs_per_block(50.0) == 1 and runs_per_block(0.01) == 50 and runs_per_block(1.0) == 3


def _busy() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def test_busy_processes_move_raw_more_than_corrected() -> None:
    cfg = dataclasses.replace(PAIRED, repeats=400, time_budget_s=0.4, min_repeats=20)
    quiet = measure("fcnn:256-512-512-10", cfg, reference_value_ms=1.0)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_busy, daemon=True) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        import time

        time.sleep(0.3)  # let them start spinning
        busy = measure("fcnn:256-512-512-10", cfg, reference_value_ms=1.0)
    finally:
        for p in procs:
            p.terminate()
            p.join()
    assert busy.load["other_cores"] > 0.3  # the busy processes were seen
    raw_move = abs(busy.median_ms / quiet.median_ms - 1)
    cor_move = abs(busy.corrected_ms / quiet.corrected_ms - 1)
    # generous: the corrected median never moves much more than the raw one
    assert cor_move <= raw_move + 0.25


def test_campaigns_share_one_reference_value(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    first = measure_many(NETS[:2], PAIRED, store, "dev", **FASTREF)
    value = first.reference_value
    assert value is not None and value.value_ms > 0
    assert value.extra["rule"] == "lower quartile of block medians"
    assert len(value.extra["block_medians_ms"]) == 3 and "load" in value.extra
    # a later campaign with another protocol of the same configuration reuses the value
    later_cfg = dataclasses.replace(PAIRED, repeats=40)
    later = measure_many(NETS, later_cfg, store, "dev", **FASTREF)
    assert later.reference_value.id == value.id
    assert len(store.reference_values("dev")) == 1
    long = store.measurements(["dev"])
    assert set(long["reference_value_id"]) == {value.id}
    assert np.allclose(long["corrected_ms"], long["ratio"] * value.value_ms)
    # the same network in both campaigns: corrected medians on one scale (generous bound)
    a = long[long["network"] == NETS[0]]["corrected_ms"].to_numpy()
    assert len(a) == 2 and 0.5 < a[0] / a[1] < 2.0
    # re-establishing moves every stored corrected median onto the new value
    new = establish_reference(store, "dev", PAIRED, blocks=2, spacing_s=0.0, replace_existing=True)
    assert new.id != value.id and stored_reference(store, "dev", PAIRED).id == new.id
    again = store.measurements(["dev"])
    assert np.allclose(again["corrected_ms"], again["ratio"] * new.value_ms)
    assert set(again["reference_value_id"]) == {new.id}


def test_export_raw_and_corrected_and_sidecar(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    measure_many(NETS, PAIRED, store, "dev", **FASTREF)
    raw = store.export_table(devices=["dev"], value="raw")
    cor = store.export_table(devices=["dev"], value="corrected")
    long = store.measurements(["dev"]).set_index("network")
    assert raw["dev"].tolist() == long.loc[NETS, "median_ms"].tolist()
    assert cor["dev"].tolist() == pytest.approx(long.loc[NETS, "corrected_ms"].tolist())
    assert cor.attrs["latlab"]["columns"]["dev"]["reference"] == REF
    out = tmp_path / "t.csv"
    save_table(cor, out)
    loaded = load_table(out)
    assert loaded.meta["value"] == "corrected" and loaded.devices == ["dev"]
    assert loaded.meta["columns"]["dev"]["reference_value_ms"] > 0
    save_table(raw, out, meta={})
    assert load_table(out).meta == {}  # a stale sidecar is removed, never describes another
    # corrected values never fall back to raw: an unpaired device cannot export them
    plain = dataclasses.replace(PAIRED, reference=None)
    measure_many(NETS[:1], plain, store, "plain", anchor=None)
    with pytest.raises(StoreError, match=r"no drift-corrected value.*'plain'.*value='raw'"):
        store.export_table(devices=["plain"], value="corrected")
    with pytest.raises(StoreError, match="unknown export value"):
        store.export_table(value="median")


def test_reference_that_cannot_run_is_named_and_nothing_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not an onnx model")
    store = Store(tmp_path / "s.db")
    cfg = dataclasses.replace(PAIRED, reference=f"onnx:{bad}")
    with pytest.raises(MeasurementError, match=rf"reference network 'onnx:{bad}'"):
        measure_many(NETS, cfg, store, "dev", **FASTREF)
    assert store.measurements().empty and store.devices().empty


def test_max_drift_stops_the_campaign_keeping_finished_work(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    nets = [*NETS, "fcnn:16-16", "fcnn:48-96-10"]
    # a bound no real machine meets: the first measurement sets the baseline (drift 0), the
    # next one whose reference median differs at all stops the campaign
    with pytest.raises(DriftError, match=rf"reference '{REF}' drifted .*--max-drift"):
        measure_many(nets, PAIRED, store, "dev", max_drift=1e-12, **FASTREF)
    kept = store.measured_references("dev", PAIRED.protocol_key())
    assert 1 <= len(kept) < len(nets)
    resumed = measure_many(nets, PAIRED, store, "dev", **FASTREF)
    assert sorted(resumed.skipped) == sorted(kept)
    assert len(resumed.measured) == len(nets) - len(kept)
    with pytest.raises(MeasurementError, match="max_drift must be positive"):
        measure_many(nets, PAIRED, store, "dev", max_drift=0.0)


def test_strict_reference_refuses_a_noisy_value(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.add_device("dev")
    # a spread bound of zero: any two blocks differ, so the value is suspect and refused
    with pytest.raises(MeasurementError, match=rf"reference value of '{REF}' on 'dev' refused"):
        establish_reference(
            store, "dev", PAIRED, blocks=3, spacing_s=0.0, max_spread=0.0, strict=True
        )
    assert stored_reference(store, "dev", PAIRED) is None
    value = establish_reference(store, "dev", PAIRED, blocks=3, spacing_s=0.0, max_spread=0.0)
    assert value.quality == "suspect" and any("spread" in r for r in value.extra["reasons"])
