"""``--kernels cmsis-nn``: the layers CMSIS-NN covers call it instead of a TVM kernel.

CMSIS-NN's arithmetic is TFLite's (double-rounding requantization, per-channel int8 weights, input
and output offsets), which is the IR's, so these calls are bit-exact with the golden interpreter.
The library is not shipped: the user names the CMSIS-NN folder their SDK already has (STM32Cube,
Zephyr, MCUXpresso ship it), and the project's Makefile compiles the sources listed in
``cmsis_nn.mk`` from there. It builds for the host too: without ``__ARM_FEATURE_DSP`` / MVE the
library takes its plain C path.

Covered (everything else keeps its TVM kernel): conv2d with groups 1 (``arm_convolve_wrapper_s8``),
depthwise conv2d with one output channel per input channel (``arm_depthwise_conv_wrapper_s8``) and
dense (``arm_fully_connected_per_channel_s8``), each with int8 input and output and plain 8-bit
weights, and not chosen event-driven (CMSIS-NN has no event-driven form). int16 streams (16x8),
sub-byte weights and spike-train layers stay TVM's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g

KERNEL_SOURCES = ("tvm", "cmsis-nn")
HEADER = "Include/arm_nnfunctions.h"
LAYERS_FILE = "cmsis_layers.c"  # the generated wrappers calling CMSIS-NN
MAKE_FILE = "cmsis_nn.mk"  # where the Makefile finds CMSIS-NN and which of its sources it compiles
CMAKE_FILE = "cmsis_nn.cmake"  # the same for CMakeLists.txt

# Function -> the source under Source/ that defines it: the three layer functions and everything
# they call on the host, Cortex-M4 (DSP) and Cortex-M55 (MVE, hard-float ABI) builds (found by linking each).
FUNCTIONS = {
    "arm_convolve_wrapper_s8": "ConvolutionFunctions/arm_convolve_wrapper_s8.c",
    "arm_convolve_wrapper_s8_get_buffer_size": "ConvolutionFunctions/arm_convolve_get_buffer_sizes_s8.c",
    "arm_convolve_s8": "ConvolutionFunctions/arm_convolve_s8.c",
    "arm_convolve_1x1_s8": "ConvolutionFunctions/arm_convolve_1x1_s8.c",
    "arm_convolve_1x1_s8_fast": "ConvolutionFunctions/arm_convolve_1x1_s8_fast.c",
    "arm_convolve_1_x_n_s8": "ConvolutionFunctions/arm_convolve_1_x_n_s8.c",
    "arm_nn_mat_mult_kernel_s8_s16": "ConvolutionFunctions/arm_nn_mat_mult_kernel_s8_s16.c",
    "arm_nn_mat_mult_kernel_row_offset_s8_s16": "ConvolutionFunctions/arm_nn_mat_mult_kernel_row_offset_s8_s16.c",
    "arm_depthwise_conv_wrapper_s8": "ConvolutionFunctions/arm_depthwise_conv_wrapper_s8.c",
    "arm_depthwise_conv_wrapper_s8_get_buffer_size": "ConvolutionFunctions/arm_depthwise_conv_get_buffer_sizes_s8.c",
    "arm_depthwise_conv_s8": "ConvolutionFunctions/arm_depthwise_conv_s8.c",
    "arm_depthwise_conv_s8_opt": "ConvolutionFunctions/arm_depthwise_conv_s8_opt.c",
    "arm_depthwise_conv_3x3_s8": "ConvolutionFunctions/arm_depthwise_conv_3x3_s8.c",
    "arm_fully_connected_per_channel_s8": "FullyConnectedFunctions/arm_fully_connected_per_channel_s8.c",
    "arm_vector_sum_s8": "FullyConnectedFunctions/arm_vector_sum_s8.c",
    "arm_nn_mat_mult_nt_t_s8": "NNSupportFunctions/arm_nn_mat_mult_nt_t_s8.c",
    "arm_nn_vec_mat_mult_t_per_ch_s8": "NNSupportFunctions/arm_nn_vec_mat_mult_t_per_ch_s8.c",
    "arm_q7_to_q15_with_offset": "NNSupportFunctions/arm_q7_to_q15_with_offset.c",
    "arm_s8_to_s16_unordered_with_offset": "NNSupportFunctions/arm_s8_to_s16_unordered_with_offset.c",
    # Helium builds (Cortex-M55, hard-float ABI) of the depthwise wrapper also call these
    "arm_nn_depthwise_conv_nt_t_s8": "NNSupportFunctions/arm_nn_depthwise_conv_nt_t_s8.c",
    "arm_transpose_s8": "TransposeFunctions/arm_transpose_s8.c",
}
LAYER_FUNCTIONS = {"conv": "arm_convolve_wrapper_s8", "depthwise": "arm_depthwise_conv_wrapper_s8",
                   "dense": "arm_fully_connected_per_channel_s8"}


def check_kernels(kernels: str, cmsis_nn: Path | None) -> Path | None:
    """The CMSIS-NN folder to build from (resolved), after checking it defines every function the
    project calls; None for TVM kernels. One line naming what is missing, before anything is written."""
    if kernels not in KERNEL_SOURCES:
        raise EdgesnnError(f"--kernels: unknown kernel source {kernels!r}; available: {', '.join(KERNEL_SOURCES)}")
    if kernels == "tvm":
        if cmsis_nn is not None:
            raise EdgesnnError("--cmsis-nn: only used with --kernels cmsis-nn")
        return None
    if cmsis_nn is None:
        raise EdgesnnError("--kernels cmsis-nn needs --cmsis-nn PATH (the CMSIS-NN folder, with Include/ and Source/)")
    root = Path(cmsis_nn).expanduser().resolve()
    if not root.is_dir():
        raise EdgesnnError(f"--cmsis-nn {cmsis_nn}: no such folder")
    if any(c.isspace() for c in str(root)):
        raise EdgesnnError(f"--cmsis-nn {cmsis_nn}: make cannot build from a path with spaces; use one without")
    if not (root / HEADER).is_file():
        raise EdgesnnError(f"--cmsis-nn {cmsis_nn}: no {HEADER}; is it a CMSIS-NN folder (Include/, Source/)?")
    missing = [name for name, rel in FUNCTIONS.items() if not _defines(root / "Source" / rel, name)]
    if missing:
        raise EdgesnnError(f"--cmsis-nn {cmsis_nn}: missing {', '.join(missing)} (looked for each in Source/ "
                           f"as CMSIS-NN lays it out); this CMSIS-NN is too old or incomplete")
    return root


def _defines(path: Path, function: str) -> bool:
    """Whether ``path`` defines ``function`` (a line starting with its return type, then the name and '(')."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"^[A-Za-z_][\w \t*]*\b{re.escape(function)}\s*\(", text, re.MULTILINE) is not None


def layer_kind(graph: g.Graph, op: g.Op, event_driven: bool) -> str | None:
    """conv, depthwise or dense where CMSIS-NN's s8 function computes exactly this op; None otherwise."""
    if event_driven or op.kind not in ("conv2d", "dense"):
        return None
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    if (spec_in.dtype, spec_out.dtype) != ("int8", "int8") or op.weight_bits != 8 or op.weight_code != "signed":
        return None
    if op.clamp[0] < -128 or op.clamp[1] > 127 or op.bias is None:
        return None
    if op.kind == "dense":
        return "dense"
    if op.groups == 1:
        return "conv"
    if op.groups == spec_in.shape[2] == spec_out.shape[2] and op.weight.shape[3] == 1:
        return "depthwise"
    return None  # grouped convolution: TVM


@dataclass
class CmsisKernel:
    """A layer computed by CMSIS-NN: the wrapper ``symbol`` (defined in cmsis_layers.c) takes the
    same parameters as a TVM kernel (input, weight, bias, multiplier, shift, scratch, output)."""

    symbol: str
    args: list
    scratch_bytes: int
    source: str  # the wrapper's C definition
    function: str  # the CMSIS-NN function it calls
    func: None = None  # no TVM PrimFunc


def cmsis_kernel(graph: g.Graph, op: g.Op, kind: str, symbol: str) -> CmsisKernel:
    """The wrapper of ``op`` (``kind`` from :func:`layer_kind`): its constants in CMSIS-NN's layouts
    (depthwise weights [H, W, C_OUT]; multipliers and shifts per channel) and its C definition."""
    from edgesnn.backends.mcu.kernels import Arg

    out_ch = graph.tensors[op.output].shape[-1]
    weight = np.asarray(op.weight, dtype=np.int8)
    if kind == "depthwise":  # OHW1 -> CMSIS-NN's [1, H, W, C_OUT]
        weight = weight[..., 0].transpose(1, 2, 0)
    consts = {"weight": np.ascontiguousarray(weight).ravel(),
              "bias": np.asarray(op.bias, np.int32).ravel(),
              "multiplier": np.broadcast_to(np.asarray(op.multiplier, np.int32).ravel(), (out_ch,)).copy(),
              "shift": np.broadcast_to(np.asarray(op.shift, np.int32).ravel(), (out_ch,)).copy()}
    c_types = {"weight": "int8_t", "bias": "int32_t", "multiplier": "int32_t", "shift": "int32_t"}
    args = [Arg("x", "input", op.inputs[0], "int8_t")]
    args += [Arg(name, "const", None, c_types[name], data) for name, data in consts.items()]
    args += [Arg("scratch", "scratch", None, "int8_t"), Arg("out", "output", op.output, "int8_t")]
    scratch = _scratch_bound(graph, op, kind)
    source = _wrapper(graph, op, kind, symbol, scratch)
    return CmsisKernel(symbol, args, scratch, source, LAYER_FUNCTIONS[kind])


def _scratch_bound(graph: g.Graph, op: g.Op, kind: str) -> int:
    """Bytes of the CMSIS-NN context buffer: the largest its get_buffer_size returns for this layer on
    a plain C, DSP or MVE build (the wrapper checks the real figure at run time and returns -1 if it is larger)."""
    cin = graph.tensors[op.inputs[0]].shape[-1]
    if kind == "dense":
        need = 4 * op.weight.shape[0]  # MVE: the kernel sums
    else:
        _, kh, kw, _ = op.weight.shape
        if kind == "conv":
            col = kh * kw * cin
            _, _, left, right = op.padding
            need = max(4 * 16 * -(-col // 16), 4 * (col + (-col) % 4), 4 * cin, (kw + left + right + 2) * cin)
        else:
            need = max(4 * 124 * kh * kw, 2 * cin * kh * kw)  # CH_IN_BLOCK_MVE = 124
    return int(need + (-need) % 4)


def _wrapper(graph: g.Graph, op: g.Op, kind: str, symbol: str, scratch: int) -> str:
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    lo, hi = op.clamp
    head = (f"int32_t {symbol}(int8_t *x, int8_t *weight, int32_t *bias, int32_t *multiplier, int32_t *shift, "
            f"int8_t *scratch, int8_t *out)\n{{\n"
            f"    cmsis_nn_context ctx = {{scratch, {scratch}}};\n"
            f"    cmsis_nn_per_channel_quant_params quant = {{multiplier, shift}};\n")
    if kind == "dense":
        m, k = op.weight.shape
        return head + (
            f"    const cmsis_nn_fc_params params = {{{-spec_in.zero_point}, 0, {spec_out.zero_point}, {{{lo}, {hi}}}}};\n"
            f"    const cmsis_nn_dims in_dims = {{1, 1, 1, {k}}}, w_dims = {{{k}, 1, 1, {m}}}, "
            f"b_dims = {{1, 1, 1, {m}}}, out_dims = {{1, 1, 1, {m}}};\n"
            f"#if defined(ARM_MATH_MVEI)\n"
            f"    if (arm_vector_sum_s8((int32_t *)scratch, {k}, {m}, weight, {-spec_in.zero_point}, 0, bias) "
            f"!= ARM_CMSIS_NN_SUCCESS) return -1;\n"
            f"#endif\n"
            f"    return arm_fully_connected_per_channel_s8(&ctx, &params, &quant, &in_dims, x, &w_dims, weight, "
            f"&b_dims, bias, &out_dims, out) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;\n}}\n")
    (h, w, cin), (oh, ow, cout) = spec_in.shape, spec_out.shape
    _, kh, kw, _ = op.weight.shape
    (sh, sw), (top, _, left, _) = op.stride, op.padding
    dims = (f"    const cmsis_nn_dims in_dims = {{1, {h}, {w}, {cin}}}, b_dims = {{1, 1, 1, {cout}}}, "
            f"out_dims = {{1, {oh}, {ow}, {cout}}};\n")
    common = f"{{{sw}, {sh}}}, {{{left}, {top}}}, {{1, 1}}, {{{lo}, {hi}}}"
    if kind == "conv":
        return head + dims + (
            f"    const cmsis_nn_dims w_dims = {{{cout}, {kh}, {kw}, {cin}}};\n"
            f"    const cmsis_nn_conv_params params = {{{-spec_in.zero_point}, {spec_out.zero_point}, {common}}};\n"
            f"    if (arm_convolve_wrapper_s8_get_buffer_size(&params, &in_dims, &w_dims, &out_dims) > {scratch}) return -1;\n"
            f"    return arm_convolve_wrapper_s8(&ctx, &params, &quant, &in_dims, x, &w_dims, weight, &b_dims, bias, "
            f"&out_dims, out) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;\n}}\n")
    return head + dims + (
        f"    const cmsis_nn_dims w_dims = {{1, {kh}, {kw}, {cout}}};\n"
        f"    const cmsis_nn_dw_conv_params params = {{{-spec_in.zero_point}, {spec_out.zero_point}, 1, {common}}};\n"
        f"    if (arm_depthwise_conv_wrapper_s8_get_buffer_size(&params, &in_dims, &w_dims, &out_dims) > {scratch}) "
        f"return -1;\n"
        f"    return arm_depthwise_conv_wrapper_s8(&ctx, &params, &quant, &in_dims, x, &w_dims, weight, &b_dims, bias, "
        f"&out_dims, out) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;\n}}\n")


def layers_c(kernels: list) -> str:
    """cmsis_layers.c: one wrapper per CMSIS-NN layer, in the TVM kernels' calling convention."""
    parts = ["/* Generated by edgesnn: the layers computed by CMSIS-NN (--kernels cmsis-nn). */",
             "#include <stdint.h>", '#include "arm_nnfunctions.h"', ""]
    parts += [k.source for k in kernels if isinstance(k, CmsisKernel)]
    return "\n".join(parts)


def cmake_include(root: Path) -> str:
    """cmsis_nn.cmake: the same for CMakeLists.txt (the library target takes the wrappers and the sources)."""
    sources = "\n".join(f"  {root}/Source/{rel}" for rel in sorted(set(FUNCTIONS.values())))
    return (f"# Generated by edgesnn (--kernels cmsis-nn): the CMSIS-NN sources the library compiles.\n"
            f"target_sources(edgesnn_model PRIVATE ${{CMAKE_CURRENT_SOURCE_DIR}}/{LAYERS_FILE}\n{sources})\n"
            f"target_include_directories(edgesnn_model PRIVATE {root}/Include)\n")


def make_include(root: Path) -> str:
    """cmsis_nn.mk: the CMSIS-NN folder and the sources the Makefile compiles from it."""
    sources = " \\\n    ".join(sorted(set(FUNCTIONS.values())))
    return (f"# Generated by edgesnn (--kernels cmsis-nn): the CMSIS-NN sources this project compiles.\n"
            f"CMSIS_NN := {root}\nCMSIS_NN_SRC := \\\n    {sources}\nSRC += {LAYERS_FILE}\n")
