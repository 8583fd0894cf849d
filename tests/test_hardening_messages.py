"""Tracebacks and misleading messages (issue 13): each user error is one line that names the
right culprit, the flag the user typed, and rows counted from 1 on the command line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import run_cli
from latlab.errors import BundleError, NetworkReferenceError, OnnxImportError


def run(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(list(argv), capsys)


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _onnx(path: Path, dims: list, opset: int = 17) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("img", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["img"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 not a booster", b"tree\nversion=v4\n"])
def test_corrupt_booster_is_named_as_the_booster(tmp_path, fcnn_gbm_bundle, content):
    from latlab.training.bundle import load_bundle

    b = tmp_path / "b"
    shutil.copytree(fcnn_gbm_bundle, b)
    rel = "conformal/base/booster.txt"
    (b / rel).write_bytes(content)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256(content).hexdigest()  # integrity restored
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        load_bundle(b).predict(["fcnn:4-4"])
    text = str(err.value)
    assert "LightGBM model" in text and "conformal calibration" not in text


def test_binary_target_file_is_one_line(capsys, tmp_path):
    target = tmp_path / "t.json"
    target.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "bnn", "forward", "bnn-fcnn:784-512-10", "--target", str(target))
    assert code == 2 and "is not a text (JSON) file" in one_line(err)


def test_dynamic_input_names_the_cli_flag(capsys, tmp_path):
    path = _onnx(tmp_path / "dyn.onnx", ["N", 3, "H", "W"])
    code, _, err = run(capsys, "encode", f"onnx:{path}")
    line = one_line(err)
    assert code == 2 and "--input-shape" in line and "give input_shape" not in line


def test_input_shape_is_reported_as_given(capsys, tmp_path):
    path = _onnx(tmp_path / "s.onnx", [1, 3, 32, 32])
    code, _, err = run(capsys, "encode", f"onnx:{path}", "--input-shape", "1x3x32")
    line = one_line(err)
    # before: "input_shape (1, 1, 3, 32) contradicts ..." (the batch silently prepended)
    assert code == 2 and "(1, 3, 32) (with the batch prepended: (1, 1, 3, 32))" in line


def test_zero_sized_dimension_is_not_called_dynamic(tmp_path):
    from latlab.datasets.references import resolve

    path = _onnx(tmp_path / "z.onnx", [1, 3, 0, 32])
    with pytest.raises(OnnxImportError, match="zero-sized dimension 2") as err:
        resolve(f"onnx:{path}")
    assert "dynamic" not in str(err.value)


def test_too_wide_fcnn_says_so():
    from latlab.datasets.references import parse_reference

    with pytest.raises(NetworkReferenceError, match=r"width 100,000,000 exceeds") as err:
        parse_reference("fcnn:100000000-100000000")
    assert "positive integers" not in str(err.value)
    with pytest.raises(NetworkReferenceError, match="positive integers"):
        parse_reference("fcnn:0-4")


def test_encode_refuses_opset_99_and_warns_on_absurd_sizes(capsys, tmp_path):
    path = _onnx(tmp_path / "o.onnx", [1, 4], opset=99)
    code, _, err = run(capsys, "encode", f"onnx:{path}")
    assert code == 2 and "declares opset 99" in one_line(err)
    big = _onnx(tmp_path / "big.onnx", ["N", 3, "H", "W"])
    code, _, err = run(capsys, "encode", f"onnx:{big}", "--input-shape", "1x3x100000x100000")
    assert code == 0 and "3e+10 elements" in err and "warning" in err
    code, _, err = run(capsys, "encode", "zoo:resnet18")
    assert code == 0 and "warning" not in err


def test_cli_rows_count_from_one(capsys, fcnn_gbm_bundle):
    code, _, err = run(capsys, "predict", "--bundle", str(fcnn_gbm_bundle), "fcnn:4-8-2",
                       "foo:bar")  # fmt: skip
    line = one_line(err)
    assert code == 2 and "row 2:" in line and "row 1:" not in line


def test_bare_nb201_strings_are_one_rule_everywhere(tmp_path, capsys):
    from latlab.datasets.references import normalise_reference, resolve
    from latlab.training.feature_cache import normalise_network

    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert normalise_reference(f" {arch} ") == normalise_network(arch) == f"nb201:{arch}"
    assert resolve(arch).reference == f"nb201:{arch}"  # evaluate resolves its rows too
    table = tmp_path / "t.csv"
    table.write_text(f"network,dev\n{arch},1.5\nfcnn:4-4,0.01\nbogus,2\n")
    code, out, _ = run(capsys, "table", str(table), "--json")
    report = json.loads(out)
    assert code == 0 and [r["row"] for r in report["invalid_references"]] == [3]


def test_evaluate_accepts_bare_nb201_strings(tmp_path, capsys):
    from latlab.predictors import make_predictor
    from latlab.training.bundle import save_bundle
    from latlab.training.pipeline import evaluate

    archs = [
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|",
        "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|",
    ]
    ms = [2.0, 1.0, 3.0]
    model = make_predictor("flops").fit([f"nb201:{a}" for a in archs], ms)
    b = save_bundle(tmp_path / "b", model, mlflow_model=False)
    table = tmp_path / "bare.csv"
    rows = "".join(f"{a},{m}\n" for a, m in zip(archs, ms, strict=True))
    table.write_text("network,dev\n" + rows)
    ev = evaluate(b, table, "dev")  # before: "malformed network reference '|nor_conv...'"
    assert ev.metrics["n"] == 3 and ev.metrics["mape"] >= 0


def test_table_reports_implausible_conflicts_and_duplicate_columns(tmp_path, capsys):
    t = tmp_path / "t.csv"
    t.write_text(
        "network,dev\nfcnn:4-4,1e300\nfcnn:4-8,1.0\nfcnn:4-8,2.0\nfcnn:4-8,3.0\nfcnn:8-8,0.0056\n"
        "zoo:resnet18,50\nzoo:resnet34,60\n"
    )
    code, out, err = run(capsys, "table", str(t), "--json")
    col = json.loads(out)["columns"]["dev"]
    assert code == 0 and col["implausible"] == 1 and col["conflicts"] == 1
    assert col["dropped"] == 1 and col["valid"] == 4  # the 5.6 µs FCNN is kept
    assert "conflicting values" in err and "'fcnn:4-8': 1.0, 2.0, 3.0" in err
    dup = tmp_path / "dup.csv"
    dup.write_text("network,titanx_32,titanx_32\nfcnn:4-4,1,2\n")
    code, _, err = run(capsys, "table", str(dup))
    assert code == 2 and "duplicate column 'titanx_32' (columns 2 and 3)" in one_line(err)


def test_bench_export_on_a_thread_timer_store_names_the_flag(capsys, tmp_path):
    db = str(tmp_path / "s.db")
    code, _, err = run(capsys, "bench", "--suite", "kernels", "--count", "2", "--timer",
                       "thread", "--db", db)  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "bench", "--export", str(tmp_path / "t.csv"), "--db", db)
    line = one_line(err)
    assert code == 2 and "--timer thread" in line and "measured with" in line
    code, _, err = run(capsys, "bench", "--export", str(tmp_path / "t.csv"), "--db", db,
                       "--timer", "thread")  # fmt: skip
    assert code == 0, err


def test_bench_export_of_a_grouped_store_names_the_group(capsys, tmp_path):
    db = str(tmp_path / "g.db")
    code, _, err = run(capsys, "bench", "--suite", "kernels", "--count", "3", "--timer",
                       "thread", "--group", "4", "--db", db)  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "bench", "--export", str(tmp_path / "t.csv"), "--db", db)
    line = one_line(err)
    assert code == 2 and "--timer thread --group 4" in line
    code, _, err = run(capsys, "bench", "--export", str(tmp_path / "t.csv"), "--db", db,
                       "--timer", "thread", "--group", "4")  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "bench", "--suite", "kernels", "--group", "2", "--no-reference",
                       "--db", db)  # fmt: skip
    assert code == 2 and "--group needs a reference" in one_line(err)
