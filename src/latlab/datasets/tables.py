"""Dataset tables: ``network`` + one latency column per device, in milliseconds (CSV/Parquet).

Loading validates every latency column and drops, per column, what is not a usable latency,
counting each reason so that nothing is dropped silently:

- ``text``: a value that is not a number (``"12ms"``, ``"n/a"``);
- ``missing``: empty cells and NaN;
- ``non_finite``: ``inf``;
- ``non_positive``: ``<= 0`` (what a failed run that returned at once records);
- ``implausible``: above :data:`MAX_MS` (10^7 ms, 2.8 hours per inference: ``1e300`` is a
  broken value, not a slow network);
- ``below_min``: a positive value below ``min_ms``, an explicit floor the caller sets (``latlab
  table|train|evaluate --min-ms X``; a number for every column or ``{column: ms}``). There is
  no default floor and no rule relative to the column's median: in a mixed table a 5 µs FCNN
  next to 50 ms CNNs is a real measurement, and latlab's own store keeps failed measurements
  out of its tables by their status. Values more than 200 times below their column's median
  are *counted* as ``suspect`` (kept, and a warning suggests ``--min-ms``);
- ``duplicate``: a network listed again (the first row is kept); ``conflicts`` counts, per
  column, the repeated networks whose values disagree (a warning names the first).

The shared NAS-Bench-201 table (HELP's) holds 183 failed ``pixel3`` runs recorded at 3-49 µs;
its fastest real latency in any column is 0.059 ms. Its loaders pass
``min_ms=NB201_MIN_MS`` (0.05 ms), which drops exactly those 183 and nothing else.

Rows are never dropped as a whole: a network with a failed measurement on one device keeps its
valid latencies on the others. ``LatencyTable.valid(column)`` gives one device's usable pairs.

What a table holds (raw or drift-corrected medians, per column the protocol key, reference
network and reference value) is written beside it as ``FILE.meta.json`` (:func:`save_table`,
from the frame's ``attrs["latlab"]``, which :meth:`Store.export_table` sets), not inside it:
the table stays a plain CSV/Parquet file any tool reads, and :func:`load_table` reads the
sidecar, where there is one, into ``LatencyTable.meta``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.errors import DataError, first_line
from latlab.fileio import atomic_write_text, atomic_write_with, prepare_output

log = logging.getLogger(__name__)
#: Drop reports already logged by this process (later loads of the same table log at DEBUG).
_REPORTED: set[str] = set()

NETWORK = "network"
REASONS = ("text", "missing", "non_finite", "non_positive", "implausible", "below_min")
#: Values this many times below their column's median are reported as ``suspect`` (kept).
SUSPECT_FRACTION = 0.005
#: Latencies above this (ms) are broken values, not measurements.
MAX_MS = 1e7
#: The documented floor of the shared NAS-Bench-201 table (see the module docstring).
NB201_MIN_MS = 0.05
MinMs = float | Mapping[str, float] | None
_NA_TOKENS = {"", "nan", "na", "n/a", "null", "none", "-"}


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataError(f"unsupported table format {path.name!r}: use .csv or .parquet")


def _read(path: Path) -> pd.DataFrame:
    fmt = _format(path)
    if not path.exists():
        raise DataError(f"table file not found: {path}")
    if path.is_dir():
        raise DataError(f"table path is a folder, not a file: {path}")
    try:
        if fmt == "csv":
            # pandas renames a repeated header (``titanx_32`` -> ``titanx_32.1``): read the
            # header as written first, so that a duplicated column is refused, not renamed.
            header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
            names = [str(c).strip() for c in header.iloc[0]] if len(header) else []
            seen = [c for i, c in enumerate(names) if c in names[:i]]
            if seen:
                where = [i + 1 for i, c in enumerate(names) if c == seen[0]]
                raise DataError(
                    f"table {path} has duplicate column {seen[0]!r} (columns "
                    f"{' and '.join(map(str, where))})"
                )
            # Everything as text first: the validation below decides what is a number.
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"table {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = first_line(exc)
        raise DataError(f"cannot read table {path}: {first}") from None


@dataclass
class ColumnCheck:
    """One column's validated values (NaN where dropped) and the count per drop reason."""

    values: pd.Series
    counts: dict[str, int]
    #: Valid values more than 200x below the column's median (kept; see the module doc).
    suspect: int = 0


def _floor(min_ms: MinMs, name: str) -> float | None:
    value = min_ms.get(name) if isinstance(min_ms, Mapping) else min_ms
    if value is None:
        return None
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise DataError(f"--min-ms must be a number of ms >= 0, got {value!r}")
    return float(value)


