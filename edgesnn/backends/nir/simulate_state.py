"""What a NIR graph with state computes by its nodes' own float semantics over sequences: the reading a
discrete-time simulator makes of it, without edgesnn's program (no integers, no clamps, no saturation,
no rounding of the decay).

Each step the graph runs once, every node in the order of its edges; an edge that closes a cycle (a
recurrent Affine back into a neuron) carries its source's value from the step before, zero at the first.
A node sums what its edges bring. Neurons are NIR's equations under forward Euler with the step dt their
metadata records (:data:`lower_state.DT` when none): ``v += dt/tau·(v_leak - v + r·I)``; a CubaLIF or
CubaLI updates its current ``i += dt/tau_syn·(w_in·I - i)`` first and feeds the membrane with it (as
snnTorch's Synaptic); IF and I integrate ``r·I`` per step. A spike is ``v > v_threshold``; the membrane then
drops by the threshold where the node's metadata says ``reset: subtract`` and is set to v_reset
otherwise. The Output is read out over the T steps as its metadata says: ``count`` and ``mean`` (the
sum; the mean's division by T changes no argmax) or ``last``.
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.nir.lower_state import DT
from edgesnn.errors import EdgesnnError

KINDS = ("Input", "Output", "Flatten", "Affine", "Linear", "IF", "LIF", "CubaLIF", "LI", "CubaLI", "I")


def simulate_sequence(graph, x: np.ndarray) -> np.ndarray:
    """The Output's readout (N, ...) of ``graph`` for real sequences ``x`` (N, T, *Input shape)."""
    order, forward, back = _schedule(graph)
    output = next(k for k, n in graph.nodes.items() if type(n).__name__ == "Output")
    readout = _text((graph.nodes[output].metadata or {}).get("readout", "count"))
    x = np.asarray(x, np.float64)
    states: dict[str, dict] = {name: {} for name in order}
    previous: dict[str, np.ndarray] = {}
    total = last = 0.0
    for t in range(x.shape[1]):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            if type(node).__name__ == "Input":
                values[name] = x[:, t]
                continue
            drive = sum((values[s] for s in forward[name]), 0.0) + sum((previous.get(s, 0.0) for s in back[name]), 0.0)
            values[name] = _step(node, drive, states[name], len(x))
        previous = values
        last = values[output]
        total = total + last
    return last if readout == "last" else total


def _step(node, v_in, s: dict, n: int) -> np.ndarray:
    kind = type(node).__name__
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    meta = node.metadata or {}
    if kind == "Output":
        return v_in
    if kind == "Flatten":
        return np.asarray(v_in).reshape(n, -1)
    if kind in ("Affine", "Linear"):
        y = np.asarray(v_in) @ f(node.weight).T
        return y + f(node.bias) if kind == "Affine" else y
    dt = float(meta.get("dt", DT))
    v = s.get("v", 0.0)
    if kind in ("IF", "I"):
        v = v + f(node.r) * v_in
    else:
        if kind in ("CubaLIF", "CubaLI"):
            i = s.get("i", 0.0)
            i = i + dt / f(node.tau_syn) * (f(node.w_in) * v_in - i)
            s["i"], v_in = i, i
        tau = f(node.tau if kind in ("LIF", "LI") else node.tau_mem)
        v = v + dt / tau * (f(node.v_leak) - v + f(node.r) * v_in)
    v = np.broadcast_to(v, np.shape(v_in)).copy() if np.ndim(v) < np.ndim(v_in) else v
    if kind in ("LI", "CubaLI", "I"):
        s["v"] = v
        return v
    theta = f(node.v_threshold)
    spikes = (v > theta).astype(np.float64)
    s["v"] = v - spikes * theta if _text(meta.get("reset", "zero")) == "subtract" else np.where(spikes > 0, f(node.v_reset), v)
    return spikes


def _text(v) -> str:
    """A metadata string as nir.read gives it back (bytes from HDF5) or as written (str)."""
    return v.decode("utf8", "replace") if isinstance(v, bytes) else str(v)


def _schedule(graph):
    """(nodes in evaluation order, forward predecessors, cycle-closing predecessors) by a depth-first walk
    from the Input: an edge to a node still on the walk's path closes a cycle."""
    kinds = {k: type(n).__name__ for k, n in graph.nodes.items()}
    odd = next((k for k, kind in kinds.items() if kind not in KINDS), None)
    if odd is not None:
        raise EdgesnnError(f"the NIR graph has a {kinds[odd]} node ('{odd}'), which edgesnn's temporal export does "
                           f"not write")
    inputs = [k for k, kind in kinds.items() if kind == "Input"]
    if len(inputs) != 1 or sum(kind == "Output" for kind in kinds.values()) != 1:
        raise EdgesnnError("the NIR graph must have one Input and one Output")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
    on_path, done, post, back_edges = {inputs[0]}, set(), [], set()
    stack = [(inputs[0], iter(succ[inputs[0]]))]
    while stack:
        name, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            on_path.discard(name)
            done.add(name)
            post.append(name)
        elif nxt in on_path:
            back_edges.add((name, nxt))
        elif nxt not in done:
            on_path.add(nxt)
            stack.append((nxt, iter(succ[nxt])))
    if len(done) != len(graph.nodes):
        raise EdgesnnError(f"the NIR graph has nodes the Input does not reach: {sorted(set(graph.nodes) - done)}")
    forward: dict[str, list[str]] = {k: [] for k in graph.nodes}
    back: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        (back if (a, b) in back_edges else forward)[b].append(a)
    return post[::-1], forward, back
