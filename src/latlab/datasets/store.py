"""The dataset store: devices, networks and measurements in a SQL database (SQLAlchemy Core).

A SQLite file is the default (``latlab.db``, or any path); a PostgreSQL URL
(``postgresql://user@host/db``) works the same and lets several ``latlab measure`` workers,
on one machine or many, write to one store at once. Every measurement is committed in its own
transaction as it completes, so an interrupted campaign keeps everything it finished.

Concurrency: rows are identified by unique keys (device name, network reference, and
device + network + protocol key for measurements) and inserted with ``ON CONFLICT DO NOTHING``,
so two workers adding the same device, network or measurement never fail: the first write
wins and the second is a no-op. Schema creation takes a PostgreSQL advisory lock so that
workers starting together do not race on ``CREATE TABLE``.

Extending: later parts add their tables to :data:`METADATA` in their own modules (for example
per-layer measurements), following the pattern here: an integer id, foreign keys to
``devices``/``networks``, a unique key for idempotent inserts and an ``extra`` JSON column.
:func:`Store.open` creates every table registered on :data:`METADATA` when it connects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from latlab.errors import StoreError

if TYPE_CHECKING:
    from latlab.datasets.measure.protocol import Measurement
    from latlab.encoders.ir import NetworkGraph

log = logging.getLogger(__name__)

#: Version of the schema below; a store written by a newer latlab is refused.
SCHEMA_VERSION = 1
DEFAULT_URL = "latlab.db"
_LOCK_KEY = 0x1A71AB  # PostgreSQL advisory lock taken while creating tables

METADATA = MetaData()


def _now() -> datetime:
    return datetime.now(UTC)


store_meta = Table(
    "latlab_meta",
    METADATA,
    Column("key", String(200), primary_key=True),
    Column("value", JSON),
)

devices = Table(
    "devices",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("backend", String(100)),
    Column("fingerprint", JSON),
    Column("info", JSON),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
)

networks = Table(
    "networks",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference", Text, nullable=False, unique=True),
    Column("digest", String(64)),
    Column("family", String(100)),
    Column("summary", JSON),
    Column("extra", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
)


def measurement_columns() -> list[Column[Any]]:
    """The columns of one measurement (shared by ``measurements`` and ``anchor_measurements``)."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
        Column("network_id", Integer, ForeignKey("networks.id"), nullable=False),
        Column("protocol_key", String(32), nullable=False),
        Column("protocol", JSON),
        Column("median_ms", Float, nullable=False),
        Column("p10_ms", Float),
        Column("p90_ms", Float),
        Column("mean_ms", Float),
        Column("cv", Float),
        Column("robust_cv", Float),
        Column("repeats", Integer),
        Column("warmup_runs", Integer),
        Column("remeasures", Integer),
        Column("samples_ms", JSON),
        Column("backend_info", JSON),
        Column("fingerprint", JSON),
        Column("started_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
        Column("created_at", DateTime(timezone=True), default=_now),
        Column("extra", JSON),
    ]


measurements = Table(
    "measurements",
    METADATA,
    *measurement_columns(),
    UniqueConstraint("device_id", "network_id", "protocol_key", name="uq_measurement"),
)

#: Anchor re-measurements of campaigns: many per device/network/protocol, hence no unique key.
anchor_measurements = Table(
    "anchor_measurements",
    METADATA,
    *measurement_columns(),
    Column("campaign", String(64), nullable=False),
    Column("position", Integer, nullable=False),
)