def check_column(raw: pd.Series, min_ms: MinMs = None, name: str = "column") -> ColumnCheck:
    """Coerce a column to float latencies and classify every invalid value (see module doc)."""
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        numbers = pd.to_numeric(raw, errors="coerce").astype(float)
        text = pd.Series(False, index=raw.index)
        missing = numbers.isna()
    else:
        as_text = raw.astype(str).str.strip()
        missing_token = raw.isna() | as_text.str.lower().isin(_NA_TOKENS)
        numbers = pd.to_numeric(as_text.where(~missing_token), errors="coerce").astype(float)
        text = numbers.isna() & ~missing_token
        missing = missing_token
    arr = numbers.to_numpy()
    finite = np.isfinite(arr)
    non_finite = pd.Series(~finite & ~np.isnan(arr), index=raw.index)
    non_positive = pd.Series(finite & (arr <= 0), index=raw.index)
    implausible = finite & (arr > MAX_MS)
    positive = finite & (arr > 0) & ~implausible
    floor = _floor(min_ms, name)
    below = positive & (arr < floor) if floor is not None else np.zeros(len(arr), dtype=bool)
    valid = positive & ~below
    median = float(np.median(arr[valid])) if valid.any() else np.nan
    suspect = int((valid & (arr < SUSPECT_FRACTION * median)).sum()) if valid.any() else 0
    counts = {
        "text": int(text.sum()),
        "missing": int(missing.sum()),
        "non_finite": int(non_finite.sum()),
        "non_positive": int(non_positive.sum()),
        "implausible": int(implausible.sum()),
        "below_min": int(below.sum()),
    }
    return ColumnCheck(numbers.where(pd.Series(valid, index=raw.index)), counts, suspect)


@dataclass
class LatencyTable:
    """A validated dataset table.

    ``data`` has the ``network`` column and one float column per device, NaN where a value
    was dropped; ``report`` has one row per device column with ``rows``, ``valid``, a count per
    drop reason, ``dropped``, ``suspect`` (kept values 200x below the median), ``conflicts``
    (repeated networks with another value) and ``quantised`` (all valid values whole numbers:
    a coarse timer); ``duplicates`` counts repeated networks (first kept); ``meta`` is the
    table's metadata sidecar (``FILE.meta.json``: which value the columns hold), empty without
    one.
    """

    path: Path | None
    data: pd.DataFrame
    report: pd.DataFrame
    duplicates: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def devices(self) -> list[str]:
        """The latency columns, in file order."""
        return [c for c in self.data.columns if c != NETWORK]

    @property
    def networks(self) -> list[str]:
        return list(self.data[NETWORK])

    def __len__(self) -> int:
        return len(self.data)

    def valid(self, column: str) -> pd.DataFrame:
        """One device's usable rows: ``network``, ``latency_ms`` (dropped values excluded)."""
        if column not in self.devices:
            known = ", ".join(self.devices)
            where = f" in {self.path}" if self.path else ""
            raise DataError(f"no latency column {column!r}{where} (columns: {known})")
        out = self.data[[NETWORK, column]].dropna(subset=[column])
        return out.rename(columns={column: "latency_ms"}).reset_index(drop=True)

    def report_dict(self) -> dict[str, dict[str, int | bool]]:
        """The report as ``{column: {reason: count, ...}}`` (JSON-able)."""
        return {
            str(col): {k: (bool(v) if k == "quantised" else int(v)) for k, v in row.items()}
            for col, row in self.report.to_dict(orient="index").items()
        }

    def summary(self) -> str:
        """One line per column with drops, for logs and the CLI."""
        lines = []
        for col, row in self.report.iterrows():
            if row["dropped"]:
                parts = ", ".join(f"{r} {int(row[r])}" for r in REASONS if row[r])
                lines.append(
                    f"{col}: dropped {int(row['dropped'])} of {int(row['rows'])} ({parts})"
                )
        return "\n".join(lines)


