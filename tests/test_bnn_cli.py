"""``latlab bnn``: forward, inverse, targets, calibrate; one-line errors and warnings."""

import json

import pytest

from latlab.cli import main


def run(capsys, *argv):
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_forward_json(capsys):
    code, out, err = run(
        capsys, "bnn", "forward", "bnn-fcnn:784-512-512-10", "--target", "stm32h743", "--json"
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["target"] == "stm32h743" and d["xnorops"] == 512 * 16 and d["fits"] is True
    for key in ("fps", "lxnorops", "memory_bytes"):
        assert key in d
    assert [r["op"] for r in d["layers"]] == ["Gemm", "BinaryGemm", "Gemm"]


def test_forward_human_and_target_file(capsys, tmp_path):
    from latlab.predictors.bnn import get_target, write_target

    path = write_target(get_target("rpi5"), tmp_path / "pi5.json")
    code, out, _ = run(capsys, "bnn", "forward", "bnn-cnn:1x28x28-c16-p-c32-p-f128-10",
                       "--target", str(path))  # fmt: skip
    assert code == 0 and "fps" in out and "fits" in out
    code, out, _ = run(capsys, "bnn", "forward", "bnn-cnn:1x28x28-c16-p-c32-p-f128-10",
                       "--target", "rpi5", "--layers")  # fmt: skip
    assert code == 0 and "BinaryConv" in out and "share" in out


def test_inverse_json_sorted(capsys):
    code, out, err = run(
        capsys, "bnn", "inverse", "bnn-cnn:3x32x32-c64-c64-p-c128-p-f256-10", "--fps", "30",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    margins = [m["margin"] for m in d["matches"]]
    assert d["required_fps"] == 30 and margins == sorted(margins, reverse=True)
    assert all(m["fps"] >= 30 and m["fits"] for m in d["matches"])
    code, out, _ = run(capsys, "bnn", "inverse", "bnn-fcnn:784-512-512-10", "--fps", "100",
                       "--all")  # fmt: skip
    assert code == 0 and "qualify" in out and "atmega328p" in out


def test_targets_list(capsys):
    code, out, _ = run(capsys, "bnn", "targets", "--json")
    assert code == 0 and len(json.loads(out)) >= 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["forward", "bnn-fcnn:784-512-512-10", "--target", "nope"], "unknown target 'nope'"),
        (["forward", "bnn-fcnn:784-512-512-10", "--target", "rpi4b", "--bus", "12"],
         "bus width 12 is not one of"),
        (["inverse", "bnn-fcnn:784-512-512-10", "--fps", "0"], "positive number of frames/s"),
        (["inverse", "bnn-fcnn:784-512-512-10", "--fps", "-5"], "positive number of frames/s"),
        (["forward", "bnn-cnn:3x32-c1-10", "--target", "rpi4b"], "malformed reference"),
    ],
)  # fmt: skip
def test_errors_are_one_line(capsys, argv, message):
    code, _out, err = run(capsys, "bnn", *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_catalog_with_missing_field_is_named(capsys, tmp_path):
    from latlab.predictors.bnn import get_target

    entry = get_target("rpi4b").to_dict()
    del entry["memory"]["speed_clocks"]
    path = tmp_path / "cat.json"
    path.write_text(json.dumps({"targets": [entry]}))
    code, _, err = run(capsys, "bnn", "inverse", "bnn-fcnn:784-512-512-10", "--fps", "10",
                       "--catalog", str(path))  # fmt: skip
    assert code == 2 and "target 'rpi4b' lacks field 'memory.speed_clocks'" in err
    assert len(err.strip().splitlines()) == 1


def test_network_without_binary_layers_warns(capsys):
    code, out, err = run(capsys, "bnn", "forward", "bnn-fcnn:784-256-10", "--target", "rpi4b")
    assert code == 0 and "fps" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "has no binary layers" in lines[0]


def test_calibrate_writes_a_target(capsys, tmp_path):
    out_file = tmp_path / "host.json"
    code, out, err = run(capsys, "bnn", "calibrate", "--quick", "--rounds", "1",
                         "--out", str(out_file))  # fmt: skip
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["name"] == "host-calibrated" and doc["clocks"]["xnorop"] > 0
    assert doc["calibration"]["quick"] is True
    code, out, err = run(capsys, "bnn", "forward", "bnn-fcnn:784-512-512-10",
                         "--target", str(out_file), "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["target"] == "host-calibrated"
    code, _, err = run(capsys, "bnn", "calibrate", "--quick", "--out", str(tmp_path))
    assert code == 2 and "is a folder" in err
