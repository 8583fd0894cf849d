"""Dataset tables: loading, validation with per-column drop reports, atomic saving."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latlab.datasets.tables import NB201_MIN_MS, load_table, save_table
from latlab.errors import DataError, PathError


def test_nb201_table_drops_exactly_the_failed_pixel3_entries(nb201_table_path):
    # By default nothing positive is dropped: the 183 failed runs are reported as suspect.
    plain = load_table(nb201_table_path)
    assert plain.report.loc["pixel3", "suspect"] == 183
    assert (plain.report["dropped"] == 0).all() and (plain.report["below_min"] == 0).all()
    assert plain.report.drop(index="pixel3")["suspect"].sum() == 0
    # The shared table's documented floor drops exactly those 183, nothing else.
    table = load_table(nb201_table_path, NB201_MIN_MS)
    assert len(table) == 15625 and table.duplicates == 0
    assert len(table.devices) == 13
    report = table.report
    assert report.loc["pixel3", "below_min"] == 183
    assert report.loc["pixel3", "dropped"] == 183
    assert report.loc["pixel3", "valid"] == 15625 - 183
    others = report.drop(index="pixel3")
    assert (others["dropped"] == 0).all(), others[others["dropped"] > 0]
    pixel3 = table.valid("pixel3")
    assert len(pixel3) == 15442 and list(pixel3.columns) == ["network", "latency_ms"]
    assert pixel3["latency_ms"].min() > 0.05  # every entry at or near 0 ms is gone
    # the phone columns in whole milliseconds are flagged as quantised, the others are not
    quantised = set(report.index[report["quantised"]])
    assert quantised == {"samsung_a50", "essential_ph_1", "samsung_s7"}
    assert table.report_dict()["pixel3"]["below_min"] == 183
    assert "pixel3: dropped 183 of 15625 (below_min 183)" in table.summary()


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_invalid_kind_is_counted_per_column(tmp_path):
    csv = (
        "network,dev_a,dev_b\n"
        "n1,10.0,5\n"
        "n2,abc,5\n"  # text
        "n3,,5\n"  # missing
        "n4,NaN,5\n"  # missing
        "n5,inf,5\n"  # non-finite
        "n6,0,5\n"  # non-positive
        "n7,-3.5,5\n"  # non-positive
        "n8,0.001,5\n"  # 10,000x below the median: suspect, kept unless --min-ms says
        "n9,12.0,0.02\n"  # dev_b: 250x below its median, suspect too
        "n10,9.0,6\n"
        "n1,11.0,7\n"  # duplicate network: first row kept
    )
    table = load_table(_write(tmp_path, csv))
    assert table.networks == [f"n{i}" for i in range(1, 11)]
    assert table.duplicates == 1
    a = table.report.loc["dev_a"]
    assert (a["text"], a["missing"], a["non_finite"], a["non_positive"], a["below_min"]) == (
        1,
        2,
        1,
        2,
        0,
    )
    assert a["valid"] == 4 and a["dropped"] == 6 and a["rows"] == 10 and a["suspect"] == 1
    b = table.report.loc["dev_b"]
    assert b["below_min"] == 0 and b["dropped"] == 0 and b["valid"] == 10 and b["suspect"] == 1
    assert table.valid("dev_a")["network"].tolist() == ["n1", "n8", "n9", "n10"]
    assert table.valid("dev_b")["latency_ms"].iloc[0] == 5.0
    # an explicit floor drops what is below it: one number, or one per column
    floored = load_table(tmp_path / "t.csv", min_ms=0.01)
    assert floored.report.loc["dev_a", "below_min"] == 1
    assert floored.report.loc["dev_b", "below_min"] == 0
    assert floored.valid("dev_a")["latency_ms"].tolist() == [10.0, 12.0, 9.0]
    per_column = load_table(tmp_path / "t.csv", min_ms={"dev_b": 0.03})
    assert per_column.report.loc["dev_b", "below_min"] == 1
    assert per_column.report.loc["dev_a", "below_min"] == 0
    with pytest.raises(DataError, match="--min-ms names column 'dev_c'"):
        load_table(tmp_path / "t.csv", min_ms={"dev_c": 1.0})
    # the duplicate n1 has another dev_a value (11.0 vs 10.0): a conflict, first row kept
    assert a["conflicts"] == 1 and b["conflicts"] == 1


def test_drop_report_is_a_warning_once_per_process(tmp_path, caplog):
    """An experiment reloads its table for every run: the drop report is said once."""
    path = _write(tmp_path, "network,dev\nn1,10\nn2,-1\nn3,12\n")
    with caplog.at_level("DEBUG", logger="latlab.datasets.tables"):
        for _ in range(3):
            assert load_table(path).report.loc["dev", "non_positive"] == 1
    levels = [r.levelname for r in caplog.records if "dropped 1 of 3" in r.getMessage()]
    assert levels == ["WARNING", "DEBUG", "DEBUG"]


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("net,dev\nn1,1\n", "t.csv", r"has no 'network' column \(columns: net, dev\)"),
        ("network,dev,notes\nn1,1,fast\nn2,2,slow\n", "t.csv", "column 'notes' .* not numeric"),
        ("network\nn1\n", "t.csv", "no latency column"),
        ("", "t.csv", "is empty"),
        ("network,dev\n,1\nn2,2\n", "t.csv", "1 rows have no network reference"),
        ("network,dev\n", "t.csv", "has no rows"),
        ("network,dev\nn1,1\n", "t.txt", "unsupported table format 't.txt'"),
        ("not parquet at all", "t.parquet", "cannot read table"),
    ],
)
def test_bad_tables_raise_one_line_naming_the_problem(tmp_path, text, name, expected):
    path = _write(tmp_path, text, name)
    with pytest.raises(DataError, match=expected) as info:
        load_table(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_column(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "nope.csv")
    table = load_table(_write(tmp_path, "network,dev\nn1,1\n"))
    with pytest.raises(DataError, match=r"no latency column 'gpu' in .*t.csv \(columns: dev\)"):
        table.valid("gpu")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_and_load_roundtrip_exact(tmp_path, suffix):
    df = pd.DataFrame(
        {"network": ["fcnn:1-2", "fcnn:3-4"], "a": [0.1 + 0.2, 1 / 3], "b": [2.5, math.pi]}
    )
    path = save_table(df, tmp_path / f"out{suffix}")
    back = load_table(path)
    pd.testing.assert_frame_equal(back.data, df)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]  # no temp files


def test_save_is_atomic_when_writing_fails(tmp_path):
    good = pd.DataFrame({"network": ["n1"], "dev": [1.0]})
    path = save_table(good, tmp_path / "t.parquet")
    before = path.read_bytes()
    bad = pd.DataFrame({"network": ["n1", "n2"], "dev": [1.0, object()]})
    with pytest.raises(Exception):  # noqa: B017 (pyarrow's own error type)
        save_table(bad, path)
    assert path.read_bytes() == before  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left
    with pytest.raises(DataError, match="no 'network' column"):
        save_table(pd.DataFrame({"x": [1]}), tmp_path / "x.csv")
    # a missing folder is created (as bundles and reports are); a file in the way is refused
    assert save_table(good, tmp_path / "missing" / "x.csv").is_file()
    with pytest.raises(PathError, match="is a file, not a folder"):
        save_table(good, tmp_path / "t.parquet" / "x.csv")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.floats(min_value=0.1, max_value=10.0, allow_nan=False), min_size=1, max_size=30
    ),
    bad=st.lists(st.sampled_from(["", "x", "-1", "0", "inf", "nan"]), max_size=5),
)
def test_valid_values_survive_and_invalid_ones_are_all_counted(tmp_path, values, bad):
    # Values within a factor 100 of each other are never near-zero (the rule is 1/200 of the
    # median); every injected invalid value is dropped and counted once.
    cells = [repr(v) for v in values] + bad
    rows = "\n".join(f"n{i},{c}" for i, c in enumerate(cells))
    path = tmp_path / "h.csv"
    path.write_text("network,dev\n" + rows + "\n")
    table = load_table(path)
    assert table.report.loc["dev", "dropped"] == len(bad)
    assert table.report.loc["dev", "valid"] == len(values)
    np.testing.assert_array_equal(table.valid("dev")["latency_ms"].to_numpy(), values)
