"""The QCDQ ONNX file (``export --target onnx-qcdq``): the *torch* model (plain layers, edgesnn
neurons, Brevitas QuantConv2d/QuantLinear) written with Brevitas's QCDQ export, for tools that read
QuantizeLinear -> Clip -> DequantizeLinear. It does not read the IR, and it is not the integer model:

- Only the weights of Brevitas-quantized layers (checkpoints from ``edgesnn quantize``) are
  quantized, as QuantizeLinear -> Clip -> DequantizeLinear on the weight; a plain float layer keeps
  float32 weights straight into Conv / Gemm.
- The input and every activation stay float: edgesnn's models quantize no activation in torch, so
  no QuantizeLinear acts on them. The spiking neurons are float arithmetic (Floor, Clip, Mul) and
  nothing is requantized in integers: the file computes torch's float function, not the IR's integers. ``verify`` checks it
  against torch (argmax agreement and the largest output difference), not against the IR.

The integer ONNX file, computed exactly as the IR, is ``export --target onnx`` (edgesnn/backends/onnx/lower.py).

How the export works and why:

- ``brevitas.export.export_onnx_qcdq`` with torch.onnx's dynamo exporter (``torch.export``, the
  default and maintained path since torch 2.9; the TorchScript exporter is deprecated). With
  dynamo Brevitas writes every quantized weight as QuantizeLinear -> Clip -> DequantizeLinear.
- A Brevitas weight quantizer whose rounding mode is "ROUND" (or unset) is exported by
  *re-quantizing the float weights* with Brevitas's own round(w / scale): for any custom
  ``tensor_quant`` (odd grids, ReScaW, Q-SNN, sign) that is not what torch computed. This backend
  therefore always exports the quantizer's fake-quantized values (``value = scale * q``): the
  Q node then recovers exactly the integers q and DequantizeLinear exactly the torch weights.
- The Clip after QuantizeLinear clips to the *bit width the quantizer returns* (signed, narrow
  range or not). A quantizer must return the width of the integers it stores (2**b odd levels
  need b + 1 bits): integers outside that range are refused before export instead of being
  silently clipped.
- The export runs on a deep copy of the model: the caller's model is never left in Brevitas's
  export mode, eval mode or with swapped modules, even when export fails. In that copy, Q-SNN
  membrane quantizers (``MembraneQuant``, whose forward checks its scale with a Python ``if`` on a
  tensor, which torch.export cannot trace) are replaced by the same arithmetic without the check.
- The batch axis is dynamic (named ``batch``). A model that fixes its batch size (e.g. a reshape
  to a constant batch) is exported at the example's batch size; :func:`run_qcdq` then runs
  batches of that size.
- torch.onnx writes weights as external data by default (``model.onnx.data``) and Brevitas then
  re-saves the file inline, leaving the ``.data`` file behind. Here torch.onnx is asked for one
  file, the export happens in a private temporary folder next to ``path`` anyway (any external
  data is folded in), onnxruntime must load the result, and only then is it moved into place
  (``os.replace``): a failed export leaves nothing behind and an existing file untouched.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgesnn.backends.onnx.runtime import FORMAT_KEY, QCDQ, one_line, session
from edgesnn.errors import EdgesnnError

OPSET = 20  # torch.onnx's own default: no version conversion (Brevitas would ask for 13 and fail to convert)
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir",
                  "brevitas")


def export_qcdq(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the eval-mode ``model`` to ``path`` as one ONNX file (QCDQ weights, dynamic batch).

    ``example`` is an input batch (its batch size does not matter); ``metadata`` goes into the
    model's metadata_props. Returns ``path``. Nothing is written at ``path`` unless the export
    succeeded, onnx.checker's full check passes and onnxruntime loads the result.
    """
    path = Path(path)
    example = _example(example)
    if not path.parent.is_dir():
        raise EdgesnnError(f"{path.parent}: no such directory for the ONNX file")
    what = type(model).__name__
    work = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        raw = Path(work) / "export.onnx"
        _export(model, example, raw)
        import onnx

        proto = onnx.load(str(raw))  # pulls in external data, if torch.onnx wrote any
        if proto.ByteSize() >= 2**31:
            raise EdgesnnError(f"{what} is larger than 2 GB: ONNX cannot hold it in one file")
        onnx.helper.set_model_props(proto, {FORMAT_KEY: QCDQ, **{str(k): str(v) for k, v in (metadata or {}).items()}})
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as e:  # noqa: BLE001 - the checker's and shape inference's errors alike
            raise EdgesnnError(f"cannot export {what} to ONNX: the file fails onnx.checker: {one_line(e)}") from None
        single = Path(work) / "model.onnx"
        onnx.save_model(proto, str(single))
        session(single)  # refuse a file onnxruntime cannot load
        os.replace(single, path)
    except _ExportFailed as e:
        raise EdgesnnError(f"cannot export {what} to ONNX: {e}") from None
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - anything from torch.export / brevitas / onnx is one line for the user
        raise EdgesnnError(f"cannot export {what} to ONNX: {one_line(e)}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def run_qcdq(path, x: np.ndarray) -> np.ndarray:
    """Run the ONNX file on a float batch with onnxruntime (CPU); returns the first output."""
    path = Path(path)
    sess = session(path)
    inp = sess.get_inputs()[0]
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    shape = list(inp.shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    if x.ndim != len(shape) or any(d is not None and d != s for d, s in zip(fixed[1:], x.shape[1:])):
        raise EdgesnnError(f"{path}: input of shape {x.shape} does not match the model's input {tuple(shape)}")
    if len(x) == 0:
        raise EdgesnnError(f"{path}: empty input batch")
    batch = fixed[0]
    if batch is None:  # dynamic batch: run in bounded chunks
        chunks = [x[i:i + 1024] for i in range(0, len(x), 1024)]
        return np.concatenate([sess.run(None, {inp.name: c})[0] for c in chunks])
    outs = []
    for i in range(0, len(x), batch):  # static batch: pad the last chunk, keep only real rows
        c = x[i:i + batch]
        n = len(c)
        if n < batch:
            c = np.concatenate([c, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        outs.append(sess.run(None, {inp.name: c})[0][:n])
    return np.concatenate(outs)


def compare_qcdq(model: nn.Module, path, x: torch.Tensor) -> dict:
    """Torch vs onnxruntime on ``x``: argmax agreement and the largest output difference."""
    import onnxruntime

    x = torch.as_tensor(x, dtype=torch.float32)
    if len(x) == 0:
        raise EdgesnnError("no samples to compare")
    out = run_qcdq(path, x.numpy())  # first: it checks x against the file's input shape, torch would not
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = torch.cat([model(b) for b in torch.split(x, 512)]).numpy()
    finally:
        model.train(was_training)
    if out.shape != ref.shape:
        raise EdgesnnError(f"{path}: onnxruntime output shape {out.shape} differs from torch's {ref.shape}")
    mismatches = int((ref.argmax(1) != out.argmax(1)).sum()) if ref.ndim > 1 else int((ref != out).sum())
    samples = len(x)
    return {
        "samples": samples,
        "mismatches": mismatches,
        "agreement": 1.0 - mismatches / samples,
        "max_abs_diff": float(np.abs(ref.astype(np.float64) - out).max()),
        "runtime": f"onnxruntime {onnxruntime.__version__}",
    }


def verify_qcdq(artifact: Path, data_spec: str | None, ckpt: Path | None, trust_code=False) -> dict:
    """onnxruntime over the whole test split vs the torch model the file was exported from (``ckpt``,
    default the one it names): argmax agreement and the largest output difference."""
    from edgesnn import artifact_data, checkpoint, pipeline
    from edgesnn.backends.onnx import read_metadata
    from edgesnn.train import predict

    source = ckpt or pipeline.named_checkpoint(artifact, read_metadata(artifact).get("edgesnn.checkpoint"))
    if source is None:
        raise EdgesnnError(f"{artifact}: the ONNX file does not name its checkpoint; pass --checkpoint DIR")
    model, config = checkpoint.load(source, trust_code=trust_code)
    data_spec, ds = artifact_data.load(artifact, data_spec, ckpt=source)
    pipeline.check_input_shape(config, ds, data_spec, source)
    r = compare_qcdq(model, artifact, ds.x_test)
    pred = run_qcdq(artifact, ds.x_test.numpy()).argmax(1)
    y = ds.y_test.numpy()
    return {"artifact": str(artifact), "data": data_spec, "checkpoint": str(source), **r,
            "accuracy": float((pred == y).mean()), "torch_accuracy": float((predict(model, ds.x_test).numpy() == y).mean())}


# --- export internals -------------------------------------------------------------------------


class _ExportFailed(Exception):
    """torch.onnx / Brevitas could not export; the message is already one line."""


def _example(example) -> torch.Tensor:
    if isinstance(example, np.ndarray):
        example = torch.from_numpy(example)
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or len(example) == 0:
        raise EdgesnnError("the ONNX export needs a non-empty example input batch (a tensor)")
    example = example.detach().to(torch.float32)
    # torch.export specializes a dimension of size 1, so the dynamic batch needs an example of >= 2
    return example if len(example) >= 2 else example.expand(2, *example.shape[1:]).contiguous()


def _export(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    """Export a deep copy of ``model`` (the caller's model is never touched); raises _ExportFailed."""
    with _quiet():
        from brevitas.export import export_onnx_qcdq

        try:
            work = copy.deepcopy(model)
        except Exception as e:  # noqa: BLE001
            raise EdgesnnError(f"cannot copy {type(model).__name__} for the ONNX export: {one_line(e)}") from None
        work.eval()
        names = {id(m): n for n, m in work.named_modules()}
        _prepare_weight_quantizers(work)
        kwargs = dict(
            export_path=str(out), opset_version=OPSET, dynamo=True, optimize=True, verbose=False,
            keep_initializers_as_inputs=False,  # Brevitas's default (True) makes every weight a graph input
            external_data=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            # torch.onnx keeps the batch static by itself when the model fixes it (e.g. view(8, -1))
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        try:
            export_onnx_qcdq(work, args=(example,), **kwargs)
        except EdgesnnError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _ExportFailed(_describe_failure(e, names)) from None


@contextlib.contextmanager
def _quiet():
    """Silence the warnings and progress logs Brevitas and torch.onnx print during an export."""
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    # torch.export also print()s a partial graph to stderr when it fails, and torch.onnx prints
    # progress lines: the one-line EdgesnnError carries what the user needs.
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _prepare_weight_quantizers(model: nn.Module) -> None:
    """Check every Brevitas weight quantizer and make it export its fake-quantized weights."""
    from brevitas.export.onnx.standard.qcdq.handler import StdQCDQCastONNXWeightQuantProxyHandler
    from brevitas.proxy import WeightQuantProxyFromInjector

    class FakeQuantWeightHandler(StdQCDQCastONNXWeightQuantProxyHandler):
        # Q(scale * q) with the same scale is exactly q: the ONNX weights are torch's weights.
        export_fake_quantized = True

        def validate(self, module):  # the checks below replace Brevitas's (which need a rounding mode)
            pass

    for name, m in model.named_modules():
        if hasattr(m, "export_handler"):
            m.export_handler = None  # a handler left by an earlier (e.g. QONNX) export would be reused
        if type(m) is not WeightQuantProxyFromInjector or not m.is_quant_enabled:
            continue
        layer = name.rpartition(".")[0] or name
        if len(m.tracked_module_list) != 1:
            raise EdgesnnError(f"layer {layer!r}: a weight quantizer shared by several layers "
                               "cannot be exported to ONNX")
        if getattr(m, "is_groupwise", False):
            raise EdgesnnError(f"layer {layer!r}: group-wise weight quantization cannot be exported as ONNX QCDQ")
        _check_weight_integers(layer, m)
        m.export_handler = FakeQuantWeightHandler()


def _check_weight_integers(layer: str, proxy) -> None:
    with torch.no_grad():
        qw = proxy.tracked_module_list[0].quant_weight()
    value, scale, zp, bw = qw.value, qw.scale, qw.zero_point, qw.bit_width
    if scale is None or bw is None or zp is None:
        raise EdgesnnError(f"layer {layer!r}: its weight quantizer returns no scale / zero point / bit width")
    bits = float(bw)
    signed, narrow = proxy.is_signed, proxy.is_narrow_range
    if bits != int(bits) or not 2 <= bits <= 8:
        raise EdgesnnError(f"layer {layer!r}: {bits:g}-bit weights cannot be exported as ONNX QCDQ "
                           "(2..8 bits; a 1-bit {-1, +1} grid is a 2-bit narrow-range signed integer)")
    if signed is None or narrow is None:
        raise EdgesnnError(f"layer {layer!r}: its weight quantizer must declare signed and narrow_range")
    bits = int(bits)
    lo = -(2 ** (bits - 1)) + int(narrow) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - int(narrow)
    ints = value.detach().double() / scale.detach().double() + zp.detach().double()
    q = torch.round(ints)
    if not torch.isfinite(ints).all() or (ints - q).abs().max() > 1e-3:
        raise EdgesnnError(f"layer {layer!r}: its quantized weights are not integer multiples of the scale it returns")
    qmin, qmax = int(q.min()), int(q.max())
    if qmin < lo or qmax > hi:
        need = max(qmax.bit_length(), (-qmin - 1).bit_length() if qmin < 0 else 0) + int(signed)
        raise EdgesnnError(
            f"layer {layer!r}: weight integers span [{qmin}, {qmax}] but the quantizer declares {bits}-bit "
            f"{'signed' if signed else 'unsigned'}{' narrow-range' if narrow else ''} [{lo}, {hi}]; "
            f"it must return the bit width of the integers it stores (at least {need})")


def _describe_failure(e: BaseException, names: dict[int, str]) -> str:
    """``layer 'a.b' (Type): RootError: first line`` (the layer only when the failure was in a forward)."""
    chain = list(_chain(e))
    root = chain[-1]
    where = next(filter(None, (_failing_layer(c, names) for c in reversed(chain))), None)
    line = one_line(root) + _HINTS.get(type(root).__name__, "")
    return f"{where}: {line}" if where else line


_HINTS = {
    "GuardOnDataDependentSymNode": " (Python control flow on a tensor's value cannot be exported; use torch.where)",
}


def _failing_layer(e: BaseException, names: dict[int, str]) -> str | None:
    """The deepest model layer whose forward was running when ``e`` was raised."""
    found = None
    tb = e.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            name = names[id(owner)]
            found = f"layer {name!r} ({type(owner).__name__})" if name else f"{type(owner).__name__}.forward"
        tb = tb.tb_next
    return found


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
