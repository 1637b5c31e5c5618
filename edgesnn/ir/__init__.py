"""The integer deployment IR and its golden interpreter (the hub every backend reads)."""

from edgesnn.ir.graph import IR_VERSION, LAYOUT, Graph, TensorSpec
from edgesnn.ir.serialize import load, save

__all__ = ["IR_VERSION", "LAYOUT", "Graph", "TensorSpec", "load", "save"]
