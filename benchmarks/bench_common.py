"""What the serving and NAS benchmark scripts share: where things are, the machine's state, and
writing a result as ``benchmarks/results/STEM.json`` + ``STEM.md``.

Importing this module first makes ``latlab`` the checkout's own (``ROOT/src`` first on
``sys.path``, as ``PYTHONPATH=src`` does), whether or not some latlab is installed: a
benchmark run from a worktree measures that worktree's code, not an installed copy's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "nb201_latency.csv"
RESULTS = ROOT / "benchmarks" / "results"

if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def machine() -> dict[str, Any]:
    """Cores this process may use and the load average: how to read its timings."""
    return {"cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()}


def load_note(load: float) -> str:
    """Whether other jobs shared the cores while the timings were taken."""
    return "(a busy machine: noisy, pessimistic figures)" if load > 1.5 else "(an idle machine)"


def write_result(stem: str, doc: dict[str, Any], lines: list[str]) -> None:
    """``RESULTS/STEM.json`` (the figures) and ``RESULTS/STEM.md`` (``lines``, also printed)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def fail(message: str) -> None:
    """One line naming the culprit on stderr and exit status 2 (bad input, before any work)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def open_store(db: str, device: str | None) -> tuple[Any, str]:
    """The bench store ``db`` (never created: it must exist) and the device to read from it
    (``device``, or the store's only one); exits through :func:`fail` naming the culprit."""
    from latlab.datasets.store import Store

    if "://" not in db and not Path(db).is_file():
        fail(f"--db {db}: no such store file")
    store = Store(db)
    devices = [str(n) for n in store.devices()["name"]]
    if device is None:
        if len(devices) != 1:
            fail(f"--db {db} holds devices {devices}: name one with --device")
        device = devices[0]
    if device not in devices:
        fail(f"--device {device!r} is not in {db} (devices: {', '.join(devices) or 'none'})")
    return store, device


def network_metrics(t: Any, p: Any) -> dict[str, float | int | None]:
    """Network MAPE, ±10 % share and Spearman's rho of predictions ``p`` of times ``t``."""
    import numpy as np
    from scipy.stats import spearmanr

    t, p = np.asarray(t, dtype=float), np.asarray(p, dtype=float)
    if len(t) == 0:
        return {"networks": 0, "mape": None, "within_10": None, "spearman": None}
    err = np.abs(p - t) / t
    rho = float(spearmanr(t, p).statistic) if len(t) > 2 else None
    return {
        "networks": len(t),
        "mape": float(100 * err.mean()),
        "within_10": float(100 * (err <= 0.10).mean()),
        "spearman": rho,
    }
