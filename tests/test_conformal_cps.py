"""``cps``: layer-kind predictive systems summed to networks and recalibrated at network level,
on real single-layer benchmarks and real end-to-end measurements of this machine."""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets.bench.campaign import run_bench
from latlab.datasets.bench.export import training_table
from latlab.datasets.bench.suites import SESSION_PROBE
from latlab.datasets.measure import MeasureConfig, measure
from latlab.datasets.spaces import sample
from latlab.datasets.store import Store
from latlab.errors import DataError
from latlab.predictors import make_predictor
from latlab.predictors.conformal import load_conformal, make_conformal

FAST = MeasureConfig(repeats=20, min_repeats=5, time_budget_s=0.08, max_warmup=10,
                     max_warmup_s=0.05)  # fmt: skip


def _kernels() -> list[str]:
    refs = []
    for f in (16, 24, 32, 48, 64):
        for h in (8, 16, 32):
            refs.append(f"kernel:conv?c=16&h={h}&f={f}&k=3")
            refs.append(f"kernel:conv?c=16&h={h}&f={f}&k=1")
    refs += [f"kernel:conv?c={c}&h=16&f=32&k=3&s=2" for c in (16, 32)]
    refs += [f"kernel:fc?c={c}&f=10" for c in (16, 32, 64, 128)]
    refs += [f"kernel:avgpool?c={c}&h={h}&k=3" for c in (16, 32, 64) for h in (8, 16, 32)]
    refs += [f"kernel:add?c={c}&h={h}" for c in (16, 32, 64) for h in (8, 16, 32)]
    refs += [f"kernel:relu?c={c}&h={h}" for c in (16, 32, 64) for h in (8, 16, 32)]
    refs += [f"kernel:bn?c={c}&h={h}" for c in (16, 32, 64) for h in (8, 16, 32)]
    refs += [f"kernel:gpool?c={c}&h=8" for c in (16, 32, 64)]
    return refs


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Single-layer benchmarks (layer times) and 36 nb201 networks measured end to end."""
    st = Store(tmp_path_factory.mktemp("cps") / "bench.db")
    kernels = _kernels()
    run_bench("kernels", st, "cpu", references=[SESSION_PROBE, *kernels], config=FAST,
              profile_runs=2)  # fmt: skip
    table = training_table(st, "cpu", method="single")
    st.close()
    nets = sample("nb201", 36, seed=5)
    times = np.array([measure(n, FAST).median_ms for n in nets])
    return table, nets, times


@pytest.fixture(scope="module")
def split(measured):
    """Layer models on half the kernels; the other half and 20 networks calibrate."""
    table, nets, times = measured
    rows = table[table["network"] != SESSION_PROBE]
    perm = np.random.default_rng(0).permutation(len(rows))
    train = rows.iloc[perm[::2]]
    held = rows.iloc[perm[1::2]]
    probe = table[table["network"] == SESSION_PROBE]
    fit_refs = [*probe["network"], *train["network"]]
    fit_y = np.r_[probe["cpu"].to_numpy(), train["cpu"].to_numpy()]
    base = make_predictor("statistical", mapping="none", min_points=5, n_estimators=30)
    base.fit(fit_refs, fit_y)
    layer = (list(held["network"]), held["cpu"].to_numpy())
    return base, layer, (nets[:20], times[:20]), (nets[20:], times[20:])


def test_cps_validates_and_recalibrates_at_network_level(split, tmp_path):
    base, (lnets, lt), (cnets, ct), (tnets, tt) = split
    cp = make_conformal("cps", base, samples=400).calibrate(
        cnets, ct, layer_networks=lnets, layer_latencies_ms=lt
    )
    assert cp.n_calibration == 20 and cp.n_network_calibration_ == 20
    assert "*" in cp.layer_residuals_ and "conv" in cp.layer_residuals_
    # Layer models fitted without the fusion mapping sum every BN and ReLU separately and
    # over-predict these networks: the summed layer distributions miss most of them ...
    assert cp.aggregate_coverage_ < 50
    assert any("recalibrated at network level" in w for w in cp.warnings)
    # ... and the network-level recalibration holds >= 18 of the 20 calibration networks by
    # construction (two-sided quantiles at ranks 1 and 20 of 20), and most held-out ones.
    low, high = cp.predict_interval(cnets, 0.9)
    assert np.sum((ct >= low) & (ct <= high)) >= 18
    low, high = cp.predict_interval(tnets, 0.9)
    assert np.all(low > 0) and np.all(high > low)
    assert np.mean((tt >= low) & (tt <= high)) >= 0.6
    # The summed (independent) layer distributions are what the recalibration corrects.
    agg_low, agg_high = cp.aggregate_interval(tnets, 0.9)
    assert np.all(agg_low > 0) and np.all(agg_high > agg_low)
    narrow = cp.predict_interval(tnets, 0.5)
    assert np.all(narrow[1] - narrow[0] <= high - low + 1e-12)
    # Intervals do not depend on the batch a network comes in, and reload identically.
    one = cp.predict_interval(tnets[3:4], 0.9)
    assert one[0][0] == low[3] and one[1][0] == high[3]
    cp.save(tmp_path / "cps")
    again = load_conformal(tmp_path / "cps")
    a = again.predict_interval(tnets, 0.9)
    assert np.array_equal(a[0], low) and np.array_equal(a[1], high)


def test_cps_refuses_what_it_cannot_calibrate(split):
    base, (lnets, lt), (cnets, ct), _ = split
    with pytest.raises(DataError, match="cps needs a layer-wise predictor"):
        make_conformal("cps", make_predictor("flops").fit(cnets, ct))
    with pytest.raises(DataError, match="layer-level calibration data"):
        make_conformal("cps", base).calibrate(cnets, ct)
    with pytest.raises(DataError, match="network-level calibration data"):
        make_conformal("cps", base).calibrate(lnets, lt)
