"""What other tools compute from a NIR file's nodes alone: a time-stepped simulation of the chain
``export --target nir`` writes (Conv2d, Affine, SumPool2d, Flatten, IF between Input and Output).

It is the reading a discrete-time simulator makes of these nodes, without edgesnn's program: the
input presented at every step, synapses applied per step, each IF integrating r·I per step and
firing once its membrane reaches the threshold, which is then subtracted, and the output summed
over the window. ``verify`` reports how often it ranks the classes as the IR does: the price of
reading the file as plain NIR (spike timing inside the window, no integer rounding or clamps).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgesnn.errors import EdgesnnError

KINDS = ("Conv2d", "Affine", "SumPool2d", "Flatten", "IF")


def simulate(graph, x: np.ndarray, steps: int) -> np.ndarray:
    """Output of ``graph`` for the batch ``x`` (N, C, H, W real values), summed over ``steps`` steps."""
    chain = _chain(graph)
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    membranes, total = {}, 0
    with torch.no_grad():
        for _ in range(steps):
            v = t64(x)
            for i, n in enumerate(chain):
                kind = type(n).__name__
                if kind == "Conv2d":
                    v = F.conv2d(v, t64(n.weight), t64(n.bias), tuple(int(s) for s in n.stride),
                                 tuple(int(p) for p in n.padding), groups=int(n.groups))
                elif kind == "Affine":
                    v = v @ t64(n.weight).T + t64(n.bias)
                elif kind == "SumPool2d":
                    k = tuple(int(d) for d in n.kernel_size)
                    v = F.avg_pool2d(v, k, tuple(int(d) for d in n.stride)) * (k[0] * k[1])
                elif kind == "Flatten":
                    v = v.flatten(1)
                else:  # IF: integrate, fire at the threshold, reset by subtraction
                    mem = membranes.get(i, 0) + t64(n.r) * v
                    v = (mem >= t64(n.v_threshold)).double()
                    membranes[i] = mem - v * t64(n.v_threshold)
            total = total + v
    return total.numpy()


def _chain(graph) -> list:
    """The nodes between the Input and the Output, in order (the shape edgesnn's export writes)."""
    succ = dict(graph.edges)
    node = next((k for k, n in graph.nodes.items() if type(n).__name__ == "Input"), None)
    chain = []
    while node in succ and len(chain) <= len(graph.nodes):  # a loop of edges ends the walk too
        node = succ[node]
        chain.append(graph.nodes[node])
    if not chain or type(chain.pop()).__name__ != "Output":
        raise EdgesnnError("the NIR graph is not a chain from its Input to its Output")
    odd = [type(n).__name__ for n in chain if type(n).__name__ not in KINDS]
    if odd:
        raise EdgesnnError(f"the NIR graph has {odd[0]} nodes, which edgesnn's export does not write")
    return chain
