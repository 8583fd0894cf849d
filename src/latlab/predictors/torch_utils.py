"""What the torch predictors (FCNN, GCN) share: seeding, the epoch loop, safetensors files.

Imported only by those predictors' methods, so importing :mod:`latlab.predictors` does not
import torch.

* :func:`seeded` -- a context in which torch's global RNG is forked (the caller's stream is
  left untouched), seeded, and deterministic algorithms are requested; thread counts are left
  as the caller set them (``torch.set_num_threads``).
* :func:`train_epochs` -- epochs with early stopping on a validation loss, ReduceLROnPlateau,
  and the best epoch's weights restored at the end.
* :func:`save_state_dict` / :func:`load_state_dict` -- weights as safetensors (no pickle).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latlab.errors import BundleError, first_line
from latlab.fileio import atomic_write_bytes
from latlab.predictors.base import read_model_file
from latlab.predictors.epochs import report_epoch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fork and seed torch's RNG and request deterministic algorithms, restoring both after."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the caller's setting; ``None``: leave it.

    Small models (an MLP on a few dozen features) train fastest on one thread: with more, the
    per-op synchronisation dominates, and on a machine whose cores are busy a waiting thread
    can stall every step.
    """
    import torch

    if n is None:
        yield
        return
    if int(n) < 1:
        from latlab.errors import DataError

        raise DataError(f"n_jobs must be >= 1 or None, got {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class TrainLog:
    """What :func:`train_epochs` did."""

    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
            "val_loss": [round(v, 6) for v in self.val_loss],
            "train_loss": [round(v, 6) for v in self.train_loss],
        }


def train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step_loss: Callable[[Any], torch.Tensor],
    batches: Callable[[int], Iterable[Any]],
    val_loss: Callable[[], float],
    *,
    max_epochs: int,
    patience: int,
    lr_patience: int,
    lr_factor: float = 0.5,
    warmup_epochs: int = 0,
    threshold: float = 1e-3,
) -> TrainLog:
    """Train up to ``max_epochs``; keep the weights of the epoch with the lowest ``val_loss``.

    ``batches(epoch)`` yields the epoch's mini-batches, ``step_loss(batch)`` returns the loss
    to minimise on one of them. Early stopping: after ``warmup_epochs``, stop when the
    validation loss has not improved for ``patience`` epochs; ReduceLROnPlateau
    (``lr_factor``, ``lr_patience``, relative ``threshold``) runs after the warm-up too --
    BRP-NAS's schedule.
    """
    import torch

    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=lr_factor, patience=lr_patience, threshold=threshold
    )
    out = TrainLog()
    best_state: dict[str, torch.Tensor] | None = None
    bad = 0
    for epoch in range(int(max_epochs)):
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
        model.eval()
        with torch.no_grad():
            v = float(val_loss())
        out.epochs = epoch + 1
        out.train_loss.append(total / max(count, 1))
        out.val_loss.append(v)
        report_epoch(epoch, v)  # the tuner's pruning callback (may raise TrialPruned)
        if not math.isfinite(v):
            log.warning("validation loss is %s at epoch %d: stopping", v, epoch)
            out.stopped_early = True
            break
        if v < out.best_val_loss or best_state is None:  # an improvement: keep these weights
            out.best_val_loss, out.best_epoch = v, epoch
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            bad = 0
        elif epoch >= warmup_epochs:
            bad += 1
        if epoch >= warmup_epochs:
            scheduler.step(v)
            if bad >= patience:
                out.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return out


def save_state_dict(module: torch.nn.Module, path: Path) -> None:
    """Write a module's weights as safetensors (atomically)."""
    from safetensors.torch import save

    state = {k: t.detach().contiguous().cpu() for k, t in module.state_dict().items()}
    atomic_write_bytes(path, save(state))


def load_state_dict(module: torch.nn.Module, directory: Path, name: str) -> None:
    """Load safetensors weights written by :func:`save_state_dict` into ``module``."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_model_file(directory, name)
    try:
        state = load(data)
        module.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        first = first_line(exc)
        raise BundleError(f"corrupt or mismatched weights {name} in {directory}: {first}") from None
    module.eval()
