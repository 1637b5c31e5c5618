"""IR storage: packed sub-byte weights, save/load round trip, version and schema checks."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from edgesnn import ir
from edgesnn.data import to_nhwc
from edgesnn.errors import EdgesnnError
from edgesnn.ir import packing


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([("signed", b) for b in range(2, 9)] + [("odd", b) for b in range(1, 8)]),
       st.integers(0, 300), st.randoms())
def test_packing_round_trip_at_every_bit_width(fmt, n, rnd):
    code, bits = fmt
    lo, hi = packing.weight_range(bits, code)
    step = 2 if code == "odd" else 1
    w = np.array([rnd.randrange(lo, hi + 1, step) for _ in range(n)], dtype=np.int8).reshape(n, 1)
    packed = packing.pack(w, bits, code)
    assert packed.size == (n * bits + 7) // 8
    np.testing.assert_array_equal(packing.unpack(packed, bits, w.shape, code), w)


def test_odd_code_levels():
    assert packing.weight_range(1, "odd") == (-1, 1)
    assert packing.weight_range(4, "odd") == (-15, 15)
    # 2 bits: the four levels -3, -1, 1, 3 are the codes 0, 1, 2, 3
    np.testing.assert_array_equal(packing.pack(np.array([-3, -1, 1, 3]), 2, "odd"), [0b11100100])


def test_packing_rejects_out_of_range_weights():
    with pytest.raises(ValueError, match=r"\[-7, 7\]"):
        packing.pack(np.array([8]), 4)
    with pytest.raises(ValueError, match="odd integers"):
        packing.pack(np.array([0]), 1, "odd")
    with pytest.raises(ValueError, match="2..8 bits"):
        packing.pack(np.array([0]), 1, "signed")
    with pytest.raises(ValueError, match="1..7 bits"):
        packing.pack(np.array([1]), 8, "odd")


def test_save_load_round_trip_is_identical(small_cnn_graph, digits, tmp_path):
    _, graph = small_cnn_graph
    path = tmp_path / "model.ir"
    graph.save(path)
    loaded = ir.load(path)
    assert loaded.tensors == graph.tensors and loaded.outputs == graph.outputs and loaded.meta == graph.meta
    for a, b in zip(graph.ops, loaded.ops, strict=True):
        assert a.attrs() == b.attrs()
        for k, v in a.arrays().items():
            np.testing.assert_array_equal(v, b.arrays()[k])
    x = to_nhwc(digits.x_test)
    np.testing.assert_array_equal(graph.run(x), loaded.run(x))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_sub_byte_weights_are_stored_packed(digits, small_cnn_graph, tmp_path):
    from edgesnn import export

    m, g8 = small_cnn_graph
    g4 = export.export(m, digits.x_train[:512], weight_bits=4)
    g8.save(tmp_path / "w8.ir")
    g4.save(tmp_path / "w4.ir")
    w8 = sum(op.weight.size for op in g8.weight_ops())
    size8, size4 = (tmp_path / "w8.ir").stat().st_size, (tmp_path / "w4.ir").stat().st_size
    assert size8 - size4 >= w8 // 2 - 16  # half a byte saved per weight
    assert all(np.abs(op.weight).max() <= 7 for op in ir.load(tmp_path / "w4.ir").weight_ops())


def _rewrite_metadata(src, dst, **changes):
    with safe_open(str(src), framework="numpy") as f:
        meta = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(arrays, str(dst), metadata=meta)


def test_load_checks_version(small_cnn_graph, tmp_path):
    small_cnn_graph[1].save(tmp_path / "a.ir")
    _rewrite_metadata(tmp_path / "a.ir", tmp_path / "b.ir", edgesnn_ir_version="99")
    with pytest.raises(EdgesnnError, match=f"IR version 99, but this edgesnn reads version {ir.graph.IR_VERSION}"):
        ir.load(tmp_path / "b.ir")


def test_load_checks_schema(small_cnn_graph, tmp_path):
    small_cnn_graph[1].save(tmp_path / "a.ir")
    with safe_open(str(tmp_path / "a.ir"), framework="numpy") as f:
        header = json.loads(f.metadata()["edgesnn_ir"])
    header["ops"][0]["kind"] = "softmax"
    _rewrite_metadata(tmp_path / "a.ir", tmp_path / "b.ir", edgesnn_ir=json.dumps(header))
    with pytest.raises(EdgesnnError, match="unknown op kind 'softmax'"):
        ir.load(tmp_path / "b.ir")
    header["ops"][0]["kind"] = "conv2d"
    header["ops"][0]["inputs"] = ["nowhere"]
    _rewrite_metadata(tmp_path / "a.ir", tmp_path / "c.ir", edgesnn_ir=json.dumps(header))
    with pytest.raises(EdgesnnError, match="unknown tensor 'nowhere'"):
        ir.load(tmp_path / "c.ir")


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "junk.ir").write_bytes(b"\x00" * 100)
    with pytest.raises(EdgesnnError, match="not an edgesnn IR file"):
        ir.load(tmp_path / "junk.ir")
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.ir"))
    with pytest.raises(EdgesnnError, match="without edgesnn IR metadata"):
        ir.load(tmp_path / "plain.ir")


def test_run_checks_the_input_shape(small_cnn_graph):
    with pytest.raises(EdgesnnError, match=r"this model takes \(batch, 8, 8, 1\)"):
        small_cnn_graph[1].run(np.zeros((2, 1, 8, 8), np.float32))


def test_ir_is_integer_only(small_cnn_graph):
    graph = small_cnn_graph[1]
    for op in graph.ops:
        for name, arr in op.arrays().items():
            assert arr.dtype.kind == "i" or name == "weight_scale", (op.name, name, arr.dtype)
    assert all(t.dtype in ("int8", "int16", "int32") for t in graph.tensors.values())


def test_weights_are_widened_to_int8_for_arithmetic():
    for code, bits_range in (("signed", range(2, 9)), ("odd", range(1, 8))):
        for bits in bits_range:
            lo, hi = packing.weight_range(bits, code)
            wide = packing.widen(np.array([lo, hi]), bits, code)
            assert wide.tolist() == [lo << packing.widening_shift(bits, code), hi << packing.widening_shift(bits, code)]
            assert -128 <= wide.min() and wide.max() <= 127 and wide.max() > 63  # fills int8
    assert packing.widen(np.array([-1, 1]), 1, "odd").tolist() == [-64, 64]


def test_spikes_get_headroom_before_a_dense_layer(small_cnn_graph, digits):
    _, graph = small_cnn_graph
    dense = [op for op in graph.ops if op.kind == "dense"][-1]
    assert dense.inputs == ["head.2.x16"] and graph.tensors["head.2"].spike_D == 4
    values = graph.run_integer(graph.quantize_input(to_nhwc(digits.x_test[:64])), keep_all=True)
    np.testing.assert_array_equal(values["head.2.x16"], 16 * values["head.2"].astype(np.int32))
    assert graph.tensors["head.2.x16"].scale == graph.tensors["head.2"].scale / 16
