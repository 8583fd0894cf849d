"""Paired timing against a reference: corrected medians, reference values, drift, exports.

Real onnxruntime runs into real SQLite stores. Timing assertions are structural (the ratio is
the median of same-round ratios, recomputed from the stored samples) or have generous bounds.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latlab.datasets.measure import DEFAULT_REFERENCE, MeasureConfig, measure, measure_many
from latlab.datasets.measure.reference import establish_reference, stored_reference
from latlab.datasets.measure.rounds import paired_blocks, runs_per_block, time_rounds
from latlab.datasets.store import Store
from latlab.datasets.tables import load_table, save_table
from latlab.errors import DriftError, MeasurementError, StoreError

REF = "fcnn:128-256-128"
PAIRED = MeasureConfig(
    repeats=30, min_repeats=5, time_budget_s=0.05, max_warmup_s=0.05, reference=REF, block_ms=5.0
)
NETS = ["fcnn:64-256-256-10", "fcnn:32-512-64", "fcnn:256-256-256-10"]
FASTREF = {"reference_blocks": 3, "reference_spacing_s": 0.02}


def test_ratio_is_the_median_of_same_round_ratios() -> None:
    m = measure(NETS[0], PAIRED, reference_value_ms=2.0)
    net = np.asarray(m.samples_ms)  # one per round: the network's mean run in the round
    ref = np.asarray(m.reference_samples_ms)  # the reference's, in the same round
    assert len(net) == len(ref) == m.rounds >= 10
    k_net, k_ref = m.extra["runs_per_block"]
    assert m.repeats == k_net * m.rounds and k_net >= 1 and k_ref >= 1
    # exactly the median over rounds of (network / reference in that round) ...
    assert m.ratio == pytest.approx(float(np.median(net / ref)), rel=1e-9)
    assert m.corrected_ms == pytest.approx(2.0 * m.ratio)
    assert m.reference_median_ms > 0 and m.median_ms > 0
    assert m.extra["ratio_robust_cv"] == pytest.approx(
        1.4826 * np.median(np.abs(net / ref - m.ratio)) / m.ratio
    )
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
    assert runs_per_block(50.0) == 1 and runs_per_block(0.01) == 2000 and runs_per_block(1.0) == 20
    # blocks of about equal duration: >= 20 ms, the reference's at most 50 ms
    assert paired_blocks(100.0, 0.25) == (1, 200) and paired_blocks(1.0, 0.25) == (20, 80)


def test_grouped_rounds_let_each_member_leave_on_its_own_rule() -> None:
    # three networks beside one reference: each budgeted member stops after its own rounds
    now = [0]

    def clock() -> int:
        return now[0]

    def runner(cost_ns: int):
        def run() -> None:
            now[0] += cost_ns

        return run

    rounds = time_rounds(
        [runner(2000), runner(4000), runner(6000), runner(1000)],
        clock,
        blocks=[2, 1, 1, 2],
        max_rounds=[12, 20, 30],
        min_rounds=[10, 10, 10],
        budget_s=1e-4,  # 100 us of each member's own runs
        budget_member=[0, 1, 2],
    )
    # member 0: 4 us a round, budget met at round 25 but max 12; member 1: budget at 25, max
    # 20; member 2: 6 us a round, budget met at round 17 (>= its 10 fewest)
    assert [len(b) for b in rounds.blocks_ms] == [12, 20, 17, 20]
    assert list(rounds.taken[2]) == list(range(17)) and list(rounds.taken[3]) == list(range(20))
    assert len(rounds.samples_ns[0]) == 24 and len(rounds.samples_ns[3]) == 40


def test_a_grouped_campaign_times_each_network_beside_the_shared_reference(
    tmp_path: Path,
) -> None:
    grouped = dataclasses.replace(PAIRED, group=3)
    assert grouped.protocol_key() != PAIRED.protocol_key()
    assert "group" not in PAIRED.protocol()  # group 1 keeps the keys stores already hold
    store = Store(tmp_path / "g.db")
    res = measure_many(NETS, grouped, store, "dev", **FASTREF)
    assert [m.network for m in res.measured] == NETS
    for m in res.measured:
        net, ref = np.asarray(m.samples_ms), np.asarray(m.reference_samples_ms)
        assert m.extra["group"] == 3 and len(net) == len(ref) == m.rounds >= 10
        assert m.ratio == pytest.approx(float(np.median(net / ref)), rel=1e-9)
        assert m.corrected_ms == pytest.approx(m.ratio * res.reference_value.value_ms)
    # the same networks one by one: the ratios agree within the noise of a short protocol
    alone = measure_many(NETS, PAIRED, Store(tmp_path / "a.db"), "dev", **FASTREF)
    for g, a in zip(res.measured, alone.measured, strict=True):
        assert g.ratio == pytest.approx(a.ratio, rel=0.35)
    # resumes: nothing is timed again
    again = measure_many(NETS, grouped, store, "dev", **FASTREF)
    assert not again.measured and again.skipped == NETS


def test_a_grouped_campaign_keeps_the_networks_before_one_that_cannot_be_prepared(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "g.db")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")  # a reference that parses, but cannot be imported
    bad = f"onnx:{broken}"
    with pytest.raises(Exception, match=r"broken\.onnx"):
        measure_many(
            [NETS[0], bad, NETS[1]],
            dataclasses.replace(PAIRED, group=3),
            store,
            "dev",
            **FASTREF,
        )
    key = dataclasses.replace(PAIRED, group=3).protocol_key()
    assert store.measured_references("dev", key) == {NETS[0]}  # timed before the failure


def _busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes spinning on a core each (a bare interpreter: they start at once)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def test_busy_processes_move_raw_more_than_corrected() -> None:
    # the default protocol's 20 ms blocks: each spans several scheduler slices, so the busy
    # processes take the same share of the network's and the reference's block
    cfg = MeasureConfig(
        time_budget_s=0.3, max_warmup_s=0.2, max_remeasures=0, reference=DEFAULT_REFERENCE
    )
    net = "cnn:r96-c32s2-rb32x2-rb64s2x2-fc10"  # ~2 ms
    quiet = measure(net, cfg, reference_value_ms=1.0)
    procs = _busy(len(os.sched_getaffinity(0)))
    try:
        time.sleep(0.3)  # let them start spinning
        busy = measure(net, cfg, reference_value_ms=1.0)
    finally:
        _stop(procs)
    assert busy.load["other_cores"] > 0.3  # the busy processes were seen
    raw_move = abs(busy.median_ms / quiet.median_ms - 1)
    cor_move = abs(busy.corrected_ms / quiet.corrected_ms - 1)
    # generous (benchmarks/bench_busy_pairing.py shows the size of the effect): the corrected
    # median never moves much more than the raw one, and stays within a factor of two
    assert cor_move <= raw_move + 0.25 and cor_move < 1.0


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
    assert len(a) == 2 and 1 / 3 < a[0] / a[1] < 3.0
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


def test_pause_on_load_waits_while_busy_processes_compete(tmp_path: Path) -> None:
    from latlab.datasets.measure.load import competing, sample_load, wait_for_quiet

    procs = _busy(len(os.sched_getaffinity(0)) + 1)
    try:
        time.sleep(0.3)
        load = sample_load(0.5)
        assert competing(load, threads=1)  # more busy processes than cores
        waited = wait_for_quiet(1, max_wait_s=0.6, poll_s=0.3)
        assert waited >= 0.6  # it waited the whole bound, then gave up
        events = []
        store = Store(tmp_path / "s.db")
        result = measure_many(
            NETS[:1],
            PAIRED,
            store,
            "dev",
            pause_on_load=True,
            pause_max_s=0.3,
            progress=events.append,
            **FASTREF,
        )
    finally:
        _stop(procs)
    assert result.paused_s >= 0.3 and "paused" in [e.kind for e in events]
    stored = store.measurements(["dev"], extra=True).iloc[0]["extra"]["load"]
    assert set(stored) >= {"other_cores", "steal_cores", "own_cores", "loadavg", "cores"}


def test_threads_batch_and_mode_are_part_of_the_device(tmp_path: Path, capsys) -> None:
    from latlab.cli import main
    from latlab.datasets.measure import default_device_name

    base = default_device_name("onnxruntime")
    assert default_device_name("onnxruntime", 1, batch=1) == base  # defaults keep old names
    assert default_device_name("onnxruntime", 2, batch=8) == f"{base}-2t-b8"
    named = default_device_name("onnxruntime", 2, batch=8, mode="parallel", inter_op_threads=2)
    assert named == f"{base}-2t-b8-par2"
    db, out = tmp_path / "s.db", tmp_path / "t.csv"
    argv = ["measure", "fcnn:8-16-4", "--db", str(db), "--out", str(out), "--threads", "2"]
    argv += ["--batch", "8", "--mode", "parallel", "--repeats", "10", "--time-budget", "0.05"]
    argv += ["--no-reference"]  # (the corrected --out of the CLI: test_cli_measure.py)
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    table = load_table(out)
    assert table.devices == [named] and table.meta["value"] == "raw"
    store = Store(db)
    long = store.measurements([named], extra=True)
    assert len(long) == 1
    info = store.devices().set_index("name").loc[named, "info"]
    assert info["backend"] == "onnxruntime"
    with store.engine.connect() as conn:
        import sqlalchemy as sa

        proto, binfo = conn.execute(
            sa.text("SELECT protocol, backend_info FROM measurements")
        ).one()
    import json

    proto, binfo = json.loads(proto), json.loads(binfo)
    assert proto["threads"] == 2 and proto["batch"] == 8 and proto["mode"] == "parallel"
    assert binfo["execution_mode"] == "parallel" and binfo["inter_op_threads"] == 2
    # an unknown mode and a bad thread count are refused before any work
    for bad, message in (
        (["--mode", "async"], "--mode must be sequential or parallel"),
        (["--threads", "zero"], "--threads must be a positive number or 'all'"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["measure", "fcnn:8-8", "--db", str(tmp_path / "x.db"), *bad])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_unpaired_protocol_keys_are_unchanged() -> None:
    # stores written before paired timing keep resuming: defaults leave the key as it was
    cfg = MeasureConfig()
    assert "mode" not in cfg.protocol() and "reference" not in cfg.protocol()
    assert cfg.protocol_key() != dataclasses.replace(cfg, reference=REF).protocol_key()
    assert cfg.settings_key() == dataclasses.replace(cfg, reference=REF, repeats=70).settings_key()
    assert cfg.settings_key() != dataclasses.replace(cfg, batch=8).settings_key()


def test_bench_times_share_the_device_reference_scale(tmp_path: Path) -> None:
    from latlab.datasets.bench.campaign import run_bench
    from latlab.datasets.bench.tables import BenchStore

    store = Store(tmp_path / "s.db")
    measure_many(NETS[:1], PAIRED, store, "cpu", **FASTREF)  # establishes the value
    value = stored_reference(store, "cpu", PAIRED)
    bench_cfg = dataclasses.replace(PAIRED, repeats=15, max_warmup=10)
    refs = ["kernel:conv?h=14&c=16&f=16&k=3"]
    for suite in ("kernels", "padding"):
        res = run_bench(suite, store, "cpu", references=refs, config=bench_cfg, profile_runs=5)
        assert res.failed == {}
    assert len(store.reference_values("cpu")) == 1  # the network campaign's value, reused
    lb = BenchStore(store).layer_benchmarks("cpu").set_index("method")
    assert {lb.loc[m, "extra"]["value"] for m in ("single", "padded", "profile")} == {"corrected"}
    assert "other_cores" in lb.loc["padded", "extra"]["load"]
    single = store.measurements(["cpu"]).set_index("network").loc[refs[0]]
    assert single["reference_value_id"] == value.id
    assert lb.loc["single", "latency_ms"] == pytest.approx(single["corrected_ms"])


def test_stores_written_before_drift_columns_are_upgraded(tmp_path: Path) -> None:
    import sqlalchemy as sa

    db = tmp_path / "old.db"
    Store(db).close()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # make it a store of before the drift columns
        for table in ("measurements", "anchor_measurements"):
            for col in ("reference", "ratio", "corrected_ms", "reference_median_ms"):
                conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {col}"))
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN reference_value_id"))
    engine.dispose()
    store = Store(db)  # adds the columns back
    measure_many(NETS[:1], PAIRED, store, "dev", **FASTREF)
    row = store.measurements(["dev"]).iloc[0]
    assert row["corrected_ms"] > 0 and row["reference"] == REF
