"""The one place where pointmae adapts spconv 2.x to CPU-only machines.

spconv (Yan et al., "SECOND: Sparsely Embedded Convolutional Detection", Sensors 2018, and the
spconv library) runs sparse 3D convolutions on CPU and GPU, but three things break or go wrong on CPU.
All were checked with spconv 2.3.8 (CPU wheel) and torch 2.14.1 (a CUDA 13.0 build) on a
machine without an NVIDIA driver:

(a) Backward needs a CUDA stream it does not use. ``spconv.pytorch.ops.indice_conv_backward``
    (the gather-GEMM-scatter path taken on CPU) calls ``get_current_stream()`` unconditionally, which
    is ``torch.cuda.current_stream().cuda_stream``. With the CUDA build of torch on this GPU-less
    machine it raises "Found no NVIDIA driver on your system" (checked: the CUDA runtime cannot
    initialise); with a CPU-only torch build it fails as well (reported in DESIGN.md, not re-checked
    here: torch's "not compiled with CUDA" error). The forward pass already uses stream 0 for CPU
    tensors, so the shim makes the getter return 0 whenever CUDA is unavailable -- then no tensor can be on a GPU, and 0 is exactly what the CPU path expects. With a
    GPU present the original getter is used unchanged. Only the name bound in ``spconv.pytorch.ops``
    is replaced: every other call site in spconv 2.3.8 is guarded by ``features.is_cuda``.

(b) Bias in inference on CPU. spconv adds the bias itself in training mode, but in eval mode it passes
    the bias to its fused kernel, which asserts "cpu don't support act and bias" for CPU tensors. The
    classes below are spconv's own conv classes (same ``weight`` of shape [out, kD, kH, kW, in] and
    ``bias`` [out], same initialisation, hence exactly the same state-dict keys and checkpoints as
    spconv's and OpenPCDet's modules) whose forward runs the convolution without bias and then adds
    the bias to the output features, on every device and in both modes -- one behaviour everywhere,
    at the cost of one extra (N, C) addition on the GPU in eval mode.

(c) A data race in the CPU convolution. With more than one torch CPU thread, spconv's CPU
    gather-GEMM-scatter (``spconv.pytorch.ops.indice_conv``) returns wrong values for a few output
    rows now and then: a submanifold 3x3x3 conv on 60 random voxels disagreed with the dense
    ``F.conv3d`` reference in 6 of 30 runs with 2 threads and in 0 of 30 with one thread; running only
    the rule (pair) generation single-threaded did not help (15 of 40 wrong), running only
    ``indice_conv`` single-threaded did (0 of 40). So on CPU tensors ``indice_conv`` runs with
    ``torch.set_num_threads(1)`` (restored afterwards). ``indice_conv_backward`` showed no wrong
    input gradient in 30 multi-threaded runs of a strided conv, but it goes through the same CPU
    gather/scatter code, so it is wrapped the same way as a precaution. The GEMMs inside then
    run on one core too; on the shared 2-core development machine (load ~3.5) VoxelBackBone8x
    forward + backward on 20k voxels took 3.6-5.5 s with the shim against 10-18 s without it, so
    here correctness cost no speed. On many-core CPUs it may; CUDA tensors
    are not affected.

``install_spconv_cpu_shims()`` installs (a) and (c), idempotently; every conv class below calls it
when constructed, so a model built from this module trains on CPU without the caller knowing.
"""
from __future__ import annotations

import functools
import threading
from typing import Callable

import spconv.pytorch as spconv
import spconv.pytorch.ops as spconv_ops
import torch

__all__ = [
    "install_spconv_cpu_shims",
    "spconv_cpu_shims_installed",
    "SubMConv3d",
    "SparseConv3d",
    "SparseInverseConv3d",
]

_ORIGINAL_GET_CURRENT_STREAM = spconv_ops.get_current_stream
_ORIGINAL_INDICE_CONV = spconv_ops.indice_conv
_ORIGINAL_INDICE_CONV_BACKWARD = spconv_ops.indice_conv_backward
_install_lock = threading.Lock()


def _current_stream_or_zero() -> int:
    """spconv's stream getter, except on machines where CUDA cannot be used: stream 0 (CPU path)."""
    if torch.cuda.is_available():
        return _ORIGINAL_GET_CURRENT_STREAM()
    return 0


def _single_threaded_on_cpu(op: Callable) -> Callable:
    """Run a spconv op whose first argument is the feature tensor with one CPU thread (see (c))."""

    @functools.wraps(op)
    def wrapper(features: torch.Tensor, *args, **kwargs):
        if features.is_cuda:
            return op(features, *args, **kwargs)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return op(features, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    wrapper.pointmae_shim = True
    return wrapper


_INDICE_CONV_SHIM = _single_threaded_on_cpu(_ORIGINAL_INDICE_CONV)
_INDICE_CONV_BACKWARD_SHIM = _single_threaded_on_cpu(_ORIGINAL_INDICE_CONV_BACKWARD)


def install_spconv_cpu_shims() -> None:
    """Make spconv correct and trainable without a GPU ((a) and (c) in the module docstring). Idempotent.

    spconv's autograd functions look these names up in ``spconv.pytorch.ops`` at call time, so
    replacing the module attributes is enough.
    """
    with _install_lock:
        spconv_ops.get_current_stream = _current_stream_or_zero
        spconv_ops.indice_conv = _INDICE_CONV_SHIM
        spconv_ops.indice_conv_backward = _INDICE_CONV_BACKWARD_SHIM


def spconv_cpu_shims_installed() -> bool:
    return (spconv_ops.get_current_stream is _current_stream_or_zero and spconv_ops.indice_conv is _INDICE_CONV_SHIM
            and spconv_ops.indice_conv_backward is _INDICE_CONV_BACKWARD_SHIM)


class _BiasOutsideConv:
    """Mixin for spconv conv classes: convolve without bias, then add the bias (see (b) above)."""

    def forward(self, input: spconv.SparseConvTensor,
                add_input: spconv.SparseConvTensor | None = None) -> spconv.SparseConvTensor:
        out = self._conv_forward(self.training, input, self.weight, None, add_input,
                                 name=self.name, sparse_unique_name=self._sparse_unique_name,
                                 act_type=self.act_type, act_alpha=self.act_alpha, act_beta=self.act_beta)
        if self.bias is None:
            return out
        return out.replace_feature(out.features + self.bias)  # (N_out, C_out) + (C_out,)


class SubMConv3d(_BiasOutsideConv, spconv.SubMConv3d):
    """Submanifold sparse conv (output sites = input sites); state dict identical to spconv's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0,
                 bias: bool = True, indice_key: str | None = None):
        install_spconv_cpu_shims()
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                         indice_key=indice_key)


class SparseConv3d(_BiasOutsideConv, spconv.SparseConv3d):
    """Regular sparse conv (dilates the active set; strided convs down-sample); spconv's state dict."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0,
                 bias: bool = True, indice_key: str | None = None):
        install_spconv_cpu_shims()
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                         indice_key=indice_key)


class SparseInverseConv3d(_BiasOutsideConv, spconv.SparseInverseConv3d):
    """Inverse of the SparseConv3d that shares ``indice_key`` (decoders); spconv's state dict."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 indice_key: str, bias: bool = True):
        install_spconv_cpu_shims()
        super().__init__(in_channels, out_channels, kernel_size, indice_key=indice_key, bias=bias)
