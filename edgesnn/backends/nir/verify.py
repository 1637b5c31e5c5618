"""verify for a NIR file edgesnn wrote: its exact program, read back as ``edgesnn import`` reads it,
against the IR it was lowered from (every output integer over the whole test split), and what
its nodes alone compute (simulate.py), reported as argmax agreement. A temporal graph's program is
rebuilt from its nodes' weights and run over the test sequences, and its nodes' float semantics are
simulated over them (simulate_state.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn import data as datasets
from edgesnn import limits
from edgesnn.backends.nir import program as prog
from edgesnn.backends.nir.importer import read_graph, read_model, read_program
from edgesnn.backends.nir.simulate import simulate
from edgesnn.backends.nir.simulate_state import simulate_sequence
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state


def verify_nir(path: Path, ir: g.Graph, data_spec: str, samples: int | None = None) -> dict:
    nir_graph = read_graph(path)
    program = read_program(nir_graph, path)
    if program is None:
        raise EdgesnnError(f"{path}: no edgesnn program in its metadata, so no IR to compare with; "
                           f"`edgesnn import` it, then export and verify the checkpoint")
    if ir.stateful or program["ir"].get("sequence") is not None:
        return verify_sequences(path, ir, nir_graph, program, data_spec, samples)
    r = read_model(path, data_spec, graph=nir_graph)
    exact = prog.exact_graph(r["model"], r["config"], {})
    ds = r["dataset"]
    x, y = datasets.to_nhwc(ds.x_test), ds.y_test.numpy()
    want, got = ir.run(x), exact.run(x)
    if got.shape != want.shape:
        raise EdgesnnError(f"{path}: its program outputs shape {got.shape[1:]}, the IR {want.shape[1:]}: "
                           f"not the IR it was exported from")
    want, got = want.reshape(len(y), -1), got.reshape(len(y), -1)
    ir_pred = want.argmax(1)
    nodes_pred = simulate(nir_graph, ds.x_test.numpy(), r["timesteps"]).reshape(len(y), -1).argmax(1)
    return {
        "artifact": str(path), "data": data_spec, "samples": int(len(y)),
        "runtime": "edgesnn NIR reader (the metadata's integer program) + golden interpreter",
        "mismatches": int((got != want).any(1).sum()), "accuracy": float((got.argmax(1) == y).mean()),
        "timesteps": r["timesteps"],
        "nodes_only": {"runtime": "time-stepped simulation of the NIR nodes alone (what other tools read)",
                       "argmax_agreement": float((nodes_pred == ir_pred).mean()),
                       "accuracy": float((nodes_pred == y).mean())},
    }


def verify_sequences(path: Path, ir: g.Graph, nir_graph, program: dict, data_spec: str, samples: int | None) -> dict:
    """A temporal graph: the program (weights from the nodes) vs the IR, every readout integer over the
    test sequences, and the readout argmax of the nodes' float semantics vs the IR's."""
    if not ir.stateful:
        raise EdgesnnError(f"{path}: its program runs over sequences, the IR beside it takes single samples: not "
                           f"the IR it was exported from")
    exact = prog.from_nodes(nir_graph, program, str(path))
    if not exact.stateful:
        raise EdgesnnError(f"{path}: its program takes single samples, the IR runs over sequences: not the IR it "
                           f"was exported from")
    ds = datasets.load(data_spec, temporal=True)
    if ds.steps is None:
        raise EdgesnnError(f"{path}: a graph over sequences, but data set {data_spec!r} has static samples "
                           f"{tuple(ds.in_shape)}; use a set with a time axis (digits-events, an .npz (N, T, ...))")
    x, y = ds.x_test[:samples].numpy(), ds.y_test[:samples].numpy()
    if not len(x):
        raise EdgesnnError(f"{data_spec}: the test split is empty")
    xq = state.quantize_sequence(ir, datasets.to_nhwc(x))
    (out,) = ir.outputs
    want = state.run_sequence(ir, xq)[out]
    got = state.run_sequence(exact, xq).get(exact.outputs[0])
    if got.shape != want.shape:
        raise EdgesnnError(f"{path}: its program reads out shape {got.shape[1:]}, the IR {want.shape[1:]}: "
                           f"not the IR it was exported from")
    differ = got.astype(np.int64) != want.astype(np.int64)
    ir_pred = want.reshape(len(y), -1).argmax(1)
    try:
        nodes_pred = simulate_sequence(nir_graph, x).reshape(len(y), -1).argmax(1)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:  # node values the program does not hold
        raise EdgesnnError(f"{path}: its nodes cannot be simulated ({type(e).__name__}: {limits._short(e)})") from None
    return {
        "artifact": str(path), "data": data_spec, "samples": int(len(y)), "steps": ir.sequence.steps,
        "timesteps": ir.sequence.steps,
        "runtime": "edgesnn NIR reader (the metadata's integer program, weights from the nodes) over sequences",
        "mismatches": int(differ.reshape(len(y), -1).any(1).sum()), "mismatched_elements": int(differ.sum()),
        "accuracy": float((ir_pred == y).mean()),
        "nodes_only": {"runtime": "the NIR nodes' float semantics (forward Euler), readout argmax",
                       "argmax_agreement": float((nodes_pred == ir_pred).mean()),
                       "accuracy": float((nodes_pred == y).mean())},
    }
