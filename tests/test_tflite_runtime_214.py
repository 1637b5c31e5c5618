"""tflite-runtime 2.14, the runtime of older Raspberry Pi images, run for real in the environment
scripts/setup.sh creates for it (it needs numpy < 2): an int8-stream model exported for it is
bit-exact over the whole test split, a graph it cannot run is refused at export naming the op,
verify reports per file which runtimes run it exactly, and the table of what 2.14 runs
(runtime214.RUNS) is what it does, operator by operator, over every operator the lowering writes."""

import re

import numpy as np
import pytest

from edgesnn import pipeline
from edgesnn.backends.tflite import LITERT_REFERENCE, MICRO, flatbuffer as fb, lower, runtime214
from edgesnn.backends.tflite.runtime import interpreter_for, micro_available
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from test_tflite_op_versions import covering_graphs

ENV_MISSING = (f"the tflite-runtime {runtime214.VERSION} environment is missing: scripts/setup.sh creates it "
               f"({runtime214.ENVIRONMENT} inside the environment edgesnn runs in)")


@pytest.fixture(autouse=True)
def tflite_runtime_env():
    """Not skipped: CI runs setup.sh, so a missing environment is a failure of the setup."""
    assert runtime214.available(), ENV_MISSING


def test_the_environment_has_tflite_runtime_214_and_numpy_1():
    xq = np.zeros((1, 2, 2, 1), np.int8)
    model = fb.Model(inputs=[0], outputs=[1])
    for name in ("x", "y"):
        model.add_tensor(fb.Tensor(name, [1, 2, 2, 1], "int8", [0.5], [0]))
    model.add_tensor(fb.Tensor("shape", [4], "int32", data=np.array([1, 2, 2, 1], np.int32)))
    model.add_operator(fb.Operator("RESHAPE", [0, 2], [1], "ReshapeOptions", {"NewShape": [1, 2, 2, 1]}))
    outputs, name = runtime214.run(model.serialize(), [xq])
    assert re.fullmatch(r"tflite-runtime 2\.14\.0 \(numpy 1\.\d+\.\d+\), reference kernels", name), name
    assert np.array_equal(outputs[0], xq)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_an_int8_stream_model_is_bit_exact_in_tflite_runtime(trained, tmp_path, family):
    path = pipeline.export_model(trained[family], "tflite", tmp_path, stream_dtype="int8", runtime="tflite-runtime")
    r = pipeline.verify(path, "digits")
    row = r["runtimes"][runtime214.REFERENCE]
    assert row["runtime"].startswith("tflite-runtime 2.14.0 (numpy 1.") and row["runtime"].endswith("reference kernels")
    assert r["samples"] == 450 and row["mismatches"] == 0 and row["mismatched_elements"] == 0
    assert isinstance(r["runtimes"][runtime214.DEFAULT]["mismatches"], int)  # its XNNPACK kernels: measured, reported
    exact = {LITERT_REFERENCE, runtime214.REFERENCE} | ({MICRO} if micro_available() else set())
    assert exact <= set(r["exact_in"]) and r["bit_exact"] and r["cannot_run"] == {}


@pytest.mark.slow
def test_an_int16_stream_model_is_refused_naming_the_op(trained, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EdgesnnError) as e:
        pipeline.export_model(trained["cnn"], "tflite", out, stream_dtype="int16", runtime="tflite-runtime")
    message = str(e.value)
    assert re.match(r"tflite: IR op '[\w.]+' \(requantize\) needs QUANTIZE int8 -> int16 \(operator \d+\), which "
                    r"tflite-runtime 2\.14\.0 cannot run: its QUANTIZE requantizes int8 only into int8", message), message
    assert "\n" not in message
    assert not out.exists() or not any(out.iterdir())  # nothing written

    # exported for LiteRT, verify says which runtimes run it exactly and that 2.14 cannot run it
    path = pipeline.export_model(trained["cnn"], "tflite", out, stream_dtype="int16")
    r = pipeline.verify(path, "digits")
    assert r["bit_exact"] and LITERT_REFERENCE in r["exact_in"]
    assert set(r["cannot_run"]) == {runtime214.REFERENCE, runtime214.DEFAULT}
    assert "(QUANTIZE) failed to prepare" in r["cannot_run"][runtime214.REFERENCE]
    assert not {runtime214.REFERENCE, runtime214.DEFAULT} & set(r["runtimes"])


