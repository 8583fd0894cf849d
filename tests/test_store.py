"""The dataset store on a real SQLite file and, when LATLAB_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from latlab.datasets.measure import MeasureConfig, measure, measure_many
from latlab.datasets.store import SCHEMA_VERSION, Store, normalise_url
from latlab.errors import NetworkReferenceError, StoreError

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = MeasureConfig(repeats=10, min_repeats=5, time_budget_s=0.05, max_warmup_s=0.05)
NETS = ["fcnn:3-4-5", "fcnn:10-20-3", "fcnn:7-7", "fcnn:5-9-2", "fcnn:12-6-6-1", "fcnn:2-30-2"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def real_measurement():
    return measure("fcnn:3-4-5", FAST)


def test_device_network_measurement_roundtrip(store_url, real_measurement):
    store = Store(store_url)
    dev = store.add_device("dev-a", backend="onnxruntime", fingerprint={"cpu_model": "x"})
    assert store.add_device("dev-a", backend="other") == dev  # the first registration wins
    nid = store.add_network("fcnn:3-4-5")
    assert store.add_network("fcnn:3-4-5") == nid
    assert store.add_measurement("dev-a", real_measurement) is True
    assert store.add_measurement("dev-a", real_measurement) is False  # idempotent
    key = real_measurement.protocol_key
    assert store.is_measured("dev-a", "fcnn:3-4-5", key)
    assert not store.is_measured("dev-a", "fcnn:3-4-5", "other-protocol")
    assert not store.is_measured("dev-b", "fcnn:3-4-5", key)
    assert store.measured_references("dev-a", key) == {"fcnn:3-4-5"}
    long = store.measurements(samples=True)
    assert len(long) == 1
    row = long.iloc[0]
    assert row["median_ms"] == pytest.approx(real_measurement.median_ms)
    assert row["samples_ms"] == pytest.approx(real_measurement.samples_ms)
    assert row["robust_cv"] == pytest.approx(real_measurement.robust_cv)
    with store.engine.connect() as conn:
        summary, digest, family = conn.execute(
            sa.text("SELECT summary, digest, family FROM networks")
        ).one()
    if isinstance(summary, str):  # SQLite returns JSON as text through text() queries
        import json

        summary = json.loads(summary)
    assert summary["macs"] == 3 * 4 + 4 * 5
    assert len(digest) == 40 and family == "fcnn"
    store.close()


def test_export_table_dataset_format(store_url, real_measurement):
    store = Store(store_url)
    for dev in ("dev-a", "dev-b"):
        store.add_device(dev)
    for i, ref in enumerate(["fcnn:3-4-5", "fcnn:7-7", "fcnn:2-2"]):
        store.add_network(ref)
        for j, dev in enumerate(("dev-a", "dev-b")):
            if dev == "dev-b" and ref == "fcnn:2-2":
                continue
            m = dataclasses.replace(real_measurement, network=ref, median_ms=1.0 + i + 10 * j)
            store.add_measurement(dev, m)
    table = store.export_table()
    assert list(table.columns) == ["network", "dev-a", "dev-b"]
    assert list(table["network"]) == ["fcnn:3-4-5", "fcnn:7-7", "fcnn:2-2"]
    assert list(table["dev-a"]) == [1.0, 2.0, 3.0]
    assert table["dev-b"].iloc[:2].tolist() == [11.0, 12.0]
    assert table["dev-b"].isna().iloc[2]
    only = store.export_table(devices=["dev-b"], networks=["fcnn:7-7", "fcnn:2-2", "fcnn:9-9"])
    assert list(only.columns) == ["network", "dev-b"]
    assert list(only["network"]) == ["fcnn:7-7"]
    # a second protocol: never mixed into one column, a protocol must be chosen
    newer = dataclasses.replace(
        real_measurement, network="fcnn:7-7", median_ms=99.0, protocol_key="p2"
    )
    store.add_measurement("dev-a", newer)
    with pytest.raises(StoreError, match=r"'dev-a'.*2 protocols.*'fcnn:7-7'.*protocol=KEY"):
        store.export_table(devices=["dev-a"])
    with pytest.raises(StoreError, match="dev-a"):  # also with the network left out of rows
        store.export_table(devices=["dev-a", "dev-b"], networks=["fcnn:7-7", "fcnn:2-2"])
    assert store.export_table(devices=["dev-b"])["dev-b"].tolist()[:2] == [11.0, 12.0]
    old = store.export_table(devices=["dev-a"], protocol=real_measurement.protocol_key)
    assert old["dev-a"].tolist() == [1.0, 2.0, 3.0]
    assert store.export_table(devices=["dev-a"], protocol="p2")["network"].tolist() == ["fcnn:7-7"]
    assert list(Store(store_url).export_table(devices=["nobody"]).columns) == ["network"]


def test_campaign_resumes_after_interrupt(store_url):
    store = Store(store_url)
    seen: list[str] = []

    def interrupt_after_two(event):
        if event.kind == "measured":
            seen.append(event.network)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_many(NETS, FAST, store, "dev", anchor="fcnn:64-64", progress=interrupt_after_two)
    key = FAST.protocol_key()
    assert store.measured_references("dev", key) == set(seen)
    events = []
    result = measure_many(
        NETS,
        FAST,
        Store(store_url),
        "dev",
        anchor="fcnn:64-64",
        anchor_every=2,
        progress=events.append,
    )
    assert sorted(result.skipped) == sorted(seen)
    assert len(result.measured) == len(NETS) - 2
    assert {m.network for m in result.measured} == set(NETS) - set(seen)
    assert events[0].kind == "start" and events[-1].kind == "done"
    assert events[-1].done == events[-1].total == len(NETS)
    # anchors: first, after every 2 new measurements (not after the last one), and last
    assert len(result.anchors) == 3
    assert len(result.drifts) == 2 and result.max_drift is not None
    anchors = store.measurements(anchors=True)
    assert (anchors["campaign"] == result.campaign).sum() == 3
    assert set(anchors["network"]) == {"fcnn:64-64"}
    table = store.export_table(devices=["dev"], networks=NETS)
    assert table["network"].tolist() == NETS
    assert (table["dev"] > 0).all()
    # everything measured: a third run measures nothing, not even the anchor
    again = measure_many(NETS, FAST, store, "dev", anchor="fcnn:64-64")
    assert len(again.skipped) == len(NETS) and not again.measured and not again.anchors


def test_campaign_validates_all_references_first(tmp_path):
    store = Store(tmp_path / "s.db")
    with pytest.raises(NetworkReferenceError, match="nope:1"):
        measure_many(["fcnn:3-3", "nope:1"], FAST, store, "dev", anchor=None)
    assert store.measurements().empty


def test_url_validation_is_one_line(tmp_path):
    cases = {
        "mysql://u@h/db": "unsupported store URL scheme 'mysql'",
        "postgresql://u@host:notaport/db": "malformed store URL",
        str(tmp_path / "missing" / "x.db"): "no folder",
        "": "empty store URL",
        "postgresql://nobody@127.0.0.1:1/none": "cannot open store postgresql.*Connection refused",
    }
    for url, expected in cases.items():
        with pytest.raises(StoreError, match=expected) as info:
            Store(url)
        assert "\n" not in str(info.value)
    junk = tmp_path / "junk.db"
    junk.write_text("network,dev\nfcnn:1-1,1.0\n" * 50)
    with pytest.raises(StoreError, match="not a database"):
        Store(junk)
    assert normalise_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalise_url("x.db").get_backend_name() == "sqlite"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE latlab_meta SET value = :v WHERE key = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    with pytest.raises(StoreError, match="newer than this latlab"):
        Store(path)


def _cli_worker(url: str, tmp: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [
        sys.executable,
        "-m",
        "latlab",
        "measure",
        *NETS,
        "--db",
        url,
        "--device-name",
        "shared",
        "--shuffle",
        "--no-anchor",
        "--repeats",
        "10",
        "--time-budget",
        "0.05",
    ]
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 (closed by the caller via the process)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [3])
def test_concurrent_writers(store_url, tmp_path, workers):
    """Several `latlab measure` processes on one store: no errors, every network once."""
    procs = [_cli_worker(store_url, tmp_path, f"w{i}") for i in range(workers)]
    codes = [p.wait(timeout=120) for p in procs]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(workers)]
    assert codes == [0] * workers, logs
    store = Store(store_url)
    long = store.measurements()
    assert sorted(long["network"]) == sorted(NETS)  # unique key: each network stored once
    assert store.devices()["name"].tolist() == ["shared"]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM networks")).scalar() == len(NETS)
