"""TVM -> plain C: a TIR pipeline whose output is ordinary C functions taking raw typed pointers.

TVM's default C pipeline wraps every kernel in the packed-function ABI (``MakePackedAPI``): one
``(TVMFFIAny* args, int32_t num_args, ...)`` entry per function, DLTensor unpacking and runtime
type checks, all of which need the TVM FFI runtime. A microcontroller has none of it, and the
firmware calls each kernel directly with pointers into its static arena. The "unpacked_c"
pipeline below is TVM's s_tir lowering up to the host/device split, after which each PrimFunc's
buffer parameters are replaced by plain typed pointers:

    int32_t edgesnn_conv1(int8_t* x, int8_t* weight, int32_t* bias, ..., int8_t* out);

returning 0. The functions use no TVM runtime call as long as no intermediate buffer reaches
1 KiB (TVM then emits ``TVMBackendAllocWorkspace``); :func:`build_c` refuses such kernels, and
edgesnn's kernels (``kernels.py``) are scheduled so their intermediates stay scalar.

The generated file still ``#include``s four TVM headers and defines ``void* __tvm_ffi__library_ctx``;
only ``stdint.h`` and a ``TVM_DLL`` macro are needed from them (:data:`SHIM_HEADERS`).
"""

from __future__ import annotations

import re

import tvm
import tvm.s_tir.pipeline as s_tir_pipeline
from tvm import s_tir, tirx
from tvm.tirx import compilation_pipeline

from edgesnn.backends.mcu import microkernels, microkernels_dw, microkernels_gather
from edgesnn.errors import EdgesnnError

PIPELINE = "unpacked_c"

# Stand-ins for the headers the generated C includes: the unpacked kernels need only the fixed-width
# integer types and the TVM_DLL export macro (empty on a microcontroller).
_BASE_H = ("#ifndef EDGESNN_TVM_SHIM_BASE_H_\n#define EDGESNN_TVM_SHIM_BASE_H_\n#include <stddef.h>\n"
           "#include <stdint.h>\n#ifndef TVM_DLL\n#define TVM_DLL\n#endif\n#endif\n")
SHIM_HEADERS = {
    "tvm/runtime/base.h": _BASE_H,
    "tvm/runtime/c_backend_api.h": '#include "tvm/runtime/base.h"\n',
    "tvm/ffi/c_api.h": '#include "tvm/runtime/base.h"\n',
    "tvm/ffi/extra/c_env_api.h": '#include "tvm/runtime/base.h"\n',
    microkernels.HEADER: microkernels.SOURCE,  # the int8 inner loops the kernels call (with_microkernels)
    microkernels_gather.HEADER: microkernels_gather.SOURCE,  # the gather-dot form's (kernels_gather)
    microkernels_dw.HEADER: microkernels_dw.SOURCE,  # a depthwise conv of spike counts in int16 lanes
}


def _is_buffer_param(var) -> bool:
    try:
        return bool(tirx.buffer.is_buffer_var(var))
    except Exception:  # noqa: BLE001 - TVM raises its own error types for non-buffer vars
        return False


def _unpack_function(name: str, func: tirx.PrimFunc) -> tirx.PrimFunc:
    """One PrimFunc with each buffer parameter replaced by a raw pointer of its element type.

    The body is wrapped as MakePackedAPI would wrap it: a ``compute_scope`` (so the free of any
    intermediate is emitted before the final ``return 0``) inside a CPU ``device_type``/``device_id``
    context, which LowerTVMBuiltin needs to decide between a stack array and a workspace call.
    """
    params, decls = [], []
    for p in func.params:
        if _is_buffer_param(p):
            ptr = tirx.Var(p.name, tvm.ir.PointerType(tvm.ir.PrimType(p.dtype)))
            params.append(ptr)
            decls.append(tirx.DeclBuffer(p, data=ptr))
        else:
            params.append(p)
    default = tvm.ir.StringImm("default")
    scoped = tirx.AttrStmt(default, "compute_scope", tvm.ir.StringImm(name + "_compute_"), func.body)
    body = tirx.SeqStmt(decls + [scoped, tirx.Return(tirx.const(0, "int32"))])
    body = tirx.AttrStmt(default, "device_id", tirx.const(0, "int32"),
                         tirx.AttrStmt(default, "device_type", tirx.const(1, "int32"), body))  # 1 = kDLCPU
    return tirx.PrimFunc(params, body, tvm.ir.PrimType("int32"), func.attrs)


@tvm.transform.module_pass(opt_level=0, name="UnpackBufferParams")
def unpack_buffer_params(mod, _ctx):
    """Replaces AnnotateEntryFunc / SplitHostDevice / MakePackedAPI: plain C signatures."""
    functions = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            name = str(func.attrs["global_symbol"]) if "global_symbol" in func.attrs else gv.name_hint
            func = _unpack_function(name, func)
        functions[gv] = func
    return tvm.IRModule(functions, attrs=mod.attrs)


