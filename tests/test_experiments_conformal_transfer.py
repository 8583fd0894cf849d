"""The ``conformal`` and ``transfer`` experiments end to end on slices of the nb201 table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from latlab.errors import DataError
from latlab.experiments.context import ExperimentContext


def _slice(src: Path, dst: Path, rows: int, devices: list[str]) -> Path:
    import pandas as pd

    frame = pd.read_csv(src).sample(rows, random_state=3)
    frame[["network", *devices]].to_csv(dst, index=False)
    return dst


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_transfer_experiment_reports_rho_per_k_and_resumes(nb201_table_path, tmp_path):
    from latlab.experiments.transfer import MODELS, experiment

    data = _slice(nb201_table_path, tmp_path / "t.csv", 80, ["titanx_32", "gold_6240"])
    out = tmp_path / "out"
    out.mkdir()
    ctx = ExperimentContext(out=out, quick=True, data=data, command="test")
    m = experiment(ctx)
    # 80 rows leave >= 20 test networks for every quick k (5, 20, 50).
    assert m["settings"]["ks"] == [5, 20, 50]
    assert m["settings"]["devices"] == ["titanx_32", "gold_6240"]
    for model in MODELS:
        for k in ("5", "20", "50"):
            for dev in ("titanx_32", "gold_6240"):
                rho = m["results"][model][k]["devices"][dev]["spearman"]
                assert rho["n"] >= 1
                assert -1.0 <= rho["mean"] <= 1.0
                assert rho["std"] >= 0.0
    # The transfer predictor borrows from the other device: with 50 shots it ranks well.
    assert m["results"]["transfer"]["50"]["mean_spearman"] > 0.8
    report = (out / "report.md").read_text()
    assert "| transfer |" in report and "k=50" in report and "test" in report
    for name in ("rho_vs_k.png", "mean_rho_vs_k.png"):
        _png(out / name)
    json.dumps(m, allow_nan=False)
    # Few-shot intervals: one k = 10 CV+ (jackknife+) run per device and seed.
    fs = m["few_shot_intervals"]["cv+"]
    assert (fs["k"], fs["method"], fs["band"]) == (10, "cv+", [87.0, 95.0])
    # one source device left per target: no source-device simulation possible, so none run
    assert m["few_shot_intervals"]["sources"]["devices"] == {}
    assert set(fs["devices"]) == {"titanx_32", "gold_6240"}
    for v in fs["devices"].values():
        assert v["coverage"]["n"] == 2 and len(v["runs"]) == 2
        assert 0.0 < v["width"]["mean"] < 1e4
    # jackknife+ with 10 networks is conservative: about 90 % or more on 70 test networks
    assert 75.0 <= fs["mean_coverage"] <= 100.0, fs
    assert "Few-shot intervals: k = 10" in report
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * 2 * len(MODELS) + 2 * 2
    again = experiment(ctx)  # everything is in runs.jsonl: nothing is refitted
    assert (out / "runs.jsonl").read_text().splitlines() == lines
    assert again["results"] == m["results"]


def test_transfer_plan_follows_the_protocol_in_full_and_shrinks_for_quick():
    from latlab.experiments.transfer import plan

    devices = [f"d{i}" for i in range(13)]
    rows = dict.fromkeys(devices, 15625) | {"d6": 15442}
    full = plan(devices, rows, quick=False)
    # HELP's protocol as the issue states it: every device, 5 seeds, all other networks.
    assert full.devices == tuple(devices) and full.seeds == 5 and full.test_size is None
    assert full.ks == (5, 10, 20, 50, 100)
    quick = plan(devices, rows, quick=True)
    assert quick.devices == ("d0", "d6", "d12") and quick.seeds == 2
    assert quick.test_size == 1000 and quick.ks == (5, 20, 50)
    # A device with 60 valid rows keeps only the k that leave 20 test networks.
    assert plan(devices, rows | {"d3": 60}, quick=False).ks == (5, 10, 20)


def test_transfer_experiment_refuses_tables_it_cannot_use(nb201_table_path, tmp_path):
    from latlab.experiments.transfer import experiment

    one = _slice(nb201_table_path, tmp_path / "one.csv", 80, ["titanx_32"])
    with pytest.raises(DataError, match="at least two device columns"):
        experiment(ExperimentContext(out=tmp_path, quick=True, data=one))
    tiny = _slice(nb201_table_path, tmp_path / "tiny.csv", 20, ["titanx_32", "gold_6240"])
    with pytest.raises(DataError, match="has 20 valid rows"):
        experiment(ExperimentContext(out=tmp_path, quick=True, data=tiny))


def test_conformal_experiment_network_and_layer_levels(nb201_table_path, tmp_path):
    from latlab.experiments.conformal_layer_level import LAYER_TYPES
    from latlab.experiments.conformal_nb201 import METHODS, experiment

    data = _slice(nb201_table_path, tmp_path / "c.csv", 150, ["titanx_32", "pixel3"])
    out = tmp_path / "out"
    out.mkdir()
    m = experiment(ExperimentContext(out=out, quick=True, data=data, command="test"))
    net = m["network_level"]
    # 150 rows: the splits scale to 40 / 30 / 30 % (pixel3 may lose failed rows).
    assert net["settings"]["n_train"] + net["settings"]["n_cal"] <= 105
    for per in net["results"].values():
        for entry in per.values():
            for method in METHODS:
                for c in ("0.8", "0.9", "0.95"):
                    assert 0.0 <= entry[method][c]["coverage"] <= 100.0
                    assert entry[method][c]["mean_relative_width"] > 0.0
                # a higher confidence never gives a narrower interval
                assert (
                    entry[method]["0.8"]["mean_relative_width"]
                    <= entry[method]["0.95"]["mean_relative_width"]
                )
    layer = m["layer_level"]
    assert set(layer["per_type"]) == {*LAYER_TYPES, "all"}
    assert layer["per_type"]["all"]["test_points"] >= 4 * 40
    for entry in layer["per_type"].values():
        for method in ("cm-tv", "cm-lv", "cm-o"):
            cov = entry[method]["0.9"]["coverage"]
            assert cov is None or 0.0 <= cov <= 100.0
    # Marginal coverage over all layer types is what calibration promises (pooled over seeds).
    assert 75.0 <= layer["per_type"]["all"]["cm-tv"]["0.9"]["coverage"] <= 100.0
    sweep = layer["sweep"]["points"]
    assert len(sweep) >= 5 and [p["f"] for p in sweep] == sorted(p["f"] for p in sweep)
    for p in sweep:
        for method in ("cm-tv", "cm-lv", "cm-o"):
            assert 0 < p[method]["low_ms"] <= p["point_ms"] <= p[method]["high_ms"]
    layers = [r for r in layer["network"]["layers"] if r.get("benchmark")]
    assert len(layers) >= 20
    assert all(r["cm-o"]["relative_width"] > 0 for r in layers)
    assert layer["network"]["measured_ms"] > 0
    report = (out / "report.md").read_text()
    for text in ("CM_TV", "Figure 9", "Figure 13", "| conv |", "| titanx_32 |"):
        assert text in report
    for name in (
        "network_coverage_width.png",
        "layer_coverage_by_type.png",
        "layer_sweep_bands.png",
        "network_layer_intervals.png",
    ):
        _png(out / name)
    assert (out / "bench.db").exists() and (out / "network_runs.jsonl").exists()
    json.dumps(m, allow_nan=False)
    assert math.isfinite(m["seconds"])


def test_conformal_experiment_refuses_a_table_too_small(nb201_table_path, tmp_path):
    from latlab.experiments.conformal_nb201 import experiment

    tiny = _slice(nb201_table_path, tmp_path / "tiny.csv", 40, ["titanx_32"])
    with pytest.raises(DataError, match=r"has 40 valid rows.*at least 60"):
        experiment(ExperimentContext(out=tmp_path, quick=True, data=tiny))
    with pytest.raises(DataError, match="--data"):
        experiment(ExperimentContext(out=tmp_path, quick=True))


def test_transfer_kinds_holds_out_every_device_of_the_targets_kind(nb201_table_path, tmp_path):
    from latlab.experiments.transfer import _run_one, device_kind, plan_kinds
    from latlab.training.data import load_source

    assert [device_kind(d) for d in ("titanx_32", "2080ti_1", "gold_6240", "pixel3", "x")] == [
        "gpu",
        "gpu",
        "cpu",
        "phone",
        "other",
    ]
    devices = ["titanx_32", "1080ti_32", "gold_6240", "pixel3"]
    data = _slice(nb201_table_path, tmp_path / "t.csv", 80, devices)
    rows = dict.fromkeys(devices, 80)
    # --quick: one device of each kind
    assert plan_kinds(devices, rows, quick=True).devices == ("titanx_32", "gold_6240", "pixel3")
    source = load_source(data)
    gpus = ["titanx_32", "1080ti_32"]
    rec = _run_one(source, data, "titanx_32", "transfer", 10, 0, 40, 1, exclude=gpus)
    assert rec["sources"] == ["gold_6240", "pixel3"]  # the sibling GPU is held out too
    assert rec["n_test"] == 40 and -1 <= rec["spearman"] <= 1
    plain = _run_one(source, data, "titanx_32", "transfer", 10, 0, 40, 1)
    assert "sources" not in plain
    with pytest.raises(DataError, match="two kinds"):
        plan_kinds(gpus, {"titanx_32": 99, "1080ti_32": 99}, True)