def normalise_url(url: str | os.PathLike[str]) -> URL:
    """A SQLAlchemy URL for a store given as a URL or a SQLite file path.

    ``postgresql://`` and ``postgres://`` use the psycopg 3 driver (the one latlab depends on).
    Raises :class:`StoreError` for malformed URLs and unsupported databases.
    """
    raw = os.fspath(url).strip()
    if not raw:
        raise StoreError("empty store URL: give a SQLite file path or a postgresql:// URL")
    if "://" not in raw:
        return URL.create("sqlite", database=raw)
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError):
        raise StoreError(f"malformed store URL {raw!r}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy 2.0 would pick psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend == "sqlite":
        return parsed
    raise StoreError(
        f"unsupported store URL scheme {parsed.drivername!r}: use a SQLite file path, "
        "sqlite:///FILE or postgresql://USER@HOST/DB"
    )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


class Store:
    """A measurement store at ``url`` (a SQLite path, ``sqlite:///...`` or ``postgresql://...``).

    Opening creates missing tables. Raises :class:`StoreError` with one line when the store
    cannot be opened (bad URL, missing directory, unreachable server, not a database).
    """

    def __init__(self, url: str | os.PathLike[str] = DEFAULT_URL) -> None:
        self.url = normalise_url(url)
        self.display_url = self.url.render_as_string(hide_password=True)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            parent = Path(self.url.database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot create store {self.url.database!r}: no folder {parent}")
        try:
            self.engine: Engine = self._create_engine()
            self._create_schema()
        except StoreError:
            raise
        except NoSuchModuleError as exc:
            raise StoreError(f"no database driver for {self.display_url}: {exc}") from None
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open store {self.display_url}: {_first_line(exc)}") from None
        self._device_ids: dict[str, int] = {}
        self._network_ids: dict[str, int] = {}

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            # Several processes may share one file: wait for the write lock instead of failing.
            engine = create_engine(self.url, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return create_engine(self.url, pool_pre_ping=True)

    def _create_schema(self) -> None:
        # Workers starting together race on CREATE TABLE. PostgreSQL serialises them with an
        # advisory lock; SQLite has none, so a loser ("already exists") simply tries again and
        # then finds the tables.
        for attempt in range(5):
            try:
                self._create_schema_once()
                return
            except OperationalError as exc:
                if "already exists" not in str(exc) or attempt == 4:
                    raise

    def _create_schema_once(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            METADATA.create_all(conn)
            self._insert_ignore(
                conn, store_meta, {"key": "schema_version", "value": SCHEMA_VERSION}
            )
            version = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "schema_version")
            ).scalar_one()
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.display_url} has schema version {version}, newer than this "
                f"latlab's {SCHEMA_VERSION}: upgrade latlab"
            )

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    # -- writing -------------------------------------------------------------------------------

    def _insert_ignore(self, conn: Connection, table: Table, values: dict[str, Any]) -> bool:
        """Insert a row unless it violates a unique key; True when a row was written."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = insert(table).values(**values).on_conflict_do_nothing()
        # RETURNING tells reliably whether a row was written (rowcount does not on every
        # driver once SQLAlchemy adds its own RETURNING for the primary key).
        result = conn.execute(stmt.returning(*table.primary_key.columns))
        return result.first() is not None

    def _write(self, table: Table, values: dict[str, Any]) -> bool:
        try:
            with self.engine.begin() as conn:
                return self._insert_ignore(conn, table, values)
        except DBAPIError as exc:
            raise StoreError(
                f"cannot write to store {self.display_url}: {_first_line(exc)}"
            ) from None

    def add_device(
        self,
        name: str,
        *,
        backend: str | None = None,
        fingerprint: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Register a device (a latency column); an existing device of that name is kept."""
        if not name or not name.strip():
            raise StoreError("a device name must not be empty")
        self._write(
            devices,
            {
                "name": name,
                "backend": backend,
                "fingerprint": fingerprint,
                "info": info,
                "extra": extra or {},
                "created_at": _now(),
            },
        )
        return self.device_id(name)

    def device_id(self, name: str) -> int:
        """The id of device ``name``; raises StoreError naming it when it is not registered."""
        if name not in self._device_ids:
            with self.engine.connect() as conn:
                found = conn.execute(select(devices.c.id).where(devices.c.name == name)).scalar()
            if found is None:
                raise StoreError(f"unknown device {name!r} in store {self.display_url}")
            self._device_ids[name] = int(found)
        return self._device_ids[name]

    def add_network(
        self, network: str | NetworkGraph, *, extra: dict[str, Any] | None = None
    ) -> int:
        """Register a network by reference with its digest, family and IR summary."""
        from latlab.datasets.references import resolve

        graph = resolve(network)
        ref = graph.reference
        if ref not in self._network_ids:
            self._write(
                networks,
                {
                    "reference": ref,
                    "digest": graph.digest,
                    "family": graph.family,
                    "summary": graph.summary(),
                    "extra": extra or {},
                    "created_at": _now(),
                },
            )
        return self.network_id(ref)

    def network_id(self, reference: str) -> int:
        """The id of a registered network; raises StoreError naming it otherwise."""
        if reference not in self._network_ids:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(networks.c.id).where(networks.c.reference == reference)
                ).scalar()
            if found is None:
                raise StoreError(f"network {reference!r} is not in store {self.display_url}")
            self._network_ids[reference] = int(found)
        return self._network_ids[reference]

    def _measurement_row(self, device: str, m: Measurement) -> dict[str, Any]:
        return {
            "device_id": self.device_id(device),
            "network_id": self.network_id(m.network),
            "protocol_key": m.protocol_key,
            "protocol": m.protocol,
            "median_ms": m.median_ms,
            "p10_ms": m.p10_ms,
            "p90_ms": m.p90_ms,
            "mean_ms": m.mean_ms,
            "cv": m.cv,
            "robust_cv": m.robust_cv,
            "repeats": m.repeats,
            "warmup_runs": m.warmup_runs,
            "remeasures": m.remeasures,
            "samples_ms": list(m.samples_ms),
            "backend_info": m.backend_info,
            "fingerprint": m.fingerprint,
            "started_at": m.started_at,
            "finished_at": m.finished_at,
            "created_at": _now(),
            "extra": {
                **m.extra,
                "warmup_settled": m.warmup_settled,
                "attempt_cvs": m.attempt_cvs,
            },
        }

    def add_measurement(self, device: str, measurement: Measurement) -> bool:
        """Commit one measurement (device and network must be registered).

        Returns False, writing nothing, when the device already has a measurement of that
        network with the same protocol (another worker was first).
        """
        return self._write(measurements, self._measurement_row(device, measurement))

    def add_anchor(
        self, device: str, measurement: Measurement, *, campaign: str, position: int
    ) -> None:
        """Commit one anchor re-measurement of a campaign (``position``: networks done before)."""
        row = self._measurement_row(device, measurement)
        row.update(campaign=campaign, position=position)
        self._write(anchor_measurements, row)

    # -- reading -------------------------------------------------------------------------------

    def is_measured(self, device: str, network: str, protocol_key: str) -> bool:
        """Whether ``device`` has a measurement of ``network`` under ``protocol_key``."""
        stmt = (
            select(measurements.c.id)
            .join(devices, devices.c.id == measurements.c.device_id)
            .join(networks, networks.c.id == measurements.c.network_id)
            .where(
                devices.c.name == device,
                networks.c.reference == network,
                measurements.c.protocol_key == protocol_key,
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def measured_references(self, device: str, protocol_key: str | None = None) -> set[str]:
        """References measured on ``device`` (under ``protocol_key`` when given)."""
        stmt = (
            select(networks.c.reference)
            .join(measurements, networks.c.id == measurements.c.network_id)
            .join(devices, devices.c.id == measurements.c.device_id)
            .where(devices.c.name == device)
        )
        if protocol_key is not None:
            stmt = stmt.where(measurements.c.protocol_key == protocol_key)
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(stmt)}

    def devices(self) -> pd.DataFrame:
        """Registered devices: name, backend, fingerprint, info."""
        stmt = select(devices.c.name, devices.c.backend, devices.c.fingerprint, devices.c.info)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(devices.c.id)).mappings().all()
        return pd.DataFrame(rows, columns=["name", "backend", "fingerprint", "info"])

    def measurements(
        self,
        devices_: Iterable[str] | None = None,
        protocol: str | Any | None = None,
        *,
        samples: bool = False,
        anchors: bool = False,
    ) -> pd.DataFrame:
        """Measurements in long format: device, network, protocol_key, median/p10/p90/mean,
        cv, robust_cv, repeats, created_at (and samples_ms with ``samples``; campaign/position for
        ``anchors``, which reads the anchor re-measurements instead)."""
        table = anchor_measurements if anchors else measurements
        cols = [
            devices.c.name.label("device"),
            networks.c.reference.label("network"),
            table.c.protocol_key,
            table.c.median_ms,
            table.c.p10_ms,
            table.c.p90_ms,
            table.c.mean_ms,
            table.c.cv,
            table.c.robust_cv,
            table.c.repeats,
            table.c.created_at,
            table.c.id,
        ]
        if samples:
            cols.append(table.c.samples_ms)
        if anchors:
            cols += [anchor_measurements.c.campaign, anchor_measurements.c.position]
        stmt = (
            select(*cols)
            .join(devices, devices.c.id == table.c.device_id)
            .join(networks, networks.c.id == table.c.network_id)
        )
        if devices_ is not None:
            stmt = stmt.where(devices.c.name.in_(list(devices_)))
        key = _protocol_key(protocol)
        if key is not None:
            stmt = stmt.where(table.c.protocol_key == key)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(table.c.id)).mappings().all()
        return pd.DataFrame(rows, columns=[c.name for c in cols])

    def export_table(
        self,
        devices: Sequence[str] | None = None,
        protocol: str | Any | None = None,
        networks: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The dataset table: ``network`` + one median-latency column (ms) per device.

        ``devices`` selects and orders the columns (default: every device, in registration
        order); ``protocol`` (a key or a :class:`MeasureConfig`) keeps one protocol's
        measurements, otherwise the latest measurement of each device and network is used;
        ``networks`` selects and orders the rows (default: in order of first measurement).
        Networks without any selected measurement are left out.
        """
        long = self.measurements(devices, protocol)
        if long.empty:
            return pd.DataFrame({"network": pd.Series(dtype=str)})
        if networks is not None:
            wanted = list(dict.fromkeys(networks))
            long = long[long["network"].isin(set(wanted))]
        long = long.sort_values("id")
        first_seen = list(dict.fromkeys(long["network"]))
        long = long.drop_duplicates(["device", "network"], keep="last")
        columns = list(devices) if devices is not None else list(self.devices()["name"])
        columns = [c for c in columns if c in set(long["device"])] if len(long) else []
        if networks is not None:
            order = [n for n in wanted if n in set(long["network"])]
        else:
            order = first_seen
        wide = long.pivot(index="network", columns="device", values="median_ms")
        wide = wide.reindex(index=order, columns=columns)
        out = wide.reset_index()
        out.columns.name = None
        return out


def _protocol_key(protocol: str | Any | None) -> str | None:
    if protocol is None or isinstance(protocol, str):
        return protocol
    if hasattr(protocol, "protocol_key"):
        return str(protocol.protocol_key())
    raise StoreError(f"protocol must be a key or a MeasureConfig, got {type(protocol).__name__}")
