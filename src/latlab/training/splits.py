"""Seeded train / validation / calibration / test splits of one device's rows.

* ``random`` -- a seeded permutation. With ``train_size`` the published protocols' fixed sizes
  apply (BRP-NAS on NAS-Bench-201: 900 train / 100 validation / the rest test,
  :data:`PROTOCOLS`); without it, every row not held out for validation, calibration or an
  explicit ``test_size`` is used for fitting.
* ``family`` -- whole network families (``NetworkGraph.family``: the search space, or the zoo
  family) are held out for test, so the test measures generalisation to *unseen* families;
  validation and calibration come from the remaining families.
* by device -- :func:`device_split` separates source devices (pre-training of the transfer
  predictor) from the target device, whose rows are then split as above.

Validation drives early stopping and tuning, calibration fits conformal intervals, and test
only reports: no index is in two parts, and test rows never reach fitting or model selection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latlab.confidence import recommended_calibration_size
from latlab.errors import DataError

SPLIT_KINDS = ("random", "family")

#: Fixed split sizes of published protocols: name -> (train, validation); the rest is test.
PROTOCOLS: dict[str, tuple[int, int]] = {
    # BRP-NAS (Dudziak et al., NeurIPS 2020) on NAS-Bench-201: 900 train, 100 validation.
    "brp-nas": (900, 100),
}

#: Fraction of the rows held out for validation (and, with conformal on, calibration) when no
#: size is given.
DEFAULT_FRACTION = 0.1
#: Fraction of the rows in held-out families for ``family`` splits without ``test_size``.
DEFAULT_FAMILY_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Row indices of each part (sorted), how they were drawn, and the held-out families."""

    train: np.ndarray
    val: np.ndarray
    cal: np.ndarray
    test: np.ndarray
    kind: str = "random"
    seed: int = 0
    test_families: tuple[str, ...] = field(default=())

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "val": len(self.val),
            "cal": len(self.cal),
            "test": len(self.test),
        }

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (sizes, kind, seed, held-out families)."""
        out: dict[str, Any] = {"kind": self.kind, "seed": self.seed, **self.sizes()}
        if self.test_families:
            out["test_families"] = list(self.test_families)
        return out

    def references(self, networks: Sequence[str]) -> dict[str, list[str]]:
        """The references of every part (saved with a bundle: which networks it has seen)."""
        return {
            part: [networks[i] for i in getattr(self, part)]
            for part in ("train", "val", "cal", "test")
        }


def default_val_size(n: int, train_size: int | None) -> int:
    """Validation rows when none are asked for: 1 per 9 training rows (900/100), else 10 %."""
    if train_size is not None:
        return max(1, round(train_size / 9))
    return max(1, round(DEFAULT_FRACTION * n)) if n >= 10 else 0


#: Below this many rows a table is few-shot: the default split (no conformal calibration
#: asked for explicitly, no tuning) keeps every row for training, without a validation split.
FEW_SHOT_ROWS = 20


def min_rows_for_calibration(confidence: float = 0.9) -> int:
    """Fewest rows from which the default split carves a calibration set (90 at 90 %).

    Below it a split-conformal calibration set of
    :func:`~latlab.confidence.recommended_calibration_size` rows would take
    a fifth or more of the data from training (a k = 10 few-shot table could not train at
    all), so the default is no calibration split: point predictions, with a warning that says
    how to get intervals (more rows, or an explicit ``cal_size``).
    """
    return 5 * recommended_calibration_size(confidence)


def default_cal_size(n: int, confidence: float = 0.9) -> int:
    """Calibration rows when conformal intervals are on: 10 % of the rows, at least the minimum."""
    return max(recommended_calibration_size(confidence), round(DEFAULT_FRACTION * n))


def _check_size(name: str, value: int | None) -> None:
    if value is not None and int(value) < 0:
        raise DataError(f"{name} must be >= 0, got {value}")


def make_split(
    n: int,
    *,
    kind: str = "random",
    train_size: int | None = None,
    val_size: int | None = None,
    cal_size: int = 0,
    test_size: int | float | None = None,
    seed: int = 0,
    families: Sequence[str] | None = None,
    test_families: Sequence[str] | None = None,
    pinned: Sequence[int] = (),
    pinned_note: str = "",
    what: str = "the data",
) -> Split:
    """Split ``n`` rows (see the module docstring).

    ``test_size`` is a row count, or a fraction in (0, 1) of the rows; ``families`` (one per
    row) and optionally ``test_families`` are needed for ``kind="family"``. ``pinned`` rows
    always go to training (constants a predictor needs, such as a layer-wise model's session
    probe); validation, calibration and test rows are drawn from the other rows
    (``pinned_note`` says in an error what the pinned rows are and what to add). Raises
    :class:`DataError` (naming ``what``) when the rows cannot hold the requested parts.
    """
    if kind not in SPLIT_KINDS:
        raise DataError(f"unknown split {kind!r} (known: {', '.join(SPLIT_KINDS)})")
    for name, value in (("train size", train_size), ("validation size", val_size)):
        _check_size(name, value)
    _check_size("calibration size", cal_size)
    if train_size is not None and int(train_size) < 1:
        raise DataError(f"train size must be >= 1, got {train_size}")
    rng = np.random.default_rng(int(seed))
    held: tuple[str, ...] = ()
    if kind == "family":
        if families is None or len(families) != n:
            raise DataError("a family split needs the family of every row")
        test_idx, held = _family_test(families, test_size, test_families, rng, what)
        pool = np.setdiff1d(np.arange(n), test_idx)
        pool = pool[rng.permutation(len(pool))]
        n_test_fixed = 0
    else:
        pool = rng.permutation(n)
        test_idx = np.zeros(0, dtype=int)
        n_test_fixed = _test_count(test_size, n)
    if len(pinned):  # pinned rows are training rows: the other parts are drawn from the rest
        pool = pool[~np.isin(pool, np.asarray(pinned, dtype=int))]
    n_pool = len(pool)
    val = default_val_size(n_pool, train_size) if val_size is None else int(val_size)
    cal = int(cal_size)
    # Random splits hold out test rows from the same pool: the rest after fixed train/val/cal
    # sizes (published protocols), or an explicit test size. Family splits have their test.
    n_test = 0
    if kind == "random":
        if train_size is not None and test_size is None:
            n_test = max(0, n_pool - int(train_size) - val - cal)
        else:
            n_test = n_test_fixed
    train = int(train_size) if train_size is not None else n_pool - val - cal - n_test
    need = max(train, 1) + val + cal + n_test
    if train < 1 or need > n_pool:
        parts = f"train {max(train, 1)} + validation {val} + calibration {cal}"
        if n_test and (train_size is None or test_size is not None):
            parts += f" + test {n_test}"
        if kind == "family":
            raise DataError(
                f"{what} has {n_pool} valid rows outside the held-out families "
                f"({', '.join(held)}) but the split needs {need} ({parts})"
            )
        if len(pinned):  # say why the rows that are there do not count
            raise DataError(
                f"{what} has {n} valid rows, {n - n_pool} of them training-only for this "
                f"predictor{f' ({pinned_note})' if pinned_note else ''}, and {n_pool} others, "
                f"but the split needs {need} of those ({parts})"
            )
        raise DataError(f"{what} has {n} valid rows but the split needs {need} ({parts})")
    val_idx = pool[:val]
    cal_idx = pool[val : val + cal]
    rest = pool[val + cal :]
    if train_size is not None:
        train_idx, random_test = rest[:train], rest[train : train + n_test]
    else:
        random_test, train_idx = rest[:n_test], rest[n_test:]
    if kind == "random":
        test_idx = random_test
    if len(pinned):
        pin = np.asarray(pinned, dtype=int)
        val_idx, cal_idx, test_idx = (np.setdiff1d(p, pin) for p in (val_idx, cal_idx, test_idx))
        train_idx = np.union1d(train_idx, pin)
    return Split(
        train=np.sort(train_idx),
        val=np.sort(val_idx),
        cal=np.sort(cal_idx),
        test=np.sort(test_idx),
        kind=kind,
        seed=int(seed),
        test_families=held,
    )


def _test_count(test_size: int | float | None, n: int) -> int:
    if test_size is None:
        return 0
    t = float(test_size)
    if t < 0:
        raise DataError(f"test size must be >= 0, got {test_size}")
    if 0 < t < 1:
        return max(1, round(t * n))
    if t != int(t):
        raise DataError(f"test size must be a row count or a fraction in (0, 1), got {test_size}")
    return int(t)


def _family_test(
    families: Sequence[str],
    test_size: int | float | None,
    test_families: Sequence[str] | None,
    rng: np.random.Generator,
    what: str,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Rows of the held-out families: the named ones, or seeded whole families up to the size."""
    fam = np.asarray([str(f) for f in families])
    counts = Counter(fam.tolist())
    if len(counts) < 2:
        only = next(iter(counts), "none")
        raise DataError(
            f"a family split needs at least two network families; {what} has one ({only})"
        )
    if test_families:
        unknown = [f for f in test_families if f not in counts]
        if unknown:
            known = ", ".join(sorted(counts))
            raise DataError(f"no network of family {unknown[0]!r} in {what} (families: {known})")
        held = tuple(dict.fromkeys(test_families))
        if len(held) == len(counts):
            raise DataError("the held-out families cannot be all of them: nothing to train on")
    else:
        n = len(fam)
        target = _test_count(test_size, n) or round(DEFAULT_FAMILY_TEST_FRACTION * n)
        order = sorted(counts)
        order = [order[i] for i in rng.permutation(len(order))]
        chosen: list[str] = []
        total = 0
        for f in order[:-1]:  # at least one family stays for training
            if total >= max(target, 1):
                break
            chosen.append(f)
            total += counts[f]
        held = tuple(chosen)
    return np.flatnonzero(np.isin(fam, held)), held


def families_of(networks: Sequence[Any]) -> list[str]:
    """The family of every network (``NetworkGraph.family``; references are resolved)."""
    from latlab.datasets.references import resolve

    return [resolve(n).family for n in networks]


def device_split(devices: Sequence[str], target: str) -> list[str]:
    """Source devices for transfer: every device column except ``target``.

    Raises :class:`DataError` when no other device is left to learn from.
    """
    sources = [d for d in devices if d != target]
    if not sources:
        raise DataError(
            f"no source device besides {target!r}: transfer needs measurements of other devices"
        )
    return sources
