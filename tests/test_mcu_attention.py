"""The MCU backend on spike-driven linear attention: transpose and batch_matmul kernels (int8 and
int16, adj_y both ways) and reshapes of any rank (aliases: no code, no copy), in the generated C
project, equal the golden interpreter bit for bit on the host and on QEMU's Cortex-M4.

Graphs: tests/attention_graphs.py (q, k, v spike counts, ``(q @ k^T) @ v`` in int16) and
:func:`product_graph` below (int8 products of signed activations through rank-4 reshapes and
transposes). Each graph's project is exported and built once per module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from attention_graphs import attention_graph, attention_inputs
from edgesnn import boards
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import quantize_multipliers
from edgesnn.ir.interpreter import KERNELS
from edgesnn.profile.memory import peak_activation_bytes, tensor_bytes

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.build import run  # noqa: E402
from edgesnn.backends.mcu.kernels import kernel  # noqa: E402
from edgesnn.backends.mcu.project import make_plan  # noqa: E402
from test_mcu_kernels import SAMPLES, Builder, check_ops, run_c  # noqa: E402

HOST_SAMPLES = 64
BOARD = "nucleo-f446re"  # Cortex-M4, QEMU mps2-an386
GRAPHS = ["int8-adj", "int8-kT", "int16-adj", "int16-kT", "products8"]


def product_graph() -> g.Graph:
    """int8 batch_matmuls of signed activations (zero point 0), adj_y both ways, rank 3, with a
    rank-3 and a rank-4 transpose and reshapes between ranks 3, 4 and 2 on the way to the output."""
    t = {"x": g.TensorSpec([2, 6, 8], "int8", 0.05, 0), "xT": g.TensorSpec([2, 8, 6], "int8", 0.05, 0)}
    ops: list[g.Op] = [g.Transpose("x_T", ["x"], "xT", perm=[0, 2, 1])]

    def product(name, a, b, adj_y, shape, real, zero_point=0):
        t[name] = g.TensorSpec(shape, "int8", 0.1, zero_point)
        m, s = quantize_multipliers([real])
        ops.append(g.BatchMatMul(name, [a, b], name, adj_y=adj_y, multiplier=m, shift=s, clamp=[-128, 127]))

    product("p", "x", "xT", False, [2, 6, 6], 1 / 500)  # x x^T via an explicit transpose
    product("pa", "x", "x", True, [2, 6, 6], 1 / 600)  # the same product read transposed
    product("q", "pa", "p", True, [2, 6, 6], 1 / 180)
    product("y", "q", "x", False, [2, 6, 8], 1 / 280, zero_point=-3)
    t["y4"] = g.TensorSpec([2, 3, 2, 8], "int8", 0.1, -3)
    ops.append(g.Reshape("split", ["y"], "y4"))
    t["y4T"] = g.TensorSpec([8, 3, 2, 2], "int8", 0.1, -3)
    ops.append(g.Transpose("y_T", ["y4"], "y4T", perm=[3, 1, 0, 2]))
    t["output"] = g.TensorSpec([24, 4], "int8", 0.1, -3)
    ops.append(g.Reshape("flat", ["y4T"], "output"))
    return g.Graph(t, ops, "x", ["output"], meta={"created_by": "tests/test_mcu_attention.py"})


def _graph(name: str) -> g.Graph:
    if name == "products8":
        return product_graph()
    dtype, adj = name.split("-")
    return attention_graph(dtype, 0, adj == "adj")


def _inputs(graph: g.Graph, n: int) -> np.ndarray:
    if graph.input == "x":  # product_graph: signed int8 over the whole range
        return np.random.default_rng(2).integers(-128, 128, (n, *graph.tensors["x"].shape)).astype(np.int8)
    return attention_inputs(graph, n)


def _floats(graph: g.Graph, xq: np.ndarray) -> np.ndarray:
    """Real inputs that quantize back to exactly ``xq`` (what verify and export take)."""
    spec = graph.tensors[graph.input]
    x = (xq.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
    assert np.array_equal(graph.quantize_input(x), xq)
    return x


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """name -> (graph, input integers, project folder, project.json); each exported once. The
    attention graphs with adj_y True run their spike-reading convs event-driven, the others dense."""
    built = {}

    def get(name):
        if name not in built:
            graph = _graph(name)
            xq = _inputs(graph, HOST_SAMPLES)
            out = tmp_path_factory.mktemp(name) / "mcu"
            info = export_mcu(graph, boards.load(BOARD), out, "all" if name.endswith("adj") else "none",
                              _floats(graph, xq))
            built[name] = graph, xq, out, info
        return built[name]
    return get


@pytest.mark.parametrize("name", GRAPHS)
def test_host_build_is_bit_exact(projects, name):
    graph, xq, out, info = projects(name)
    spec = graph.tensors[graph.outputs[0]]
    got, stats = run(out, "host", xq, spec.dtype, int(np.prod(spec.shape)))
    values = graph.run_integer(xq, keep_all=True)
    want = values[graph.outputs[0]].reshape(len(xq), -1)
    np.testing.assert_array_equal(got, want)
    assert stats["samples"] == HOST_SAMPLES and want.std() > 0
    for op in graph.ops:  # the products are not degenerate: every one varies and most do not saturate
        if op.kind == "batch_matmul":
            v = values[op.output]
            assert v.std() > 0 and np.isin(v, op.clamp).mean() < 0.5, op.name
    kinds = [k["kind"] for k in info["kernels"]]
    assert "reshape" not in kinds and kinds.count("batch_matmul") == (4 if name == "products8" else 2)
    assert kinds.count("transpose") == sum(op.kind == "transpose" for op in graph.ops) >= 2
    in_type = {"int8": "int8_t", "int16": "int16_t"}[graph.tensors[graph.input].dtype]
    assert f"int edgesnn_infer(const {in_type} *input, edgesnn_output_t *output);" in (out / "model.h").read_text()
    # the user's path: verify quantizes real inputs, runs the host build and counts mismatches
    res = verify_mcu(out, _floats(graph, xq), trust_code=True)
    assert res["samples"] == HOST_SAMPLES and res["mismatches"] == 0 and res["runs"]["host"]["mismatched_elements"] == 0


@pytest.mark.parametrize("name", ["int16-kT", "products8"])
def test_cortex_m4_on_qemu_is_bit_exact(projects, name):
    """int16 products (int64 accumulator, 16x8 rounding) and int8 ones (int32, double rounding) on
    a 32-bit core, against the interpreter, a few samples."""
    graph, xq, out, _ = projects(name)
    res = verify_mcu(out, _floats(graph, xq[:8]), qemu=True, trust_code=True)
    arm = res["runs"]["arm"]
    assert arm["machine"] == "mps2-an386" and arm["samples"] == 8 and arm["mismatched_elements"] == 0
    assert res["mismatches"] == 0 and arm["instructions_per_inference"] > 1000
    assert arm["sizes"]["bss"] >= res["arena_bytes"]


def _lifetimes(graph: g.Graph) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """(buffer -> (first, last) step, reshape alias), derived here from the graph: step i is the
    i-th op that is not a reshape, the input is written at 0 and the output read after the last."""
    alias, life, i = {}, {graph.input: (0, 0)}, 0
    for op in graph.ops:
        if op.kind == "reshape":
            alias[op.output] = alias.get(op.inputs[0], op.inputs[0])
            continue
        i += 1
        for name in (*op.inputs, op.output):
            name = alias.get(name, name)
            first, last = life.get(name, (i, i))
            life[name] = (min(first, i), max(last, i))
    for name in graph.outputs:
        name = alias.get(name, name)
        life[name] = (life[name][0], i + 1)
    return life, alias


@pytest.mark.parametrize("name", ["int8-adj", "int16-kT", "products8"])
def test_arena_gives_transposes_and_products_their_own_bytes(name):
    """Reshapes of any rank share their input's bytes; a transpose's output and a product's two
    inputs and output are separate buffers; no two buffers alive at one step overlap; the arena
    holds at least the IR's peak of live activations (profile's memory report)."""
    graph = _graph(name)
    plan = make_plan(graph, set())
    life, alias = _lifetimes(graph)
    assert plan.alias == alias and all(r in alias for r in (op.output for op in graph.ops if op.kind == "reshape"))
    assert not set(alias) & set(plan.offsets)
    nbytes = {n: tensor_bytes(graph.tensors[n]) for n in life}
    assert set(plan.offsets) == set(life)
    span = {n: (plan.offsets[n], plan.offsets[n] + nbytes[n]) for n in life}
    for a in life:
        for b in life:
            if a < b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                assert span[a][1] <= span[b][0] or span[b][1] <= span[a][0], (a, b)
    for op in graph.ops:
        if op.kind in ("transpose", "batch_matmul"):
            o = span[op.output]
            for src in op.inputs:
                s = span[alias.get(src, src)]
                assert o[1] <= s[0] or s[1] <= o[0], (op.name, src)
    steps = range(max(last for _, last in life.values()) + 1)
    live = [sum(nbytes[n] for n, (first, last) in life.items() if first <= i <= last) for i in steps]
    assert max(live) == peak_activation_bytes(graph) and plan.arena_bytes >= max(live)
    # flash: every constant (conv weights at 8 bits, biases, a multiplier and shift per product and requantize)
    consts = sum(op.weight.size + 4 * op.bias.size if op.kind == "conv2d" else 0 for op in graph.ops)
    consts += sum(4 * (op.multiplier.size + op.shift.size) for op in graph.ops if isinstance(op, g.Requantized))
    assert plan.const_bytes == consts


def test_kernels_equal_the_interpreter_op_by_op(tmp_path):
    """Every op alone on random inputs (UBSan on): int8 and int16 products of rank 2 to 4, adj_y
    both ways, multipliers below and above 1, spike-count and full-range operands; transposes of
    rank 2 to 4 in int8 and int16."""
    b = Builder(11)

    def product(name, a, bb, adj_y, real, dtype, zero_point=0):
        sa, sb = b.tensors[a].shape, b.tensors[bb].shape
        shape = [*sa[:-1], sb[-2] if adj_y else sb[-1]]
        m, s = quantize_multipliers([real])
        lo, hi = g.dtype_range(dtype)
        out = b.tensor(name + ".out", shape, dtype, zero_point)
        b.add_op(g.BatchMatMul(name, [a, bb], out, adj_y=adj_y, multiplier=m, shift=s, clamp=[lo + 3, hi - 2]))

    a8, k8, kt8 = b.tensor("a8", [2, 3, 5, 7]), b.tensor("k8", [2, 3, 7, 4]), b.tensor("kt8", [2, 3, 4, 7])
    product("bmm8", a8, k8, False, 1 / 250, "int8", zero_point=-5)
    product("bmm8_adj", a8, kt8, True, 1 / 310, "int8", zero_point=6)
    s8, st8 = b.tensor("s8", [6, 5], spike_D=3), b.tensor("st8", [4, 5], spike_D=3)
    product("spikes8_adj", s8, st8, True, 9.3, "int8")  # multiplier > 1: a left shift before the rounding
    a16, k16, kt16 = (b.tensor(n, shape, "int16") for n, shape in (("a16", [3, 4, 9]), ("k16", [3, 9, 5]),
                                                                     ("kt16", [3, 5, 9])))
    product("bmm16", a16, k16, False, 1 / 600, "int16")
    product("bmm16_adj", a16, kt16, True, 1 / 700, "int16")
    s16, v16 = b.tensor("s16", [2, 6, 6], "int16", spike_D=4), b.tensor("v16", [2, 6, 3], "int16", spike_D=4)
    product("spikes16", s16, v16, False, 2.7, "int16")
    for name, src, perm in [("t4", a8, [2, 0, 3, 1]), ("t2", s8, [1, 0]), ("t3_16", a16, [2, 1, 0]),
                            ("t4_16", b.tensor("w16", [2, 3, 4, 5], "int16"), [3, 2, 1, 0])]:
        shape = [b.tensors[src].shape[p] for p in perm]
        b.add_op(g.Transpose(name, [src], b.tensor(name + ".out", shape, b.tensors[src].dtype), perm=perm))
    graph = b.graph()
    flat = g.Reshape("flat4", [a8], b.tensor("a8.flat", [6, 35]))
    graph.ops.append(flat)
    assert kernel(graph, flat) is None  # a reshape of any rank is an alias of its input
    check_ops(graph, graph.ops[:-1], tmp_path)


def test_int16_products_accumulate_beyond_int32(tmp_path):
    """Large int16 operands: sums past 2**31 need the int64 accumulator (the 16x8 rule), adj_y both ways."""
    b = Builder(12)
    rng = np.random.default_rng(5)
    a, k, kt = (b.tensor(n, shape, "int16") for n, shape in (("a", [2, 3, 8]), ("k", [2, 8, 4]), ("kt", [2, 4, 8])))
    m, s = quantize_multipliers([3e-6])
    ops = []
    for name, rhs, adj_y in (("wide", k, False), ("wide_adj", kt, True)):
        out = b.tensor(name + ".out", [2, 3, 4], "int16")
        ops.append(b.add_op(g.BatchMatMul(name, [a, rhs], out, adj_y=adj_y, multiplier=m, shift=s,
                                          clamp=[-32768, 32767])))
    big = {n: (rng.integers(20000, 32768, (SAMPLES, *b.tensors[n].shape)) * rng.choice([-1, 1], (SAMPLES, 1, 1, 1)))
           .astype(np.int16) for n in (a, k, kt)}
    graph = b.graph()
    feeds, wants = [], []
    for op in ops:
        rhs = big[op.inputs[1]].astype(np.int64)
        acc = np.matmul(big[a].astype(np.int64), np.swapaxes(rhs, -1, -2) if op.adj_y else rhs)
        assert np.abs(acc).max() > 2**31  # beyond int32
        specs = [graph.tensors[n] for n in (*op.inputs, op.output)]
        want = KERNELS["batch_matmul"](op, big[a], big[op.inputs[1]], *specs)
        feeds.append({a: big[a], op.inputs[1]: big[op.inputs[1]], op.output: want})
        wants.append(want)
    for op, got, want in zip(ops, run_c([kernel(graph, op) for op in ops], feeds, tmp_path), wants):
        np.testing.assert_array_equal(got, want.reshape(SAMPLES, -1), err_msg=op.name)
        assert want.std() > 0 and np.isin(want, [-32768, 32767]).mean() < 0.5


def test_an_op_without_a_kernel_is_one_line_error():
    class Gather(g.Op):
        kind = "gather"

    b = Builder(13)
    x = b.tensor("x", [4])
    op = Gather("pick", [x], b.tensor("y", [4]))
    graph = g.Graph(b.tensors, [op], x, ["y"])
    with pytest.raises(EdgesnnError, match="^mcu: op pick: no C kernel for gather ops$"):
        kernel(graph, op)


def test_project_json_lists_the_new_kernels(projects):
    _, _, out, info = projects("int16-kT")
    on_disk = json.loads((out / "project.json").read_text())
    assert on_disk == info
    assert [k["op"] for k in info["kernels"] if k["kind"] == "transpose"] == ["q_heads", "k_heads", "v_heads", "k_T",
                                                                               "merge_heads"]
    assert [k["op"] for k in info["kernels"] if k["kind"] == "batch_matmul"] == ["q_kT", "qk_v"]


@pytest.mark.parametrize("board", ["stm32h743", "nrf5340"])
def test_cortex_m7_and_m33_on_qemu_are_bit_exact(board, tmp_path):
    """The int16 attention graph (products, transposes, int16 input) on the other two cores QEMU
    emulates: Cortex-M7 (mps2-an500) and Cortex-M33 (mps2-an505), a few samples each."""
    graph = attention_graph("int16", 0, False)
    xq = _inputs(graph, 4)
    export_mcu(graph, boards.load(board), tmp_path / "mcu", "none", _floats(graph, _inputs(graph, 16)))
    res = verify_mcu(tmp_path / "mcu", _floats(graph, xq), qemu=True, trust_code=True)
    arm = res["runs"]["arm"]
    assert arm["machine"] == boards.load(board).qemu_machine and arm["samples"] == 4
    assert arm["mismatched_elements"] == 0 and res["mismatches"] == 0


def test_a_board_the_backend_cannot_build_for_is_refused_before_anything_is_written(tmp_path):
    graph = attention_graph("int8", 0, True)
    with pytest.raises(EdgesnnError) as e:
        export_mcu(graph, boards.load("host"), tmp_path / "mcu", "none", _floats(graph, _inputs(graph, 4)))
    assert "board host (host) cannot run --target mcu" in str(e.value) and not (tmp_path / "mcu").exists()
