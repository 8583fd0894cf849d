"""Benchmark tables of the store: layer benchmarks, profiles, profiler nodes, fusion labels.

Added to :data:`latlab.datasets.store.METADATA` following the store's pattern: integer ids,
foreign keys to ``devices``/``networks``, a unique key that makes inserts idempotent (a resumed
or parallel campaign never duplicates a row) and an ``extra`` JSON column. A profile and its
node rows, or a network's fusion labels, are written in one transaction so that an interrupted
campaign never leaves half an item behind.

* ``layer_benchmarks`` -- a benchmark network's layer time by one method: ``single`` (the
  single-layer model's end-to-end latency), ``padded`` (smart padding: padded model minus
  padding-only models, with the ``[lower, upper]`` interval) or ``profile`` (onnxruntime's
  per-node times of the benchmarked layers, p10/p90 of the per-run sums as the interval).
* ``profiles`` / ``profile_nodes`` -- one profiled run of a network: summary (run, kernel and
  runtime-inserted times, the runtime groups) and one row per optimised node with its IR layers
  and every per-run duration.
* ``fusion_labels`` -- per data-flow edge of a network: fused / not_fused / possibly_fused.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError

from latlab.datasets.store import METADATA, Store, devices, networks
from latlab.errors import StoreError

if TYPE_CHECKING:
    from latlab.datasets.bench.profile import Profile
    from latlab.datasets.bench.trace import FusionLabel

METHODS = ("single", "padded", "profile")


def _now() -> datetime:
    return datetime.now(UTC)


layer_benchmarks = Table(
    "layer_benchmarks",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("network_id", Integer, ForeignKey("networks.id"), nullable=False),
    Column("method", String(16), nullable=False),
    Column("protocol_key", String(32), nullable=False),
    Column("suite", String(32)),
    Column("kind", String(32)),
    Column("latency_ms", Float, nullable=False),
    Column("lower_ms", Float),
    Column("upper_ms", Float),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
    UniqueConstraint("device_id", "network_id", "method", "protocol_key", name="uq_layer_bench"),
)

profiles = Table(
    "profiles",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("network_id", Integer, ForeignKey("networks.id"), nullable=False),
    Column("settings_key", String(32), nullable=False),
    Column("settings", JSON),
    Column("run_ms", Float),
    Column("kernels_ms", Float),
    Column("inserted_ms", Float),
    Column("groups", JSON),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
    UniqueConstraint("device_id", "network_id", "settings_key", name="uq_profile"),
)

profile_nodes = Table(
    "profile_nodes",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("network_id", Integer, ForeignKey("networks.id"), nullable=False),
    Column("settings_key", String(32), nullable=False),
    Column("node_index", Integer, nullable=False),
    Column("node", Text),
    Column("op", String(100)),
    Column("domain", String(100)),
    Column("layers", JSON),
    Column("inserted", Boolean),
    Column("exact", Boolean),
    Column("runs", Integer),
    Column("median_us", Float),
    Column("p10_us", Float),
    Column("p90_us", Float),
    Column("samples_us", JSON),
    Column("extra", JSON),
    UniqueConstraint(
        "device_id", "network_id", "settings_key", "node_index", name="uq_profile_node"
    ),
)

fusion_labels = Table(
    "fusion_labels",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("network_id", Integer, ForeignKey("networks.id"), nullable=False),
    Column("producer", Text, nullable=False),
    Column("consumer", Text, nullable=False),
    Column("producer_op", String(100)),
    Column("consumer_op", String(100)),
    Column("producer_kind", String(32)),
    Column("consumer_kind", String(32)),
    Column("label", String(16), nullable=False),
    Column("evidence", Text),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
    UniqueConstraint("device_id", "network_id", "producer", "consumer", name="uq_fusion"),
)


def settings_key(settings: dict[str, Any]) -> str:
    """Short hash of profiler settings that change what is measured (threads, runtime)."""
    keep = {k: settings.get(k) for k in ("threads", "onnxruntime", "graph_optimization")}
    if settings.get("timer", "wall") != "wall":
        keep["timer"] = settings["timer"]
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


class BenchStore:
    """The benchmark tables of a :class:`Store` (same database, same connection pool)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing -------------------------------------------------------------------------------

    def _transaction(self, rows: list[tuple[Table, dict[str, Any]]]) -> bool:
        """Insert rows in one transaction; returns whether the first row was new."""
        st = self.store
        try:
            with st.engine.begin() as conn:
                first = True
                for k, (table, values) in enumerate(rows):
                    wrote = st.insert_ignore(conn, table, values)
                    if k == 0:
                        first = wrote
                        if not wrote:
                            return False
                return first
        except DBAPIError as exc:
            line = (str(getattr(exc, "orig", exc)).strip().splitlines() or ["error"])[0]
            raise StoreError(f"cannot write to store {st.display_url}: {line}") from None

    def add_layer_benchmark(
        self,
        device: str,
        network: str,
        method: str,
        latency_ms: float,
        *,
        protocol_key: str,
        suite: str | None = None,
        kind: str | None = None,
        lower_ms: float | None = None,
        upper_ms: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Commit one layer benchmark result (False: already stored)."""
        if method not in METHODS:
            raise StoreError(f"unknown layer benchmark method {method!r} (known: {METHODS})")
        st = self.store
        row = {
            "device_id": st.device_id(device),
            "network_id": st.add_network(network),
            "method": method,
            "protocol_key": protocol_key,
            "suite": suite,
            "kind": kind,
            "latency_ms": float(latency_ms),
            "lower_ms": None if lower_ms is None else float(lower_ms),
            "upper_ms": None if upper_ms is None else float(upper_ms),
            "extra": extra or {},
            "created_at": _now(),
        }
        return self._transaction([(layer_benchmarks, row)])

    def add_profile(
        self,
        device: str,
        profile: Profile,
        labels: list[FusionLabel] | None = None,
        *,
        scale: float = 1.0,
    ) -> str:
        """Commit a profile with its nodes (and the network's fusion labels) at once.

        ``scale`` is the factor from the profile's raw times to the device's reference scale
        when it was taken (``latlab bench`` with a reference network); it is stored with the
        profile, the node times stay raw, and :func:`~latlab.datasets.bench.export.kernel_rows`
        applies it, so kernel times and the paired end-to-end times share one scale.
        Returns the settings key under which it is stored.
        """
        st = self.store
        dev = st.device_id(device)
        net = st.add_network(profile.mapping.graph)
        key = settings_key(profile.settings)
        groups = profile.group_table().to_dict(orient="records")
        rows: list[tuple[Table, dict[str, Any]]] = [
            (
                profiles,
                {
                    "device_id": dev,
                    "network_id": net,
                    "settings_key": key,
                    "settings": profile.settings,
                    "run_ms": _finite(profile.run_ms),
                    "kernels_ms": _finite(profile.kernels_ms),
                    "inserted_ms": _finite(profile.inserted_ms),
                    "groups": _clean(groups),
                    "extra": {
                        "run_us": profile.run_us,
                        "cpu_ratio": profile.cpu_ratio,
                        "scale": float(scale),
                    },
                    "created_at": _now(),
                },
            )
        ]
        for rec in profile.node_table().to_dict(orient="records"):
            rows.append(
                (
                    profile_nodes,
                    {
                        "device_id": dev,
                        "network_id": net,
                        "settings_key": key,
                        "node_index": int(rec["node_index"]),
                        "node": rec["node"],
                        "op": rec["op"],
                        "domain": rec["domain"],
                        "layers": list(rec["layers"]),
                        "inserted": bool(rec["inserted"]),
                        "exact": bool(rec["exact"]),
                        "runs": int(rec["runs"]),
                        "median_us": _finite(rec["median_us"]),
                        "p10_us": _finite(rec["p10_us"]),
                        "p90_us": _finite(rec["p90_us"]),
                        "samples_us": list(rec["samples_us"]),
                        "extra": {"kernel": _clean(rec.get("kernel"))},
                    },
                )
            )
        for lab in labels or []:
            rows.append((fusion_labels, self._label_row(dev, net, lab)))
        self._transaction(rows)
        return key

    @staticmethod
    def _label_row(dev: int, net: int, lab: FusionLabel) -> dict[str, Any]:
        return {
            "device_id": dev,
            "network_id": net,
            "producer": lab.producer_name,
            "consumer": lab.consumer_name,
            "producer_op": lab.producer_op,
            "consumer_op": lab.consumer_op,
            "producer_kind": lab.producer_kind,
            "consumer_kind": lab.consumer_kind,
            "label": lab.label,
            "evidence": lab.evidence,
            "extra": {},
            "created_at": _now(),
        }

    # -- reading -------------------------------------------------------------------------------

    def done(self, device: str, method: str, protocol_key: str) -> set[str]:
        """References with a ``method`` result for ``device`` under ``protocol_key``."""
        t = layer_benchmarks
        stmt = (
            select(networks.c.reference)
            .join(t, networks.c.id == t.c.network_id)
            .join(devices, devices.c.id == t.c.device_id)
            .where(devices.c.name == device, t.c.method == method, t.c.protocol_key == protocol_key)
        )
        with self.store.engine.connect() as conn:
            return {r[0] for r in conn.execute(stmt)}

    def median_ms(self, device: str, network: str, protocol_key: str) -> float | None:
        """The stored median latency of ``network`` on ``device`` under ``protocol_key``: the
        drift-corrected median where the measurement has one, else the raw median."""
        from latlab.datasets.store import measurements

        m = measurements
        stmt = (
            select(func.coalesce(m.c.corrected_ms, m.c.median_ms))
            .join(devices, devices.c.id == m.c.device_id)
            .join(networks, networks.c.id == m.c.network_id)
            .where(
                devices.c.name == device,
                networks.c.reference == network,
                m.c.protocol_key == protocol_key,
            )
            .order_by(m.c.id.desc())
            .limit(1)
        )
        with self.store.engine.connect() as conn:
            found = conn.execute(stmt).scalar()
        return None if found is None else float(found)

    def profiled(self, device: str, key: str | None = None) -> set[str]:
        """References with a stored profile on ``device`` (under settings ``key`` if given)."""
        stmt = (
            select(networks.c.reference)
            .join(profiles, networks.c.id == profiles.c.network_id)
            .join(devices, devices.c.id == profiles.c.device_id)
            .where(devices.c.name == device)
        )
        if key is not None:
            stmt = stmt.where(profiles.c.settings_key == key)
        with self.store.engine.connect() as conn:
            return {r[0] for r in conn.execute(stmt)}

    def _frame(self, table: Table, device: str | None, columns: list[Any]) -> pd.DataFrame:
        stmt = (
            select(devices.c.name.label("device"), networks.c.reference.label("network"), *columns)
            .join(devices, devices.c.id == table.c.device_id)
            .join(networks, networks.c.id == table.c.network_id)
            .order_by(table.c.id)
        )
        if device is not None:
            stmt = stmt.where(devices.c.name == device)
        with self.store.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        names = ["device", "network", *(c.name for c in columns)]
        return pd.DataFrame(rows, columns=names)

    def layer_benchmarks(self, device: str | None = None) -> pd.DataFrame:
        """All layer benchmark results (long format)."""
        t = layer_benchmarks
        cols = [
            t.c.method,
            t.c.protocol_key,
            t.c.suite,
            t.c.kind,
            t.c.latency_ms,
            t.c.lower_ms,
            t.c.upper_ms,
            t.c.extra,
        ]
        return self._frame(t, device, cols)

    def profiles(self, device: str | None = None) -> pd.DataFrame:
        t = profiles
        cols = [
            t.c.settings_key,
            t.c.settings,
            t.c.run_ms,
            t.c.kernels_ms,
            t.c.inserted_ms,
            t.c.groups,
            t.c.extra,
        ]
        return self._frame(t, device, cols)

    def profile_nodes(self, device: str | None = None, *, samples: bool = False) -> pd.DataFrame:
        t = profile_nodes
        cols = [
            t.c.settings_key,
            t.c.node_index,
            t.c.node,
            t.c.op,
            t.c.domain,
            t.c.layers,
            t.c.inserted,
            t.c.exact,
            t.c.runs,
            t.c.median_us,
            t.c.p10_us,
            t.c.p90_us,
            t.c.extra,
        ]
        if samples:
            cols.append(t.c.samples_us)
        return self._frame(t, device, cols)

    def fusion_labels(self, device: str | None = None) -> pd.DataFrame:
        t = fusion_labels
        cols = [
            t.c.producer,
            t.c.consumer,
            t.c.producer_op,
            t.c.consumer_op,
            t.c.producer_kind,
            t.c.consumer_kind,
            t.c.label,
            t.c.evidence,
        ]
        return self._frame(t, device, cols)


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def _clean(o: Any) -> Any:
    """JSON-safe copy: numpy values to Python, NaN/inf to None (PostgreSQL rejects NaN)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if hasattr(o, "tolist"):
        return _clean(o.tolist())
    if isinstance(o, float):
        return _finite(o)
    return o