def _lowering_passes(config) -> list:
    """TVM 0.27's default s_tir pipeline (``tvm.s_tir.pipeline``), minus what a single-threaded,
    integer-only C kernel with a plain C signature never needs. Kept in the default's order.

    Omitted, and why:
    - GPU constructs (threads, shared/warp memory, tensor cores, async copies), which our schedules
      never create: ``LowerCrossThreadReduction``, ``LiftThreadBinding``, ``ManifestSharedMemoryLocalStage``,
      ``LowerAutoCopy``, ``UnifyThreadBinding``, ``InjectPermutedLayout``, ``InjectSoftwarePipeline``,
      ``TransformMmaBufferLayout``, ``InjectVirtualThread``, ``InjectDoubleBuffer``, ``LowerAsyncDMA``,
      ``ThreadSync``, ``InferFragment``, ``LowerThreadAllreduce``, ``InjectPTXAsyncCopy``, ``InjectPTXLDG32``,
      ``MergeSharedMemoryAllocations``; and ``AnnotateIrregularLoop`` (only feeds software pipelining).
    - Float formats: ``BF16ComputeLegalize``, ``FP8ComputeLegalize``, ``FP8StorageLegalize``,
      ``BF16StorageLegalize`` (the kernels are integer-only).
    - Hexagon VTCM: ``VerifyVTCMLimit``, ``LowerVtcmAlloc``.
    - Runtime instrumentation: ``InstrumentBoundCheckers``, ``InstrumentProfileIntrinsics`` (they call
      into the TVM runtime).
    - The packed-function ABI: ``AnnotateEntryFunc``, ``SplitHostDevice``, ``MakePackedAPI`` (replaced
      by :func:`unpack_buffer_params`: the firmware calls kernels directly, without the TVM FFI).
    """
    return [
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),  # int32 loop indices: cheap on 32-bit cores
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(not bool(config.get("tirx.disable_vectorize", False))),
        tirx.transform.StorageRewrite(),
        s_tir.transform.HoistIfThenElse(),
        tirx.transform.UnrollLoop(),
        s_tir.transform.RenormalizeSplitPattern(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        s_tir.transform.RewriteUnsafeSelect(),
        tirx.transform.CommonSubexprElim(),
        tirx.transform.VerifyMemory(),
        unpack_buffer_params,
    ]


def unpacked_pipeline():
    """The pipeline factory ``register_tir_pipeline`` expects: (module pass, host finalizer, device finalizer)."""

    @tvm.transform.module_pass(opt_level=0, name="UnpackedCPipeline")
    def _pipeline(mod, _ctx):
        config = tvm.transform.PassContext.current().config
        return tvm.ir.transform.Sequential(_lowering_passes(config))(mod)

    return _pipeline, s_tir_pipeline.finalize_host_passes, s_tir_pipeline.finalize_device_passes


compilation_pipeline.register_tir_pipeline(PIPELINE, unpacked_pipeline)


def build_c(funcs: dict[str, tirx.PrimFunc], target: dict | None = None) -> str:
    """C source of all ``funcs`` (symbol -> PrimFunc) in one translation unit.

    ``target``: a TVM target dict, default ``{"kind": "c"}``. Runtime asserts are disabled (the
    shapes are static; the asserts would call into the TVM FFI error API). Raises ``EdgesnnError``
    if a kernel needs a TVM workspace allocation: the firmware has no TVM runtime to provide one.
    """
    mod = tvm.IRModule({name: func.with_attr("global_symbol", name) for name, func in funcs.items()})
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        lib = tvm.tirx.build(mod, target=target or {"kind": "c"}, pipeline=PIPELINE)
    source = lib.inspect_source()
    if "TVMBackendAllocWorkspace" in source:
        raise EdgesnnError("a kernel allocates a TVM workspace (an intermediate of 1 KiB or more); "
                           "schedule it so intermediates stay scalar or pass a scratch buffer")
    return with_microkernels(restrict_pointers(source, funcs))


def with_microkernels(source: str) -> str:
    """``source`` including the micro-kernels' headers (microkernels, microkernels_gather, microkernels_dw)
    before TVM's declarations of them, where a kernel calls one."""
    headers = [m.HEADER for m in (microkernels, microkernels_gather, microkernels_dw)
               if any(name in source for name in m.NAMES)]
    if not headers:
        return source
    last = source.rindex("#include")
    end = source.index("\n", last) + 1
    return source[:end] + "".join(f'#include "{h}"\n' for h in headers) + source[end:]


def restrict_pointers(source: str, names) -> str:
    """Every pointer parameter of the kernels ``names`` declared ``restrict``.

    Without it an int32 store (an accumulator) may alias the int8 input and weights, a character
    type, so the C compiler reloads them after every store. The arena never gives a kernel's output
    or scratch bytes that an input uses (their lifetimes overlap at that step: arena.plan), and two
    parameters that share a buffer (``mul(a, a)``) are only read, which restrict allows."""
    def params(m):
        return m[1] + re.sub(r"\*\s*(\w+)(?=\s*(,|$))", r"* restrict \1", m[2]) + ")"

    names = "|".join(re.escape(n) for n in names)
    return re.sub(rf"(TVM_DLL int32_t (?:{names})\()([^)]*)\)", params, source)
