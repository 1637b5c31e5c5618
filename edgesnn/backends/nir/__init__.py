"""NIR (Neuromorphic Intermediate Representation) interchange: export the IR to NIR, import NIR graphs.

- :func:`export_nir` (lower.py) writes the IR as a NIR graph other tools simulate — Affine, Conv2d,
  SumPool2d, Flatten synapses and an IF neuron per SFA neuron — with the exact integer program
  in the graph metadata under ``edgesnn`` (program.py), which is what edgesnn reads back.
- :func:`import_nir` (importer.py) builds a checkpoint from a NIR graph: exactly, from the
  metadata, when edgesnn wrote it; otherwise a float model whose SFA neurons stand for the
  graph's IF / LIF / CubaLIF neurons over a window of timesteps.
- a temporal graph (state over time, edgesnn/ir/state.py) is lowered by lower_state.py to LIF, CubaLIF,
  LI (IF, I) nodes and recurrent Affine cycles; verify runs its program over sequences and its nodes'
  float semantics (simulate_state.py). ``import_nir`` reads such a file back into a temporal IR graph
  (import_state.py): exactly from the metadata, or mapped and checked against the float semantics.
- NIR has no node for a transpose or a product of two activation tensors (batch_matmul), nor for a
  reshape other than flattening an image: export refuses such a graph naming the first such op.
- :func:`exact_graph` gives the export pipeline the imported program (None when there is none).
- target.py is the nir target (edgesnn.targets).
- verify.py checks an exported file: its program read back vs the IR, and its nodes alone
  (simulate.py) as other tools read them.

The time convention and what other tools lose are in docs/nir.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgesnn.files import atomic_path
from edgesnn.ir import graph as g

NIR_FILE = "model.nir"

__all__ = ["NIR_FILE", "exact_graph", "export_nir", "import_nir", "to_nir"]


def __getattr__(name: str):
    """import_nir and exact_graph import torch: only when asked for (the CLI reads target.py at start-up)."""
    if name == "import_nir":
        from edgesnn.backends.nir.importer import import_nir

        return import_nir
    if name == "exact_graph":
        from edgesnn.backends.nir.program import exact_graph

        return exact_graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_nir(graph: g.Graph):
    """The NIR graph of an IR graph, its program under ``metadata["edgesnn"]`` (a JSON string)."""
    if graph.stateful:  # neurons with state over time: LIF, CubaLIF, LI nodes and recurrent Affines
        from edgesnn.backends.nir.lower_state import lower
    else:
        from edgesnn.backends.nir.lower import lower

    nir_graph, program = lower(graph)
    nir_graph.metadata = {"edgesnn": json.dumps(program)}
    return nir_graph


def export_nir(graph: g.Graph, path: str | Path) -> Path:
    """Write ``graph`` as a NIR file (nir.write, HDF5); anything NIR cannot express fails before the file."""
    import nir

    nir_graph = to_nir(graph)
    with atomic_path(path) as tmp:
        nir.write(tmp, nir_graph)
    return Path(path)
