"""Binary neural networks on CPUs and MCUs: the XNOROP/LXNOROP model (Shakkouf & Gromov).

* :mod:`~latlab.predictors.bnn.targets`: hardware targets, the shipped device catalog,
  target files, host detection.
* :mod:`~latlab.predictors.bnn.model`: XNOROP counts, ``Memory_M``, clocks per term (the
  derivation is in its docstring).
* :mod:`~latlab.predictors.bnn.tasks`: the forward task (rate of M on T) and the inverse
  task (targets that reach a rate R and hold M).
* :mod:`~latlab.predictors.bnn.calibrate`: fitting the host's constants from bit-packed
  micro-benchmarks.
"""

from latlab.predictors.bnn.model import (
    BnnCounts,
    CostBreakdown,
    MemoryBreakdown,
    cost_of,
    count_network,
    model_memory,
)
from latlab.predictors.bnn.targets import (
    Target,
    detect_host,
    get_target,
    load_catalog,
    load_target_file,
    target_from_dict,
    write_target,
)
from latlab.predictors.bnn.tasks import ForwardResult, InverseResult, forward, inverse

__all__ = [
    "BnnCounts",
    "CostBreakdown",
    "ForwardResult",
    "InverseResult",
    "MemoryBreakdown",
    "Target",
    "cost_of",
    "count_network",
    "detect_host",
    "forward",
    "get_target",
    "inverse",
    "load_catalog",
    "load_target_file",
    "model_memory",
    "target_from_dict",
    "write_target",
]
