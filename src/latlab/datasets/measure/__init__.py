"""Real latency measurement on this machine: backends, protocol, machine fingerprint.

Importing this package registers the built-in backends (``onnxruntime``, ``torch`` and their
``-cuda`` variants); their libraries are imported only when a backend is instantiated.
"""

from latlab.datasets.measure import (  # noqa: F401 (registers the backends)
    bitpacked,
    onnxruntime_backend,
    torch_backend,
)
from latlab.datasets.measure.backends import (
    BACKENDS,
    Backend,
    get_backend,
    register_backend,
)
from latlab.datasets.measure.fingerprint import (
    default_device_name,
    fingerprint_digest,
    machine_fingerprint,
)
from latlab.datasets.measure.protocol import (
    DEFAULT_ANCHOR,
    DEFAULT_REFERENCE,
    CampaignEvent,
    CampaignResult,
    MeasureConfig,
    Measurement,
    measure,
    measure_many,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ANCHOR",
    "DEFAULT_REFERENCE",
    "Backend",
    "CampaignEvent",
    "CampaignResult",
    "MeasureConfig",
    "Measurement",
    "default_device_name",
    "fingerprint_digest",
    "get_backend",
    "machine_fingerprint",
    "measure",
    "measure_many",
    "register_backend",
]
