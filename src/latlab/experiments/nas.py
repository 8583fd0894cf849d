"""Latency-constrained NAS with a bundle: regularized (aging) evolution under a latency budget.

The search maximises an objective that needs no training data -- the network's **MACs**
(multiply-accumulates), used as a *proxy of model capacity* (more computation usually buys
accuracy within one search space; it is not an accuracy estimate) -- among candidates whose
predicted latency is within ``budget_ms``. The latency test is the bundle's **upper bound at
confidence Q** (conformal intervals) or, with ``confidence=None``, its point prediction: a
point prediction lets a network whose true latency is over budget through about half of the
time near the budget, a one-sided conformal bound bounds that rate (see
``benchmarks/nas_violations.py`` for the measured rates).

Regularized evolution (Real et al., AAAI 2019): a population of ``population`` networks;
each step draws ``sample`` of them at random, mutates the best one (the space's
:meth:`~latlab.datasets.spaces.SearchSpace.mutate`: one choice changed, e.g. one nb201 cell
edge gets another op), adds the child and removes the oldest member. Fitness ranks feasible
networks by the objective (ties: the lower bound first) above all infeasible ones, which rank
by how little they exceed the budget (so a population that starts over budget is pulled under it).
Children are predicted in batches of ``batch`` through :meth:`Bundle.predict` /
:meth:`Bundle.predict_interval`, whose feature cache makes re-visited networks cost nothing.
Seeded: the same seed, bundle and settings return the same architectures.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latlab.errors import DataError

log = logging.getLogger(__name__)

#: Objectives (larger is better), from the IR's totals: no training data needed.
OBJECTIVES = ("macs", "params")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Candidate:
    """One evaluated network."""

    network: str
    objective: float
    latency_ms: float
    bound_ms: float
    feasible: bool


@dataclass
class NasResult:
    """The best feasible networks found (best first) and what the search did."""

    best: list[Candidate]
    budget_ms: float
    confidence: float | None
    objective: str
    evaluated: int
    distinct: int
    seed: int
    cache: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_ms": self.budget_ms,
            "confidence": self.confidence,
            "bound": "upper" if self.confidence is not None else "point",
            "objective": self.objective,
            "evaluated": self.evaluated,
            "distinct": self.distinct,
            "seed": self.seed,
            "cache": self.cache,
            "best": [c.__dict__ for c in self.best],
        }


def objective_values(refs: list[str], kind: str) -> np.ndarray:
    """The objective (``macs`` or ``params`` from the IR's totals) of each reference."""
    from latlab.datasets.references import resolve

    attr = "macs" if kind == "macs" else "params"
    return np.array([float(getattr(resolve(r).totals, attr)) for r in refs])


def check_search(space: str, budget_ms: float, objective: str, confidence: float | None) -> None:
    """Refuse bad settings before any work, naming the culprit."""
    from latlab.datasets.spaces import SPACES, searchable_spaces

    if space not in SPACES or not SPACES[space].searchable:
        known = ", ".join(searchable_spaces())
        raise DataError(f"unknown search space {space!r} for nas (known: {known})")
    if not (np.isfinite(budget_ms) and budget_ms > 0):
        raise DataError(f"the latency budget must be a positive number of ms, got {budget_ms!r}")
    if objective not in OBJECTIVES:
        raise DataError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    if confidence is not None and not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1) (e.g. 0.9), got {confidence!r}")


#: Most children one search evaluates: nb201 has 15,625 networks, and evolution converges
#: within a few thousand cycles; beyond this a typo (100000000) would run for hours.
MAX_CYCLES = 1_000_000


