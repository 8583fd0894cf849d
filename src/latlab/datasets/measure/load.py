"""How busy the machine is while a measurement runs: cheap, recorded with every measurement.

Other processes share cores, caches and memory bandwidth; a measurement taken while they run is
slower and noisier. :class:`LoadMeter` brackets the timed rounds of one measurement and reports,
from two reads of ``/proc/stat`` (:func:`psutil.cpu_times`) and of this process's CPU time:

- ``other_cores``: CPU time used by *other* processes during the rounds, in cores (busy time of
  the whole machine minus this process's, divided by the wall time);
- ``steal_cores``: time the hypervisor gave to other virtual machines, in cores (0 on bare
  metal);
- ``own_cores``: this process's CPU use (about ``threads`` while it measures);
- ``loadavg``: :func:`os.getloadavg` at the end (1, 5, 15 minutes; lagging, kept for context);
- ``cores``: the cores this process may run on.

Two reads per measurement cost microseconds, so every measurement carries its load.
:func:`competing` says whether other processes needed more cores than the measurement left
free, the condition under which a campaign warns (and, with ``pause_on_load``, waits:
:func:`wait_for_quiet`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: Cores of competition beyond the free ones tolerated before a measurement counts as loaded.
COMPETITION_MARGIN = 0.25
#: The kernel accounts CPU time in ticks of 10 ms: over shorter stretches than this the
#: figures are too coarse to judge competition (they are still recorded).
MIN_SPAN_S = 0.25


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


def _busy(times: Any) -> float:
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    total = sum(times)
    # guest time is already counted in user/nice on Linux
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return total - idle


class LoadMeter:
    """Brackets a stretch of time; :meth:`stop` returns the machine's load during it."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._t0 = time.perf_counter()
        self._cpu0 = psutil.cpu_times()
        own = self._proc.cpu_times()
        self._own0 = own.user + own.system

    def stop(self) -> dict[str, Any]:
        """The load since construction (see the module docstring for the fields)."""
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cpu1 = psutil.cpu_times()
        own = self._proc.cpu_times()
        own_s = own.user + own.system - self._own0
        busy = _busy(cpu1) - _busy(self._cpu0)
        steal = getattr(cpu1, "steal", 0.0) - getattr(self._cpu0, "steal", 0.0)
        try:
            loadavg = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # pragma: no cover - platforms without getloadavg
            loadavg = []
        # /proc/stat ticks are 10 ms: over short stretches the difference is coarse, never < 0
        return {
            "seconds": round(wall, 4),
            "other_cores": round(max(busy - own_s, 0.0) / wall, 3),
            "steal_cores": round(max(steal, 0.0) / wall, 3),
            "own_cores": round(max(own_s, 0.0) / wall, 3),
            "loadavg": loadavg,
            "cores": usable_cores(),
        }


def competition(load: dict[str, Any], threads: int) -> float:
    """Cores other processes (and the hypervisor) wanted beyond those the measurement left free."""
    free = max(int(load.get("cores", usable_cores())) - threads, 0)
    return float(load.get("other_cores", 0.0)) + float(load.get("steal_cores", 0.0)) - free


def competing(load: dict[str, Any], threads: int, margin: float = COMPETITION_MARGIN) -> bool:
    """Whether other processes competed for the measurement's own cores (see the module doc).

    False for stretches shorter than :data:`MIN_SPAN_S` (too coarse to tell).
    """
    if float(load.get("seconds", 0.0)) < MIN_SPAN_S:
        return False
    return competition(load, threads) > margin


def sample_load(seconds: float = 1.0) -> dict[str, Any]:
    """The machine's load over the next ``seconds`` (this process sleeping meanwhile)."""
    meter = LoadMeter()
    time.sleep(seconds)
    return meter.stop()


def wait_for_quiet(
    threads: int,
    *,
    max_wait_s: float | None = None,
    poll_s: float = 1.0,
    margin: float = COMPETITION_MARGIN,
) -> float:
    """Sleep until other processes leave ``threads`` cores free; returns the seconds waited.

    Gives up after ``max_wait_s`` (None: waits as long as it takes) with a warning, so that a
    campaign with ``pause_on_load`` never hangs forever on a permanently shared machine unless
    asked to.
    """
    start = time.monotonic()
    load = sample_load(poll_s)
    if not competing(load, threads, margin):
        return 0.0
    log.warning(
        "pausing: other processes use %.2f cores of %d (measuring needs %d free); waiting for "
        "the load to fall",
        load["other_cores"] + load["steal_cores"],
        load["cores"],
        threads,
    )
    while competing(load, threads, margin):
        waited = time.monotonic() - start
        if max_wait_s is not None and waited >= max_wait_s:
            log.warning("load did not fall within %.0f s: measuring anyway", max_wait_s)
            break
        load = sample_load(poll_s)
    return time.monotonic() - start
