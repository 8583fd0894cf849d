"""Networks to one IR to features. The ground floor: imports no other latlab part."""

from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import Layer, NetworkGraph, NetworkTotals, Shape, numel

__all__ = ["Layer", "NetBuilder", "NetworkGraph", "NetworkTotals", "Shape", "numel"]