def check_settings(
    *, top: int = 10, cycles: int = 2000, population: int = 64, sample: int = 8, batch: int = 32
) -> None:
    """Refuse bad search sizes before any work, naming the CLI flag."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise DataError(f"--top must be at least 1 (networks to report), got {top!r}")
    if not 0 <= cycles <= MAX_CYCLES:
        raise DataError(
            f"--cycles must be between 0 and {MAX_CYCLES:,} (children evaluated), got {cycles!r}"
        )
    if population < 2 or sample < 1 or sample > population or batch < 1:
        raise DataError(
            f"need --population >= 2 and 1 <= --sample <= --population (batch >= 1); got "
            f"population={population}, sample={sample}, batch={batch}"
        )


def search(
    bundle: Any,
    budget_ms: float,
    *,
    confidence: float | None = 0.9,
    space: str = "nb201",
    objective: str = "macs",
    population: int = 64,
    sample: int = 8,
    cycles: int = 2000,
    batch: int = 32,
    top: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
) -> NasResult:
    """Regularized evolution under ``budget_ms`` (see the module docstring).

    ``bundle``: a loaded :class:`~latlab.training.bundle.Bundle` (``latlab.load_bundle``);
    ``confidence``: test the conformal upper bound at this confidence (needs a calibrated
    bundle), ``None`` for the point prediction; ``cycles``: children evaluated in all;
    ``top``: how many distinct feasible networks to return, best objective first.
    """
    check_search(space, budget_ms, objective, confidence)
    if confidence is not None and not bundle.calibrated:
        raise DataError(
            f"bundle {bundle.path} gives point predictions only: run nas without a confidence "
            "(point predictions) or train the bundle with --conformal split"
        )
    check_settings(top=top, cycles=cycles, population=population, sample=sample, batch=batch)
    rng = np.random.default_rng(seed)
    from latlab.datasets.spaces import get_space

    sp = get_space(space)
    seen: dict[str, Candidate] = {}
    evaluated = 0

    def evaluate(idxs: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], Candidate]]:
        nonlocal evaluated
        refs = [sp.format_genotype(i) for i in idxs]
        point = bundle.predict(refs)
        if confidence is None:
            bound = point
        else:
            _low, bound = bundle.predict_interval(refs, confidence, point_ms=point)
        obj = objective_values(refs, objective)
        out = []
        for i, r, o, p, b in zip(idxs, refs, obj, point, bound, strict=True):
            c = Candidate(r, float(o), float(p), float(b), bool(b <= budget_ms))
            seen.setdefault(r, c)
            out.append((i, c))
        evaluated += len(idxs)
        return out

    def fitness(c: Candidate) -> tuple[int, float, float]:
        # Ties of the objective (MACs take few distinct values) go to the faster network:
        # the one with more room under the budget for the next mutation.
        return (1, c.objective, -c.bound_ms) if c.feasible else (0, -c.bound_ms, 0.0)

    total = population + cycles
    pop: deque[tuple[tuple[int, ...], Candidate]] = deque()
    for start in range(0, population, batch):
        n = min(batch, population - start)
        pop.extend(evaluate([sp.random_genotype(rng) for _ in range(n)]))
        if progress is not None:
            progress(len(pop), total)
    done = 0
    while done < cycles:
        n = min(batch, cycles - done)
        children = []
        members = list(pop)
        for _ in range(n):
            picks = rng.choice(len(members), size=sample, replace=False)
            parent = max((members[int(k)] for k in picks), key=lambda m: fitness(m[1]))
            children.append(sp.mutate(parent[0], rng))
        for child in evaluate(children):
            pop.append(child)
            pop.popleft()
        done += n
        if progress is not None:
            progress(population + done, total)
    feasible = sorted(
        (c for c in seen.values() if c.feasible), key=lambda c: (-c.objective, c.network)
    )
    cache = bundle.cache.stats() if hasattr(bundle, "cache") else {}
    log.info(
        "nas: %d evaluations, %d distinct networks, %d feasible",
        evaluated,
        len(seen),
        len(feasible),
    )
    return NasResult(
        best=feasible[: int(top)],
        budget_ms=float(budget_ms),
        confidence=confidence,
        objective=objective,
        evaluated=evaluated,
        distinct=len(seen),
        seed=seed,
        cache=cache,
    )