def validate_frame(
    frame: pd.DataFrame,
    source: str = "table",
    min_ms: MinMs = None,
    path: Path | None = None,
) -> LatencyTable:
    """Validate a DataFrame in dataset format (see :func:`load_table`)."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    if NETWORK not in frame.columns:
        raise DataError(
            f"{source} has no {NETWORK!r} column (columns: {', '.join(map(str, frame.columns))})"
        )
    dup_cols = frame.columns[frame.columns.duplicated()].tolist()
    if dup_cols:
        raise DataError(f"{source} has duplicate column {dup_cols[0]!r}")
    latency_cols = [c for c in frame.columns if c != NETWORK]
    if not latency_cols:
        raise DataError(f"{source} has no latency column besides {NETWORK!r}")
    networks = frame[NETWORK].astype(str).str.strip()
    blank = frame[NETWORK].isna() | networks.str.lower().isin(_NA_TOKENS)
    if blank.any():
        raise DataError(f"{source}: {int(blank.sum())} rows have no network reference")
    if frame.empty:
        raise DataError(f"{source} has no rows")
    duplicated = networks.duplicated(keep="first")
    data = pd.DataFrame({NETWORK: networks[~duplicated].to_numpy()})
    rows = []
    if isinstance(min_ms, Mapping):
        unknown = [c for c in min_ms if c not in latency_cols]
        if unknown:
            raise DataError(f"--min-ms names column {unknown[0]!r}, which {source} lacks")
    for col in latency_cols:
        check = check_column(frame.loc[~duplicated, col], min_ms, name=col)
        counts = check.counts
        conflicts = _conflicts(networks, frame[col], duplicated)
        if counts["text"] and counts["text"] + counts["missing"] == int((~duplicated).sum()):
            example = str(frame.loc[~duplicated, col].iloc[0])
            raise DataError(f"column {col!r} of {source} is not numeric (e.g. {example[:40]!r})")
        data[col] = check.values.to_numpy()
        values = check.values.dropna().to_numpy()
        dropped = sum(counts.values())
        rows.append(
            {
                "column": col,
                "rows": int((~duplicated).sum()),
                "valid": len(values),
                **counts,
                "dropped": dropped,
                "suspect": check.suspect,
                "conflicts": len(conflicts),
                "quantised": bool(len(values) and np.all(values == np.round(values))),
            }
        )
        notes = []
        if check.suspect:
            notes.append(
                f"{source} column {col!r}: {check.suspect} values are more than "
                f"{1 / SUSPECT_FRACTION:.0f}x below the column's median (failed runs? "
                "--min-ms MS drops values below MS)"
            )
        if conflicts:
            net, vals = conflicts[0]
            notes.append(
                f"{source} column {col!r}: {len(conflicts)} repeated networks have conflicting "
                f"values (the first row is kept), e.g. {net!r}: {', '.join(vals)}"
            )
        for note in notes:
            log.log(logging.DEBUG if note in _REPORTED else logging.WARNING, note)
            _REPORTED.add(note)
        if dropped:
            reasons = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            message = (
                f"{source} column {col!r}: dropped {dropped} of {len(check.values)} values "
                f"({reasons})"
            )
            # Experiments reload one table per run (hundreds of times): say it once per process.
            log.log(logging.DEBUG if message in _REPORTED else logging.WARNING, message)
            _REPORTED.add(message)
    report = pd.DataFrame(rows).set_index("column")
    report.index.name = None
    return LatencyTable(path, data, report, int(duplicated.sum()))


def _conflicts(
    networks: pd.Series, values: pd.Series, duplicated: pd.Series
) -> list[tuple[str, list[str]]]:
    """Repeated networks whose rows disagree in this column: (network, its distinct values)."""
    if not duplicated.any():
        return []
    repeated = networks[networks.isin(set(networks[duplicated]))]
    out = []
    for net, idx in repeated.groupby(repeated, sort=False).groups.items():
        distinct = list(dict.fromkeys(str(v).strip() for v in values.loc[idx]))
        if len(distinct) > 1:
            out.append((str(net), distinct))
    return out


def load_table(path: str | os.PathLike[str], min_ms: MinMs = None) -> LatencyTable:
    """Load and validate a dataset table (CSV or Parquet, by extension).

    Requires a ``network`` column and at least one latency column. Invalid latencies are
    dropped per column and counted in ``report`` (see the module docstring for the rules).
    Raises :class:`DataError` naming the file or column for unreadable files, a missing
    ``network`` column, rows without a network, and columns with no number at all.
    """
    p = Path(path)
    frame = _read(p)
    table = validate_frame(frame, f"table {p}", min_ms, path=p)
    table.meta = read_meta(p)
    return table


def meta_path(path: str | os.PathLike[str]) -> Path:
    """The metadata sidecar of a table file: ``FILE.meta.json`` beside it."""
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A table's metadata sidecar ({} when there is none)."""
    side = meta_path(path)
    if not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the metadata {side} of table {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"metadata {side} of table {path} is not a JSON object")
    return meta


def save_table(
    frame: pd.DataFrame | LatencyTable,
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a dataset table atomically (a temporary file in the same folder, then rename).

    The format follows the extension (``.csv``, ``.parquet``). A reader never sees a partial
    file, and an interrupted write leaves any previous file untouched. Missing parent folders
    are created; the file gets the ordinary mode (0644 under umask 022), like bundles. ``meta``
    (default: the frame's ``attrs["latlab"]``, or a loaded table's ``meta``) is written to the
    sidecar ``FILE.meta.json``; without any, a sidecar left by an earlier table is removed, so
    that it never describes a table it does not belong to.
    """
    df = frame.data if isinstance(frame, LatencyTable) else frame
    if meta is None:
        meta = frame.meta if isinstance(frame, LatencyTable) else df.attrs.get("latlab")
    p = Path(path)
    fmt = _format(p)
    if NETWORK not in df.columns:
        raise DataError(f"cannot save {p}: the table has no {NETWORK!r} column")
    prepare_output(p, "table")

    def write(tmp: str) -> None:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)

    atomic_write_with(p, write)
    side = meta_path(p)
    if meta:
        atomic_write_text(side, json.dumps(meta, indent=1, sort_keys=True, default=str))
    else:
        side.unlink(missing_ok=True)
    return p
