"""`latlab encode`, `measure` and `table`: outputs, one-line errors, no partial files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli
from latlab.datasets.measure import default_device_name
from latlab.datasets.tables import load_table

SRC = Path(__file__).resolve().parents[1] / "src"
QUICK = ["--repeats", "10", "--time-budget", "0.05", "--no-anchor"]


def test_encode_json_counts(capsys):
    code, out, _ = run_cli(["encode", "fcnn:3-4-5", "fcnn:10-20", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["network"] for r in rows] == ["fcnn:3-4-5", "fcnn:10-20"]
    assert rows[0]["macs"] == 3 * 4 + 4 * 5
    assert rows[0]["params"] == (3 * 4 + 4) + (4 * 5 + 5)
    assert rows[0]["layers"] == 3 and rows[0]["unknown_ops"] == []
    assert rows[1]["macs"] == 200
    assert rows[1]["flops"] >= 2 * 200
    assert rows[0]["bytes_read"] > 0 and rows[0]["bytes_written"] > 0


def test_encode_table_and_batch(capsys):
    code, out, _ = run_cli(["encode", "fcnn:100-1000-10", "--batch", "4"], capsys)
    assert code == 0
    assert "fcnn:100-1000-10" in out and "440k" in out  # 4 x 110k MACs


def test_measure_space_writes_table_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fcnn.csv"
    code, stdout, err = run_cli(
        ["measure", "--space", "fcnn", "--count", "3", "--out", str(out), *QUICK], capsys
    )
    assert code == 0, err
    assert (tmp_path / "latlab.db").exists()  # the default store in the working directory
    table = load_table(out)
    device = default_device_name("onnxruntime")
    assert table.devices == [device]
    assert len(table) == 3 and table.report.loc[device, "dropped"] == 0
    assert device in stdout
    # a larger sample with the same seed extends the first: three are already in the store
    code, stdout, _ = run_cli(
        ["measure", "--space", "fcnn", "--count", "5", "--out", str(out), *QUICK], capsys
    )
    assert code == 0
    assert "already in store" in stdout and "│ 3 " in stdout.split("already in store")[1][:40]
    again = load_table(out)
    assert len(again) == 5
    assert again.data.set_index("network").loc[table.networks, device].tolist() == (
        table.data[device].tolist()
    )


def test_measure_refs_device_name_parquet_and_anchor(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    db = tmp_path / "s.db"
    code, stdout, err = run_cli(
        [
            "measure",
            "fcnn:8-8",
            "fcnn:4-16-4",
            "--device-name",
            "my-box",
            "--db",
            str(db),
            "--out",
            str(out),
            "--repeats",
            "10",
            "--time-budget",
            "0.05",
            "--anchor",
            "fcnn:32-32",
            "--anchor-every",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    table = load_table(out)
    assert table.devices == ["my-box"] and table.networks == ["fcnn:8-8", "fcnn:4-16-4"]
    # --anchor is the old name of --reference: the anchor is timed beside every network
    assert "reference drift" in stdout
    assert table.meta["value"] == "corrected"
    assert table.meta["columns"]["my-box"]["reference"] == "fcnn:32-32"
    with sqlite3.connect(db) as conn:
        # the reference's timings of every --anchor-every'th measurement, kept as anchors
        assert conn.execute("SELECT count(*) FROM anchor_measurements").fetchone()[0] == 2
        corrected = conn.execute("SELECT corrected_ms FROM measurements").fetchall()
    assert len(corrected) == 2 and all(c[0] > 0 for c in corrected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["measure", "foo:bar"], "unknown network reference scheme 'foo'"),
        (["measure", "fcnn:a-b"], "malformed reference 'fcnn:a-b'"),
        (["measure", "fcnn:3-3", "--space", "fcnn", "--count", "2"], "not both"),
        (["measure"], "give network references or --space"),
        (["measure", "--space", "fcnn"], "--space needs --count"),
        (["measure", "--space", "nope", "--count", "2"], "unknown search space 'nope'"),
        (["measure", "fcnn:3-3", "--out", "x.xlsx"], "unsupported --out format 'x.xlsx'"),
        (["measure", "fcnn:3-3", "--input-shape", "1xAx3"], "malformed --input-shape '1xAx3'"),
        (["measure", "fcnn:3-3", "--db", "mysql://u@h/db"], "unsupported store URL scheme"),
        (["measure", "fcnn:3-3", "--backend", "tpu"], "unknown measurement backend 'tpu'"),
        (["encode", "zzz:1"], "unknown network reference scheme 'zzz'"),
        (["encode", "fcnn"], "malformed network reference 'fcnn'"),
        (["table", "missing.csv"], "table file not found: missing.csv"),
    ],
)
def test_errors_are_one_line_with_nothing_written(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        [*args, *(["--out", "o.csv"] if args[0] == "measure" and "--out" not in args else [])],
        capsys,
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "o.csv").exists()


def test_cuda_backend_without_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has CUDA here")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["measure", "fcnn:3-3", "--backend", "onnxruntime-cuda"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "CUDAExecutionProvider" in err
    assert not (tmp_path / "latlab.db").exists()  # failed before opening the store


def test_table_command_reports_drops(tmp_path, capsys, nb201_table_path):
    code, out, _ = run_cli(["table", str(nb201_table_path), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["rows"] == 15625
    assert report["columns"]["pixel3"]["suspect"] == 183  # kept and reported by default
    assert report["invalid_references"] == []
    code, out, _ = run_cli(["table", str(nb201_table_path), "--json", "--min-ms", "0.05"], capsys)
    assert json.loads(out)["columns"]["pixel3"]["below_min"] == 183
    bad = tmp_path / "bad.csv"
    bad.write_text("network,dev,notes\nn1,1,fast\n")
    code, _, err = run_cli(["table", str(bad)], capsys)
    assert code == 2 and "column 'notes'" in err and len(err.strip().splitlines()) == 1


def test_interrupt_keeps_completed_work_and_rerun_resumes(tmp_path):
    """Ctrl-C mid-campaign: exit 130, no --out file, finished measurements kept; re-run resumes."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    db = tmp_path / "s.db"
    out = tmp_path / "o.csv"
    cmd = [
        sys.executable,
        "-m",
        "latlab",
        "measure",
        "--space",
        "fcnn",
        "--count",
        "60",
        "--db",
        str(db),
        "--out",
        str(out),
        "--no-anchor",
        "--repeats",
        "100",
    ]

    def stored() -> int:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                return conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
        except sqlite3.Error:
            return 0

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    deadline = time.time() + 60
    while stored() < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    done = stored()
    if proc.returncode == 0:
        pytest.skip("the campaign finished before the interrupt arrived")
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and b"Traceback" not in err
    assert not out.exists()
    assert 3 <= done < 60
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert len(load_table(out)) == 60
    assert stored() == 60
    resumed = rerun.stdout.split("already in store")[1].split("│")[1].strip()
    assert int(resumed) >= done


