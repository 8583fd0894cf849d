"""Timing several prepared networks in interleaved rounds: the one implementation.

A round runs every member once as a *block* of consecutive runs (member 0's block, then member
1's, ...), each run timed alone. Members timed in the same round meet the same machine: a
change of load, clock frequency or a neighbour's memory traffic between two rounds reaches all
of them, so per-round *ratios* (drift correction, :mod:`.protocol`) and *differences* (smart
padding, :mod:`latlab.datasets.bench.campaign`) cancel it where separately taken medians would
not.

Blocks of several runs keep each member's caches warm after the first run of its block: the
block's median is the member's time in that round (with one run per block, the run itself).
:func:`runs_per_block` sizes blocks from a first estimate of each member's time.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Members faster than this get several runs per block (their first, cold run is outvoted).
BLOCK_MS = 2.0
#: Members at least this slow run once per block.
SINGLE_RUN_MS = 20.0


def runs_per_block(estimate_ms: float, target_ms: float = BLOCK_MS, cap: int = 50) -> int:
    """Runs per block for a member of ``estimate_ms``: 1 for slow members, else >= 3.

    At least three runs (so the block median drops a cold first run) and about ``target_ms``
    of work, at most ``cap`` runs.
    """
    if estimate_ms >= SINGLE_RUN_MS:
        return 1
    want = math.ceil(target_ms / max(estimate_ms, 1e-6))
    return int(min(max(want, 3), cap))


@dataclass
class Rounds:
    """The samples of interleaved rounds: ``samples_ns[m]`` all runs of member ``m`` in order,
    ``blocks_ms[m]`` one time per round (the block median, ms)."""

    samples_ns: list[list[int]]
    blocks_ms: list[np.ndarray]
    runs_per_block: list[int]

    @property
    def rounds(self) -> int:
        return len(self.blocks_ms[0]) if self.blocks_ms else 0


def warm_up_rounds(
    runs: Sequence[Callable[[], None]], min_rounds: int, max_rounds: int, min_s: float
) -> int:
    """Run every member in turn, at least ``min_rounds`` times and ``min_s`` seconds (at most
    ``max_rounds``): allocations and caches settle before anything is timed."""
    start = time.perf_counter()
    done = 0
    while done < min_rounds or (done < max_rounds and time.perf_counter() - start < min_s):
        for run in runs:
            run()
        done += 1
    return done


def time_rounds(
    runs: Sequence[Callable[[], None]],
    clock: Callable[[], int],
    *,
    blocks: Sequence[int] | None = None,
    max_rounds: int,
    min_rounds: int,
    budget_s: float,
    budget_member: int | None = None,
) -> Rounds:
    """Time ``runs`` in interleaved rounds of ``blocks[m]`` runs each (default 1).

    Stops after ``max_rounds`` rounds, or once ``budget_s`` seconds are spent and at least
    ``min_rounds`` rounds are done. The budget counts the wall time of all rounds, or with
    ``budget_member`` only that member's own timed runs (a network's budget does not shrink
    because a reference runs beside it). The garbage collector is paused: a collection inside
    a sample would add milliseconds to one run.
    """
    sizes = list(blocks) if blocks is not None else [1] * len(runs)
    samples: list[list[int]] = [[] for _ in runs]
    medians: list[list[float]] = [[] for _ in runs]
    budget_ns = int(budget_s * 1e9)
    spent_member = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        rounds = 0
        while rounds < max_rounds:
            for m, run in enumerate(runs):
                block = []
                for _ in range(sizes[m]):
                    t0 = clock()
                    run()
                    block.append(clock() - t0)
                samples[m].extend(block)
                medians[m].append(float(np.median(block)) / 1e6)
                if m == budget_member:
                    spent_member += sum(block)
            rounds += 1
            spent = spent_member if budget_member is not None else time.perf_counter_ns() - start
            if rounds >= min_rounds and spent >= budget_ns:
                break
    finally:
        if gc_was:
            gc.enable()
    return Rounds(samples, [np.asarray(x) for x in medians], sizes)