def test_a_bad_runtime_is_refused_before_any_work(tmp_path):
    with pytest.raises(EdgesnnError, match=r"^unknown TFLite runtime 'tflite' for --runtime; available: litert, "
                                           r"tflite-runtime$"):
        pipeline.export_model(tmp_path / "no-checkpoint", "tflite", tmp_path / "out", runtime="tflite")
    with pytest.raises(EdgesnnError, match=r"^--runtime: chooses the TFLite runtime of --target tflite, not of ir$"):
        pipeline.export_model(tmp_path / "no-checkpoint", "ir", tmp_path / "out", runtime="tflite-runtime")
    assert not any(tmp_path.iterdir())


def single_operator(model: fb.Model, op: fb.Operator) -> tuple[bytes, list[fb.Tensor]]:
    """The operator alone in a file: its constants kept, its other inputs the file's inputs."""
    alone, index = fb.Model(description="one operator"), {}
    for i in [*op.inputs, *op.outputs]:
        index.setdefault(i, alone.add_tensor(model.tensors[i]))
    alone.inputs = [index[i] for i in op.inputs if model.tensors[i].data is None]
    alone.outputs = [index[i] for i in op.outputs]
    alone.add_operator(fb.Operator(op.opcode, [index[i] for i in op.inputs], alone.outputs, op.options, op.fields))
    return alone.serialize(), [model.tensors[i] for i in op.inputs if model.tensors[i].data is None]


def random_inputs(tensors: list[fb.Tensor], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    batches = []
    for t in tensors:
        lo, hi = g.dtype_range(t.dtype) if t.dtype != "int32" else (-10**6, 10**6)  # int32: window sums
        batches.append(rng.integers(lo, hi + 1, (n, *t.shape[1:])).astype(fb.NUMPY_TYPES[t.dtype]))
    return batches


def litert_reference(path, batches: list[np.ndarray]) -> np.ndarray:
    interp = interpreter_for(path, reference=True)
    ins, out = interp.get_input_details(), interp.get_output_details()[0]
    got = []
    for n in range(len(batches[0])):
        for d, b in zip(ins, batches):
            interp.set_tensor(d["index"], b[n][None])
        interp.invoke()
        got.append(interp.get_tensor(out["index"])[0])
    return np.stack(got)


@pytest.mark.slow
def test_what_it_runs_is_the_table(trained, tmp_path_factory, tmp_path):
    """Every (operator, input type, output type) the lowering writes, alone in a file with random
    inputs: runtime214.RUNS prepare in 2.14 and equal LiteRT's reference kernels integer for
    integer, CANNOT_RUN are refused by 2.14 itself; whole files load in 2.14 exactly when
    runtime214.check passes them."""
    keys = {}
    for name, graph in covering_graphs(trained, tmp_path_factory).items():
        model = lower(graph)
        try:
            runtime214.check(model)
            refused = None
        except EdgesnnError as e:
            refused = str(e)
        whole, whole_inputs = model.serialize(), [model.tensors[i] for i in model.inputs]
        try:
            runtime214.run(whole, random_inputs(whole_inputs, 2, 0))
            assert refused is None, f"{name}: refused at export, but tflite-runtime runs it: {refused}"
        except runtime214.CannotRun as e:
            assert refused is not None, f"{name}: passed the export check, but {e}"
        for op in model.operators:
            keys.setdefault((op.opcode, model.tensors[op.inputs[0]].dtype, model.tensors[op.outputs[0]].dtype), (model, op))
    assert set(keys) == runtime214.RUNS | set(runtime214.CANNOT_RUN)  # the table holds what was measured, all of it
    for n, (key, (model, op)) in enumerate(sorted(keys.items())):
        data, inputs = single_operator(model, op)
        batches = random_inputs(inputs, 16, n)
        if key in runtime214.CANNOT_RUN:
            with pytest.raises(runtime214.CannotRun, match=r"cannot load it: .*failed to prepare"):
                runtime214.run(data, batches)
            continue
        (got,), _ = runtime214.run(data, batches)
        path = tmp_path / f"op{n}.tflite"
        path.write_bytes(data)
        assert np.array_equal(got, litert_reference(path, batches)), key