def test_onnx_files_measure_and_fail_in_one_line(tmp_path, capsys, monkeypatch):
    import onnx

    from latlab.datasets.references import onnx_model

    monkeypatch.chdir(tmp_path)
    model = onnx_model("fcnn:16-32-8")
    onnx.save(model, tmp_path / "static.onnx")
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.dim_param = "features"  # a dynamic feature size: the input shape must be given
    onnx.save(model, tmp_path / "dyn.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"garbage" * 10)
    for args, expected in [
        (["encode", "onnx:missing.onnx"], "missing.onnx"),
        (["encode", "onnx:corrupt.onnx"], "corrupt.onnx"),
        (["encode", "onnx:dyn.onnx"], "dynamic"),
        (["measure", "onnx:dyn.onnx", "--out", "o.csv", *QUICK], "dynamic"),
    ]:
        code, out, err = run_cli(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err and "Traceback" not in out + err
    assert not (tmp_path / "o.csv").exists()
    code, _, err = run_cli(
        [
            "measure",
            "onnx:static.onnx",
            "onnx:dyn.onnx",
            "--input-shape",
            "1x16",
            "--out",
            "o.csv",
            "--device-name",
            "d",
            *QUICK,
        ],
        capsys,
    )
    assert code == 0, err
    table = load_table(tmp_path / "o.csv")
    assert table.networks == ["onnx:static.onnx", "onnx:dyn.onnx"]
    assert (table.data["d"] > 0).all()


def test_measure_takes_any_spelling_of_a_kernel_benchmark(tmp_path, capsys):
    """``kernel:`` bodies may list their keys in any order: measured under the canonical
    reference the store keys the benchmark by, and a second spelling is recognised as the
    same benchmark (nothing measured again)."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "k.csv"
    args = ["measure", "--db", db, "--no-reference", "--out", str(out), *QUICK]
    code, _, err = run_cli([*args[:1], "kernel:conv?c=8&h=8&f=16&k=3", *args[1:]], capsys)
    assert code == 0, err
    assert load_table(out).networks == ["kernel:conv?h=8&c=8&f=16&k=3"]
    code, stdout, err = run_cli([*args[:1], "kernel:conv?k=3&f=16&h=8&c=8", *args[1:]], capsys)
    assert code == 0, err
    assert "already in store" in stdout and "│ 1 " in stdout.split("already in store")[1][:40]
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("select count(*) from measurements").fetchone()[0] == 1
