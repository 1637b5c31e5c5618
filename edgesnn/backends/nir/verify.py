"""verify for a NIR file edgesnn wrote: its exact program, read back as ``edgesnn import`` reads it,
against the IR it was lowered from (every output integer over the whole test split), and what
its nodes alone compute (simulate.py), reported as argmax agreement."""

from __future__ import annotations

from pathlib import Path

from edgesnn import data as datasets
from edgesnn.backends.nir import program as prog
from edgesnn.backends.nir.importer import read_graph, read_model, read_program
from edgesnn.backends.nir.simulate import simulate
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g


def verify_nir(path: Path, ir: g.Graph, data_spec: str) -> dict:
    nir_graph = read_graph(path)
    if read_program(nir_graph, path) is None:
        raise EdgesnnError(f"{path}: no edgesnn program in its metadata, so no IR to compare with; "
                           f"`edgesnn import` it, then export and verify the checkpoint")
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
