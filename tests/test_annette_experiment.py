"""The ANNETTE comparison (layer-wise + learned predictors) and ``latlab compare``, run for real.

One tiny real run (a few kernels, one zoo network, a few dozen small generated networks,
measured with onnxruntime on this machine) is shared by the tests of this module; a second
run on the same folder checks that it resumes from the store without measuring or training
again.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from latlab.cli import main as cli_main
from latlab.datasets.measure import MeasureConfig
from latlab.datasets.measure.protocol import DEFAULT_REFERENCE as REFERENCE
from latlab.experiments.annette import run_settings
from latlab.experiments.annette_report import comparison_rows
from latlab.experiments.annette_settings import KERNEL, MODELS, Settings

LEARNED = ("flops", "rf")


def tiny_settings() -> Settings:
    proto = MeasureConfig(
        time_budget_s=0.1,
        max_warmup_s=0.1,
        repeats=10,
        min_repeats=3,
        min_warmup=2,
        timer="thread",
        reference=REFERENCE,  # paired, as the presets are: corrected medians throughout
    )
    return Settings(
        True,
        kernels=10,
        multilayer=6,
        zoo=["squeezenet1_1", "bert_medium"],
        nb201=5,
        timer="thread",
        network_protocol=proto,
        profile_runs=2,
        zoo_profile=(3, 1, 3.0),  # apart from profile_runs: the zoo profiles follow their own
        cnn=16,
        nb201_train=6,
        learned=LEARNED,
        methods=("padded",),
        context=6,
        bench_protocol=MeasureConfig(
            repeats=10,
            min_repeats=3,
            time_budget_s=0.05,
            min_warmup=2,
            max_warmup_s=0.05,
            max_remeasures=0,
            timer="thread",
            reference=REFERENCE,
        ),
    )


def _rows(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        tables = [t for (t,) in con.execute("select name from sqlite_master where type='table'")]
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("annette")
    events: list[tuple[str, int, int | None]] = []
    first = run_settings(out, tiny_settings(), command="test", notify=lambda *e: events.append(e))
    rows_first = _rows(out / "bench.db")
    learned_lines = (out / "learned.jsonl").read_text().splitlines()
    t0 = time.monotonic()
    second = run_settings(out, tiny_settings(), command="test")
    return {
        "out": out,
        "first": first,
        "second": second,
        "events": events,
        "rows_first": rows_first,
        "rows_second": _rows(out / "bench.db"),
        "learned_first": learned_lines,
        "learned_second": (out / "learned.jsonl").read_text().splitlines(),
        "second_s": time.monotonic() - t0,
    }


def test_report_files(runs: dict[str, Any]) -> None:
    out = runs["out"]
    for png in (
        "zoo_predicted_vs_measured.png",
        "networks_predicted_vs_measured.png",
        "zoo_layers_mixed.png",
    ):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1_500, png
        from PIL import Image

        with Image.open(out / png) as im:
            assert im.width >= 150 and im.height >= 150, png
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 4, png
    report = (out / "report.md").read_text()
    assert "## Headline comparison" in report
    assert "out of distribution for the learned predictors" in report
    for name in (*MODELS, KERNEL, *LEARNED):
        assert f"| {name} |" in report
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.png"))
    # the layer models' table holds layer benchmarks only, not the kernel predictor's networks
    table = (out / "benchmarks.csv").read_text()
    assert "kernel:" in table and "block:" not in table
    json.dumps(runs["first"], allow_nan=False)  # JSON-able, no NaN


def test_comparison_metrics(runs: dict[str, Any]) -> None:
    comp = runs["first"]["comparison"]
    # 16 cnn networks: 20 % held out, 10 % validation; every nb201 fidelity net and the zoo net
    assert comp["sets"]["generated"]["networks"] == 3
    assert comp["sets"]["nb201"]["networks"] == 5
    assert comp["sets"]["zoo"]["networks"] == 2
    assert comp["sets"]["zoo-cnn"]["networks"] == comp["sets"]["attention"]["networks"] == 1
    assert comp["training_networks"]["cnn_train"] == 11
    assert comp["training_networks"]["nb201_train"] + comp["training_networks"]["nb201_val"] == 6
    assert list(comp["models"]) == [*MODELS, KERNEL, *LEARNED]
    for name, row in comp["models"].items():
        kind = "learned" if name in LEARNED else "kernel-level" if name == KERNEL else "layer-wise"
        assert row["kind"] == kind
        for part in ("generated", "nb201", "zoo", "zoo-cnn", "attention"):
            m = row[part]
            assert math.isfinite(m["mape"]) and m["mape"] >= 0, (name, part)
            assert 0 <= m["acc10"] <= 100
        assert -1 <= row["nb201"]["spearman"] <= 1
    # the latency span of generated cnn networks (sub-ms to tens of ms) is easy to rank
    assert comp["models"]["flops"]["generated"]["spearman"] > 0
    header, rows = comparison_rows(runs["first"])
    assert len(header) == 2 + 3 * 5 and len(rows) == len(MODELS) + 1 + len(LEARNED)
    # the kernel-level predictor was trained on the bench store's networks only
    assert runs["first"]["benchmarks"]["context"]["benchmarks"] >= 6
    # the layer models judged on BERT's profiled transformer kernels and on it end to end
    tl = runs["first"]["transformer_layer_level"]
    assert tl["layers"] >= 8 * 6  # 8 encoder layers: 6 Gemms each at least
    assert {"matmul", "skiplayernorm", "gelu", "softmax"} <= set(tl["by_key"])
    for name in MODELS:
        assert math.isfinite(tl["models"][name]["mape"])
    assert runs["first"]["network_level_attention"]["networks"] == 1
    report = (runs["out"] / "report.md").read_text()
    assert "## Layer level, transformers" in report and "Attention models alone" in report


def test_progress_reported(runs: dict[str, Any]) -> None:
    stages = {e[0] for e in runs["events"]}
    assert {"networks", "layer models", "learned predictors", "profiling zoo"} <= stages
    assert any(s.startswith("benchmarks:") for s in stages)
    finals = {e[0]: e for e in runs["events"]}
    assert finals["learned predictors"][1] == finals["learned predictors"][2] == len(LEARNED)


def test_second_run_resumes_from_store(runs: dict[str, Any]) -> None:
    rows1, rows2 = runs["rows_first"], runs["rows_second"]
    assert rows1["measurements"] >= 16 + 6 + 5 + 1  # every network measured once
    assert rows2["measurements"] == rows1["measurements"]  # nothing measured again
    assert rows2["layer_benchmarks"] == rows1["layer_benchmarks"]
    assert rows2["profiles"] == rows1["profiles"] >= 1
    assert runs["learned_second"] == runs["learned_first"]  # nothing trained again
    a, b = runs["first"]["comparison"]["models"], runs["second"]["comparison"]["models"]
    for name in (*LEARNED, KERNEL):
        assert a[name]["zoo"]["mape"] == pytest.approx(b[name]["zoo"]["mape"], rel=1e-9)
    assert runs["first"]["run"]["networks_measured_now"] == runs["first"]["run"]["networks"]
    assert runs["second"]["run"]["networks_measured_now"] == 0
    bench = runs["second"]["benchmarks"]
    assert all(v["measured_now"] == 0 for v in bench.values())


def test_networks_and_benchmarks_are_paired_and_corrected(runs: dict[str, Any]) -> None:
    """Every measurement of the run was timed beside the reference: its corrected median
    (ratio x the store's one reference value) is what the comparison used."""
    con = sqlite3.connect(runs["out"] / "bench.db")
    try:
        rows = con.execute("select corrected_ms, ratio, reference_value_id from measurements")
        rows = rows.fetchall()
        values = {v for (v,) in con.execute("select id from reference_values")}
    finally:
        con.close()
    assert rows and all(c is not None and c > 0 and r > 0 for c, r, _ in rows)
    assert {v for _, _, v in rows} == values and len(values) == 1
    zoo = pd.read_csv(runs["out"] / "zoo_networks.csv")
    assert (zoo["measured_ms"] > 0).all()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    err = capsys.readouterr().err
    return int(exc.value.code or 0), err


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--db", "foo://nowhere"], "unsupported store URL scheme 'foo'"),
        (["--db", "/no/such/folder/x.db"], "no folder /no/such/folder"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_compare_bad_input_one_line(
    args: list[str], culprit: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code, err = _cli(["compare", "--quick", "--out", str(out), *args], capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and culprit in lines[0], err
    assert not out.exists()  # nothing written before the input was checked


def test_compare_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, err = _cli(["compare", "--out", str(f)], capsys)
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1


def test_resume_keeps_the_campaign_figures(runs: dict[str, Any]) -> None:
    """A second run that measures nothing (a resume, a re-report) keeps the campaign's run
    time and load figures instead of overwriting them with its own (issue 13)."""
    import json

    from latlab.experiments.annette import campaign_figures
    from latlab.experiments.annette_report import CAMPAIGN_FILE

    first, second = runs["first"], runs["second"]
    assert second["run"]["networks_measured_now"] == 0
    assert second["seconds"] == pytest.approx(first["seconds"])
    assert second["run"]["load_avg_start"] == first["run"]["load_avg_start"]
    assert second["run"]["this_invocation_s"] != pytest.approx(first["seconds"])
    sessions = json.loads((runs["out"] / CAMPAIGN_FILE).read_text())["sessions"]
    assert len(sessions) == 2 and not sessions[0]["interrupted"]
    # killed after 50 s, resumed (measuring 5 networks in 30 s), then re-reported in 2 s
    figures = campaign_figures(
        [
            {"seconds": 50.0, "cpu_s": 40, "load_avg_start": 1.0, "interrupted": True},
            {"seconds": 30.0, "cpu_s": 20, "measured_now": 5, "load_avg_end": 2.0},
            {"seconds": 2.0, "cpu_s": 2, "measured_now": 0, "load_avg_end": 9.0},
        ]
    )
    assert figures == {
        "seconds": 80.0,
        "cpu_s": 60.0,
        "load_avg_start": 1.0,
        "load_avg_end": 2.0,
        "sessions": 2,
    }


def test_zoo_profiles_follow_their_own_settings(runs: dict[str, Any]) -> None:
    """The zoo's profiles take ``Settings.zoo_profile`` (3 runs after 1 warm-up here), the
    training suites' profiles ``profile_runs`` after 3 warm-ups: cutting the test-side
    profiles leaves the kernel predictor's training data as it was."""
    from latlab.datasets.bench.tables import BenchStore
    from latlab.datasets.store import Store

    store = Store(str(runs["out"] / "bench.db"))
    try:
        prof = BenchStore(store).profiles()
    finally:
        store.close()
    zoo = prof[prof["network"].str.startswith("zoo:")]
    rest = prof[~prof["network"].str.startswith("zoo:")]
    assert len(zoo) == 2 and len(rest) > 0
    assert all(s["runs"] == 3 and s["warmup"] == 1 for s in zoo["settings"])
    assert all(s["runs"] <= 2 and s["warmup"] == 3 for s in rest["settings"])


def test_zoo_profiles_carry_their_measurements_reference_scale(runs: dict[str, Any]) -> None:
    """Each zoo profile is stored with the reference scale of the network's paired
    measurement (corrected / raw median), as the bench stores its benchmarks' profiles: the
    profiled zoo kernels and the kernels the predictor trained on then share one scale."""
    from latlab.datasets.bench.tables import BenchStore
    from latlab.datasets.store import Store

    store = Store(str(runs["out"] / "bench.db"))
    try:
        prof = BenchStore(store).profiles()
        meas = store.measurements(protocol=tiny_settings().network_protocol)
    finally:
        store.close()
    meas = meas.drop_duplicates("network", keep="last").set_index("network")
    zoo = prof[prof["network"].str.startswith("zoo:")]
    assert len(zoo) == 2
    for r in zoo.itertuples():
        m = meas.loc[r.network]
        expected = m["corrected_ms"] / m["median_ms"]
        assert 0.2 < expected < 5 and expected != 1.0
        assert (r.extra or {}).get("scale") == pytest.approx(expected, rel=1e-9)
