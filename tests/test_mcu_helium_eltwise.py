"""The Helium forms of the elementwise kernels (kernels.requantize, add, mul: one call of a run
micro-kernel, microkernels.REQUANT_RUN / ADD_RUN / MUL_RUN, under ``edgesnn_helium() != 0``) on QEMU's
Cortex-M55 (mps3-an547, hard float): per tensor and per channel, left and right shifts, the
exporter's exact x 2^k (int8 lanes, int16 lanes), clamps that cut, nonzero zero points, int8 and
int16 in and out, lengths that leave a partial last vector (rows of 7 channels, 105 elements),
a broadcast row. Each project equals the golden interpreter. On a core without Helium (Cortex-M4,
mps2-an386) the same projects equal it too, and run exactly as many instructions as without the
Helium forms: GCC drops the branch, the TE kernels' C is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from edgesnn import boards
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import ADD_LEFT_SHIFT, add_multipliers

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, kernels, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.microkernels import ADD_RUN, MUL_RUN, REQUANT_RUN  # noqa: E402
from test_mcu_helium import _verify, need  # noqa: E402

M4 = ("nucleo-f446re", "mps2-an386")  # Cortex-M4: DSP, no Helium
SHAPE = [3, 5, 7]  # 105 elements, rows of 7 channels: partial vectors of 4, 8 and 16 lanes
SAMPLES = 8


def _spec(dtype="int8", zero_point=0, shape=SHAPE, scale=0.1):
    return g.TensorSpec(list(shape), dtype, scale, zero_point)


def _rq(name, src, dst, multiplier, shift, clamp):
    return g.Requantize(name, [src], dst, multiplier=np.asarray(multiplier, np.int32).ravel(),
                        shift=np.asarray(shift, np.int32).ravel(), clamp=list(clamp))


def _channels(rng, low, high):
    """A multiplier in [2^30, 2^31) and a shift in [low, high] per channel (both signs of shift)."""
    shifts = np.round(np.linspace(low, high, SHAPE[-1])).astype(int)
    return rng.integers(2**30, 2**31 - 1, SHAPE[-1]), rng.permutation(shifts)


def _wide(rng, dst="w"):
    """x (int8, zero point 3) -> an int16 tensor of varied values (a left shift of 7, zero point -100):
    the int16 input of the other cases (its own case: "s8_s16")."""
    return _rq("wide", "x", dst, rng.integers(2**30, 2**31 - 1), 7, [-32768, 32767])


def _case(name: str) -> g.Graph:
    """A graph whose output is the op of case ``name`` (the ops before it: other cases' ops)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    t = {"x": _spec(zero_point=3), "w": _spec("int16", -100), "y": None}
    ops = []
    if name == "x16":  # the exporter's x 16 of spike counts: zero points 0, int8 lanes
        t["a"] = _spec()
        ops = [_rq("zp0", "x", "a", 1 << 30, 1, [-128, 127]), _rq("x16", "a", "y", 1 << 30, 5, [0, 64])]
        t["y"] = _spec()
    elif name == "x16_zp":  # the same with an output zero point (lo - zp, hi - zp still within int8)
        ops, t["y"] = [_rq("x16", "x", "y", 1 << 30, 5, [-3, 61])], _spec(zero_point=-3)
        t["x"] = _spec()
    elif name == "x4_zp":  # x 4 of an input with a zero point, into int8 with one: int16 lanes
        ops, t["y"] = [_rq("x4", "x", "y", 1 << 30, 3, [-20, 100])], _spec(zero_point=-7)
    elif name == "x128":  # x 128 into int16 (the exporter's widening): int16 lanes
        ops, t["y"] = [_rq("x128", "x", "y", 1 << 30, 8, [-16384, 16256])], _spec("int16")
    elif name == "s8_s16":
        ops, t["y"] = [_wide(rng, "y")], t["w"]
    elif name == "s16_s8_neuron":  # a neuron: shift -10, clamp [0, 4] (every x < 0 ends at 0)
        ops, t["y"] = [_wide(rng), _rq("sn", "w", "y", rng.integers(2**30, 2**31 - 1), -10, [0, 4])], _spec()
    elif name == "s16_s8_channels":
        ops, t["y"] = [_wide(rng), _rq("ch", "w", "y", *_channels(rng, -12, 2), [-100, 110])], _spec(zero_point=5)
    elif name == "s16_s16":
        ops, t["y"] = [_wide(rng), _rq("s16", "w", "y", rng.integers(2**30, 2**31 - 1), -3, [-30000, 32767])], \
            _spec("int16", 11)
    elif name == "s16_x2":  # an exact x 2 of int16 (int32 lanes: one shift)
        ops, t["y"] = [_wide(rng), _rq("x2", "w", "y", 1 << 30, 2, [-32768, 32767])], _spec("int16", 9)
    elif name == "s8_s8_channels":
        ops, t["y"] = [_rq("ch", "x", "y", *_channels(rng, -9, 3), [-128, 127])], _spec(zero_point=-2)
    elif name in ("add_s8", "add_s16"):
        dtype = name[4:].replace("s", "int")
        scale = 0.07 if dtype == "int8" else 0.065  # int16: a power-of-two ratio, a's multiplier 2^30 too
        t["a"], t["b"] = _spec(dtype, -1, scale=scale), _spec(dtype, 4, scale=0.13)
        t["y"] = _spec(dtype, 2 if dtype == "int8" else 0, scale=0.15)
        m, s = add_multipliers(scale, 0.13, 0.15, ADD_LEFT_SHIFT[dtype])
        wide = dtype == "int16"
        ops = [_rq("a", "w" if wide else "x", "a", rng.integers(2**30, 2**31 - 1), 2 if wide else 0,
                   [-32768, 32767] if wide else [-128, 127]),
               _rq("b", "x", "b", rng.integers(2**30, 2**31 - 1), 8 if wide else -1,
                   [-32768, 32767] if wide else [-128, 127]),
               g.Add("add", ["a", "b"], "y", left_shift=ADD_LEFT_SHIFT[dtype], multiplier=m, shift=s,
                     clamp=[-120, 100] if dtype == "int8" else [-32768, 32767])]
        ops = ([_wide(rng)] if wide else []) + ops
    elif name == "mul":
        t["a"], t["y"] = _spec(zero_point=-3), _spec(zero_point=1)
        ops = [_rq("a", "x", "a", rng.integers(2**30, 2**31 - 1), -1, [-128, 127]),
               g.Mul("mul", ["x", "a"], "y", multiplier=np.array([1518500250], np.int32),
                     shift=np.array([-6], np.int32), clamp=[-128, 120])]
    elif name == "mul_x1":  # the spikeformer's masks: x 1 (2^30, shift 1: one shift), zero points 0
        t["x"], t["a"], t["y"] = _spec(), _spec(), _spec()
        ops = [_rq("a", "x", "a", rng.integers(2**30, 2**31 - 1), -5, [-128, 127]),
               g.Mul("mul", ["x", "a"], "y", multiplier=np.array([1 << 30], np.int32),
                     shift=np.array([1], np.int32), clamp=[-128, 127])]
    elif name == "mul_row":  # b broadcast along the rows ([1, 1, C]), per-channel multipliers
        t["r"], t["y"] = _spec(zero_point=2, shape=[1, 1, SHAPE[-1]]), _spec(zero_point=-4)
        m, s = _channels(rng, -8, 1)
        ops = [g.ReduceSum("row", ["x"], "r", multiplier=np.full(SHAPE[-1], 1 << 30, np.int32),
                           shift=np.full(SHAPE[-1], -3, np.int32), clamp=[-128, 127]),
               g.Mul("mul", ["x", "r"], "y", multiplier=np.asarray(m, np.int32), shift=np.asarray(s, np.int32),
                     clamp=[-128, 127])]
    used = {"x"} | {n for o in ops for n in (*o.inputs, o.output)}
    return g.Graph({k: v for k, v in t.items() if k in used}, ops, "x", ["y"])


CASES = ["x16", "x16_zp", "x4_zp", "x128", "s8_s16", "s16_s8_neuron", "s16_s8_channels", "s16_s16", "s16_x2",
         "s8_s8_channels", "add_s8", "add_s16", "mul", "mul_x1", "mul_row"]
RUN = {"add": ADD_RUN, "mul": MUL_RUN}


def _input(seed: int = 1) -> np.ndarray:
    """Every int8 value at the input's scale (zero point 3), in random order."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, (SAMPLES, *SHAPE))
    q.flat[:256] = np.arange(-128, 128)
    return ((q - 3) * 0.1).astype(np.float32)


def _run_names(graph: g.Graph) -> set[str]:
    """The run micro-kernels the graph's ops should call: the last op's, by its dtypes."""
    op = graph.ops[-1]
    dtypes = (graph.tensors[op.inputs[0]].dtype, graph.tensors[op.output].dtype)
    return {RUN.get(op.kind, REQUANT_RUN)[dtypes]}


@pytest.mark.parametrize("name", CASES)
def test_helium_eltwise_is_bit_exact(tmp_path, monkeypatch, name):
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph, x = _case(name), _input()
    y = graph.run_integer(graph.quantize_input(x))[graph.outputs[0]]
    assert len(np.unique(y)) > 4, np.unique(y)  # not all clamped
    _, helium = _verify(graph, x, tmp_path / "m55", "none", monkeypatch, samples=SAMPLES)
    source = (tmp_path / "m55" / "kernels.c").read_text()
    assert all(f"{n}(" in source for n in _run_names(graph)), _run_names(graph)
    _, plain = _verify(graph, x, tmp_path / "m55-soft", "none", monkeypatch, abi="ARM_ABI=-mfloat-abi=soft",
                       samples=SAMPLES)
    assert helium < plain, (helium, plain)


def _verify_m4(graph, x, out, monkeypatch) -> int:
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    export_mcu(graph, boards.load(M4[0]), out, "none", x)
    r = verify_mcu(out, x, qemu=True, samples=SAMPLES, trust_code=True)
    run = r["runs"]["arm"]
    assert run["machine"] == M4[1] and run["mismatched_elements"] == 0 and run["samples"] == SAMPLES
    return run["instructions_per_inference"]


@pytest.mark.parametrize("name", ["x16", "s16_s8_channels", "add_s8", "mul_row"])
def test_cores_without_helium_are_unchanged(tmp_path, monkeypatch, name):
    """Cortex-M4: bit-exact, and the same instructions as the kernels without their Helium forms."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph, x = _case(name), _input()
    with_forms = _verify_m4(graph, x, tmp_path / "m4", monkeypatch)
    assert all(f"{n}(" in (tmp_path / "m4" / "kernels.c").read_text() for n in _run_names(graph))
    monkeypatch.setattr(kernels, "_helium_or", lambda func, helium: func)
    without = _verify_m4(graph, x, tmp_path / "m4-te", monkeypatch)
    assert with_forms == without, (with_forms, without)
