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
    update,
)
from sqlalchemy import inspect as sa_inspect
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

from latlab.errors import StoreError, first_line

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
        *drift_columns(),
    ]


def drift_columns() -> list[Column[Any]]:
    """The drift-correction columns of a measurement (added to stores written before them when
    they are opened; additive, so the schema version stays 1 and older latlab versions still
    read these stores): reference network, median per-round ratio to it, corrected median,
    the reference's raw median in the same rounds and the id of the reference value used."""
    return [
        Column("reference", Text),
        Column("ratio", Float),
        Column("corrected_ms", Float),
        Column("reference_median_ms", Float),
        Column("reference_value_id", Integer),
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


#: The reference value of each device configuration (device + settings key + reference
#: network): the scale every corrected median of that configuration is expressed in. Several
#: rows exist when it was re-established; the latest (highest id) is the current one.
reference_values = Table(
    "reference_values",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("reference", Text, nullable=False),
    Column("settings_key", String(32), nullable=False),
    Column("settings", JSON),
    Column("value_ms", Float, nullable=False),
    Column("protocol", JSON),
    Column("created_at", DateTime(timezone=True), default=_now),
    Column("extra", JSON),
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


def _add_missing_columns(conn: Connection) -> None:
    """Add the drift-correction columns to measurement tables of stores written before them."""
    inspector = sa_inspect(conn)
    for table in (measurements, anchor_measurements):
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for col in drift_columns():
            if col.name not in present:
                kind = col.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {col.name} {kind}"))


def _first_line(exc: BaseException) -> str:
    return first_line(getattr(exc, "orig", None) or exc)


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
                racing = "already exists" in str(exc) or "duplicate column" in str(exc)
                if not racing or attempt == 4:
                    raise

    def _create_schema_once(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            METADATA.create_all(conn)
            _add_missing_columns(conn)
            self.insert_ignore(conn, store_meta, {"key": "schema_version", "value": SCHEMA_VERSION})
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

    def insert_ignore(self, conn: Connection, table: Table, values: dict[str, Any]) -> bool:
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
                return self.insert_ignore(conn, table, values)
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
                "load": m.load,
                **(
                    {
                        "reference_samples_ms": list(m.reference_samples_ms),
                        "reference_value_ms": m.reference_value_ms,
                        "rounds": m.rounds,
                    }
                    if m.reference is not None
                    else {}
                ),
            },
            "reference": m.reference,
            "ratio": m.ratio,
            "corrected_ms": m.corrected_ms,
            "reference_median_ms": m.reference_median_ms,
            "reference_value_id": m.reference_value_id,
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

    def add_reference_value(
        self,
        device: str,
        reference: str,
        settings_key: str,
        value_ms: float,
        *,
        settings: dict[str, Any] | None = None,
        protocol: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Store a (new) reference value of a device configuration and return its id.

        In the same transaction, every measurement corrected with an earlier value of this
        configuration is rescaled to the new one (``corrected_ms = ratio x value_ms``): the
        ratios are what was measured, so re-establishing a value moves the whole device onto
        the new scale and never leaves two scales in one column.
        """
        if not value_ms > 0:
            raise StoreError(f"reference value of {reference!r} must be positive, got {value_ms}")
        dev = self.device_id(device)
        try:
            with self.engine.begin() as conn:
                old = [
                    row[0]
                    for row in conn.execute(
                        select(reference_values.c.id).where(
                            reference_values.c.device_id == dev,
                            reference_values.c.reference == reference,
                            reference_values.c.settings_key == settings_key,
                        )
                    )
                ]
                new_id = conn.execute(
                    reference_values.insert()
                    .values(
                        device_id=dev,
                        reference=reference,
                        settings_key=settings_key,
                        settings=settings,
                        value_ms=float(value_ms),
                        protocol=protocol,
                        extra=extra or {},
                        created_at=_now(),
                    )
                    .returning(reference_values.c.id)
                ).scalar_one()
                if old:
                    for table in (measurements, anchor_measurements):
                        conn.execute(
                            update(table)
                            .where(table.c.reference_value_id.in_(old))
                            .values(
                                corrected_ms=table.c.ratio * float(value_ms),
                                reference_value_id=new_id,
                            )
                        )
        except DBAPIError as exc:
            raise StoreError(
                f"cannot write to store {self.display_url}: {_first_line(exc)}"
            ) from None
        return int(new_id)

    # -- reading -------------------------------------------------------------------------------

    def reference_value(
        self, device: str, reference: str, settings_key: str
    ) -> dict[str, Any] | None:
        """The current reference value of a device configuration (``id``, ``value_ms``,
        ``settings``, ``protocol``, ``extra``, ``created_at``), or None when none is stored."""
        stmt = (
            select(reference_values)
            .join(devices, devices.c.id == reference_values.c.device_id)
            .where(
                devices.c.name == device,
                reference_values.c.reference == reference,
                reference_values.c.settings_key == settings_key,
            )
            .order_by(reference_values.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return dict(row) if row is not None else None

    def reference_values(self, device: str | None = None) -> pd.DataFrame:
        """Every stored reference value (history included): device, reference, settings_key,
        value_ms, created_at, id, extra."""
        cols = [
            devices.c.name.label("device"),
            reference_values.c.reference,
            reference_values.c.settings_key,
            reference_values.c.value_ms,
            reference_values.c.created_at,
            reference_values.c.id,
            reference_values.c.extra,
        ]
        stmt = select(*cols).join(devices, devices.c.id == reference_values.c.device_id)
        if device is not None:
            stmt = stmt.where(devices.c.name == device)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(reference_values.c.id)).mappings().all()
        return pd.DataFrame(rows, columns=[c.name for c in cols])

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
        extra: bool = False,
    ) -> pd.DataFrame:
        """Measurements in long format: device, network, protocol_key, median/p10/p90/mean,
        cv, robust_cv, repeats, created_at, id, reference, ratio, corrected_ms,
        reference_median_ms, reference_value_id (and samples_ms with ``samples``; the extra
        JSON, with the load, with ``extra``; campaign/position for ``anchors``, which reads the
        anchor re-measurements instead)."""
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
            table.c.reference,
            table.c.ratio,
            table.c.corrected_ms,
            table.c.reference_median_ms,
            table.c.reference_value_id,
        ]
        if extra:
            cols.append(table.c.extra)
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
        *,
        value: str = "raw",
    ) -> pd.DataFrame:
        """The dataset table: ``network`` + one latency column (ms) per device.

        ``value`` is ``"raw"`` (the measured medians) or ``"corrected"`` (the drift-corrected
        medians: ratio to the same-round reference x the device configuration's reference
        value); a measurement without a corrected value (timed without a reference) makes
        ``"corrected"`` fail naming it, never falls back to raw. ``devices`` selects and orders
        the columns (default: every device, in registration order); ``protocol`` (a key or a
        :class:`MeasureConfig`) keeps one protocol's measurements. Without ``protocol``, a
        device whose selected networks were measured under more than one protocol raises
        :class:`StoreError` naming the device, the keys and a network (a column never mixes
        protocols; corrected medians on one reference value may, when no network was measured
        under two of them). ``networks`` selects and orders the rows (default: in order of first
        measurement). Networks without any selected measurement are left out.

        The frame's ``attrs["latlab"]`` says what it holds (``value`` and, per column, the
        protocol key, reference and reference value): :func:`~latlab.datasets.tables.save_table`
        writes it next to the table.
        """
        if value not in VALUES:
            raise StoreError(f"unknown export value {value!r} (known: {', '.join(VALUES)})")
        long = self.measurements(devices, protocol)
        if long.empty:
            return pd.DataFrame({"network": pd.Series(dtype=str)})
        if networks is not None:
            wanted = list(dict.fromkeys(networks))
            long = long[long["network"].isin(set(wanted))]
        long = long.sort_values("id")
        if protocol is None:
            _refuse_mixed_protocols(long, corrected=value == "corrected")
        first_seen = list(dict.fromkeys(long["network"]))
        long = long.drop_duplicates(["device", "network"], keep="last")
        column = "median_ms" if value == "raw" else "corrected_ms"
        if value == "corrected":
            missing = long[long["corrected_ms"].isna()]
            if len(missing):
                row = missing.iloc[0]
                raise StoreError(
                    f"{len(missing)} measurement(s) have no drift-corrected value (timed "
                    f"without a reference), e.g. {row['network']!r} on device {row['device']!r}: "
                    "export the raw values (value='raw', --value raw) or re-measure with a "
                    "reference"
                )
        columns = list(devices) if devices is not None else list(self.devices()["name"])
        columns = [c for c in columns if c in set(long["device"])] if len(long) else []
        if networks is not None:
            order = [n for n in wanted if n in set(long["network"])]
        else:
            order = first_seen
        wide = long.pivot(index="network", columns="device", values=column)
        wide = wide.reindex(index=order, columns=columns)
        out = wide.reset_index()
        out.columns.name = None
        out.attrs["latlab"] = self._table_meta(long, columns, value)
        return out

    def _table_meta(self, long: pd.DataFrame, columns: list[str], value: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"value": value, "unit": "ms", "store": self.display_url}
        per: dict[str, Any] = {}
        for dev in columns:
            rows = long[long["device"] == dev]
            refs = sorted({str(r) for r in rows["reference"].dropna()})
            info: dict[str, Any] = {
                "value": value,
                "protocol_keys": sorted(set(rows["protocol_key"])),
                "reference": refs[0] if len(refs) == 1 else (refs or None),
            }
            if value == "corrected" and len(refs) == 1:
                values = self._value_ids(dev, rows)
                info["reference_value_ms"] = values[0] if len(values) == 1 else values
            per[dev] = info
        meta["columns"] = per
        return meta

    def _value_ids(self, device: str, rows: pd.DataFrame) -> list[float]:
        """The reference value(s) the corrected medians of ``rows`` are expressed in."""
        ids = sorted({int(i) for i in rows["reference_value_id"].dropna()})
        if not ids:
            return []
        stmt = select(reference_values.c.value_ms).where(reference_values.c.id.in_(ids))
        with self.engine.connect() as conn:
            return sorted(float(r[0]) for r in conn.execute(stmt))


#: What :meth:`Store.export_table` can export.
VALUES = ("raw", "corrected")


def _refuse_mixed_protocols(long: pd.DataFrame, *, corrected: bool = False) -> None:
    """Raise naming the first device whose rows come from more than one protocol key.

    Exporting ``corrected`` medians, a device whose protocols share one reference value (one
    drift-corrected scale: paired campaigns of one device configuration, e.g. the benchmarks
    and the networks of ``latlab compare``, timed with other budgets) and measured no network
    under two of them is one column: the corrected scale is what makes them comparable."""
    for device, rows in long.groupby("device", sort=False):
        keys = list(dict.fromkeys(rows["protocol_key"]))
        if len(keys) < 2:
            continue
        per_net = rows.groupby("network")["protocol_key"].nunique()
        both = per_net[per_net > 1]
        values = rows["reference_value_id"]
        if corrected and not len(both) and values.notna().all() and values.nunique() == 1:
            continue
        which = (
            f"network {both.index[0]!r} was measured under both"
            if len(both)
            else f"e.g. {rows['network'].iloc[0]!r} under {keys[0]}"
        )
        raise StoreError(
            f"device {device!r} holds measurements under {len(keys)} protocols "
            f"({', '.join(keys[:4])}); {which}: choose one with protocol=KEY "
            "(the measurements table's protocol_key) so that a column never mixes protocols"
        )


def _protocol_key(protocol: str | Any | None) -> str | None:
    if protocol is None or isinstance(protocol, str):
        return protocol
    if hasattr(protocol, "protocol_key"):
        return str(protocol.protocol_key())
    raise StoreError(f"protocol must be a key or a MeasureConfig, got {type(protocol).__name__}")
