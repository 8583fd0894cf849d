"""The bundle's pyfunc model served by ``mlflow models serve`` on loopback: valid and invalid
requests, a small load test, and the server stopped by its process id.

Runs everywhere (CI included): the bundle is trained on the FCNN latencies the session fixture
measures. The server gets a generous startup timeout (the first start imports MLflow, torch
and latlab on a possibly busy machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import latlab
from latlab.training.mlflow_server import ModelServer, invoke, load_test, records


@pytest.fixture(scope="module")
def server(
    fcnn_gbm_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    log = tmp_path_factory.mktemp("http-log") / "server.log"
    srv = ModelServer(fcnn_gbm_bundle, startup_timeout_s=300, log_path=log)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_valid_request_gives_latency_and_bounds(
    server: ModelServer, fcnn_gbm_bundle: Path, fcnn_refs
):
    payload = records(fcnn_refs[:5])
    payload["params"] = {"confidence": 0.8}
    status, body = invoke(server.url, payload)
    assert status == 200, body
    assert isinstance(body, dict)
    rows = body["predictions"]
    expected = latlab.load_bundle(fcnn_gbm_bundle).predict_frame(fcnn_refs[:5], 0.8)
    assert [r["network"] for r in rows] == fcnn_refs[:5]
    np.testing.assert_allclose([r["latency_ms"] for r in rows], expected["latency_ms"])
    np.testing.assert_allclose([r["lower_ms"] for r in rows], expected["lower_ms"])
    np.testing.assert_allclose([r["upper_ms"] for r in rows], expected["upper_ms"])
    assert all(r["confidence"] == 0.8 for r in rows)
    status, body = invoke(server.url, records(fcnn_refs[:2]))  # the bundle's default confidence
    assert status == 200 and body["predictions"][0]["confidence"] == 0.9


@pytest.mark.parametrize(
    ("rows", "expect"),
    [
        (["GOOD", "GOOD", "fcnn:8-x-4"], ["row 2", "fcnn:8-x-4"]),
        (["GOOD", "foo:bar"], ["row 1", "unknown network reference scheme 'foo'"]),
        (["nb201:|bogus~0|+|"], ["row 0", "bogus"]),
        # a server file named by a client is never opened (no existence oracle either)
        (["GOOD", "onnx:/etc/passwd"], ["row 1", "does not read"]),
        (["onnx:/nonexistent/x.onnx"], ["row 0", "does not read"]),
    ],
)
def test_invalid_rows_are_400_naming_the_row(server: ModelServer, fcnn_refs, rows, expect):
    status, body = invoke(server.url, records([fcnn_refs[0] if r == "GOOD" else r for r in rows]))
    assert status == 400
    assert isinstance(body, dict)
    for text in expect:
        assert text in body["message"]


def test_missing_column_and_bad_confidence_are_400(server: ModelServer, fcnn_refs):
    status, body = invoke(server.url, {"dataframe_records": [{"net": fcnn_refs[0]}]})
    assert status == 400 and "network" in body["message"]
    payload = records(fcnn_refs[:1])
    payload["params"] = {"confidence": 1.5}
    status, body = invoke(server.url, payload)
    assert status == 400 and "confidence" in body["message"]
    # the server survived every bad request
    assert invoke(server.url, records(fcnn_refs[:1]))[0] == 200


def test_small_load_test_has_no_failures(server: ModelServer, fcnn_refs):
    report = load_test(server.url, fcnn_refs, clients=2, requests=50, batch=64, confidence=0.9)
    assert report["failed"] == 0, report["failures"]
    assert report["requests"] == 50 and report["requests_per_s"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]


def test_zz_server_stops_by_pid(server: ModelServer, fcnn_refs):
    """Last test of the module: stop the shared server by its pid; its whole group goes."""
    assert server.proc is not None
    pid = server.proc.pid
    assert invoke(server.url, records(fcnn_refs[:1]))[0] == 200
    server.stop()
    assert server.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of the server's group is left
    with pytest.raises(OSError):
        invoke(server.url, records(fcnn_refs[:1]), timeout=5)
