"""Real latency measurement on this machine: backends, protocol, machine fingerprint."""

from latlab.datasets.measure import bitpacked  # noqa: F401  (registers "bitpacked")
from latlab.datasets.measure.backends import (
    BACKENDS,
    Backend,
    get_backend,
    register_backend,
)

__all__ = ["BACKENDS", "Backend", "get_backend", "register_backend"]
