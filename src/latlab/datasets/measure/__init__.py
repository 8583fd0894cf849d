"""Real latency measurement on this machine: backends, protocol, machine fingerprint.

The built-in backends (``onnxruntime``, ``torch``, their ``-cuda`` variants, ``bitpacked``)
are lazy entries of :data:`BACKENDS`: a backend's module is imported when it is first asked
for, its libraries only when it is instantiated.
"""

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
    split_precision,
    with_precision,
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
    "split_precision",
    "with_precision",
]
