"""Trace-schema knowledge in one place: event categories, launch APIs, kernel kinds.

Kineto has written several schemas over the years; everything that differs between them is
mapped here and nowhere else:

- categories: ``cpu_op`` (2022+) / ``Operator`` (2021 legacy), ``cuda_runtime`` and
  ``cuda_driver`` / ``Runtime``, ``kernel`` / ``Kernel``, ``gpu_memcpy`` / ``Memcpy``,
  ``gpu_memset`` / ``Memset``; ``user_annotation`` (record_function ranges; in the legacy schema
  these are ``Operator`` events, recognised by name), ``gpu_user_annotation``.
- launch APIs: CUDA runtime (``cudaLaunchKernel``, ``cudaLaunchKernelExC``, ...), CUDA driver
  (``cuLaunchKernel``, ``cuLaunchKernelEx``), HIP (``hipLaunchKernel``,
  ``hipExtModuleLaunchKernel``, ``hipModuleLaunchKernel``, ...), and memcpy/memset calls.
- arg spellings: ``External id`` (2022+) / ``external id`` (legacy).
- time unit: Chrome-trace ``ts``/``dur`` are microseconds in every schema. ``displayTimeUnit``
  ("ns" or "ms") only sets how a viewer displays them; the "ns" traces store microseconds with
  a fractional part (checked on hta/ns_resolution_v100: dur 63.813 for a 64 us op), so no
  scaling is applied.
"""

from __future__ import annotations

import re
from typing import Dict, Tuple

from ..names import SCOPE_PREFIX

# --- event classes the loader keeps (values of the per-event dispatch) -----------------------
OP, ANNOTATION, RUNTIME, GPU_ANNOTATION, GPU = 1, 2, 3, 4, 8  # GPU + category: 8, 9, 10

# GPU activity category, stored in ``Kernels.cat``.
CAT_KERNEL, CAT_MEMCPY, CAT_MEMSET = 0, 1, 2
GPU_CAT_NAMES: Tuple[str, ...] = ("kernel", "memcpy", "memset")

# Complete-event ('X') categories -> (event class, GPU cat or -1).
X_CATEGORIES: Dict[str, Tuple[int, int]] = {
    "cpu_op": (OP, -1),
    "Operator": (OP, -1),                    # legacy 2021
    "user_annotation": (ANNOTATION, -1),
    "cuda_runtime": (RUNTIME, -1),
    "Runtime": (RUNTIME, -1),                # legacy 2021
    "cuda_driver": (RUNTIME, -1),
    "kernel": (GPU, CAT_KERNEL),
    "Kernel": (GPU, CAT_KERNEL),             # legacy 2021
    "gpu_memcpy": (GPU, CAT_MEMCPY),
    "Memcpy": (GPU, CAT_MEMCPY),             # legacy 2021
    "gpu_memset": (GPU, CAT_MEMSET),
    "Memset": (GPU, CAT_MEMSET),             # legacy 2021
    "gpu_user_annotation": (GPU_ANNOTATION, -1),
}

MEMORY_EVENT_NAME = "[memory]"   # instant event written by profile_memory=True
STEP_PREFIX = "ProfilerStep#"    # written by torch.profiler.profile.step()
DEFAULT_SCOPE_PREFIX = SCOPE_PREFIX  # our record_function scopes (names.py, docs/FORMAT.md)
BACKWARD_PREFIX = "autograd::engine::evaluate_function:"

# Runtime/driver calls that put work on a GPU queue. A runtime call with a correlated GPU
# activity counts as a launch whatever its name; these count even without one.
LAUNCH_APIS = frozenset({
    "cudaLaunchKernel", "cudaLaunchKernelExC", "cudaLaunchKernelEx",
    "cudaLaunchCooperativeKernel", "cudaLaunchCooperativeKernelMultiDevice",
    "cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel",
    "cudaGraphLaunch", "cuGraphLaunch",
    "cudaMemcpy", "cudaMemcpyAsync", "cudaMemcpy2D", "cudaMemcpy2DAsync",
    "cudaMemcpyPeer", "cudaMemcpyPeerAsync", "cudaMemcpyToSymbol", "cudaMemcpyFromSymbol",
    "cudaMemset", "cudaMemsetAsync", "cudaMemset2DAsync",
    "hipLaunchKernel", "hipExtLaunchKernel", "hipExtModuleLaunchKernel",
    "hipModuleLaunchKernel", "hipLaunchCooperativeKernel", "hipGraphLaunch",
    "hipMemcpy", "hipMemcpyAsync", "hipMemcpyWithStream", "hipMemcpy2DAsync",
    "hipMemcpyDtoDAsync", "hipMemcpyHtoDAsync", "hipMemcpyDtoHAsync",
    "hipMemset", "hipMemsetAsync", "hipMemsetD32Async",
})

# --- kernel kinds -----------------------------------------------------------------------------
K_GEMM, K_ELEMENTWISE, K_REDUCTION, K_MEMCPY, K_MEMSET, K_COMMUNICATION, K_OTHER = range(7)
KIND_NAMES: Tuple[str, ...] = ("gemm", "elementwise", "reduction", "memcpy", "memset",
                               "communication", "other")

# Rules, first match wins, on the kernel name (a heuristic; unknown names fall to "other").
# "gemm" covers every matrix-multiply-bound kernel: cuBLAS/cuBLASLt (sgemm, nvjet, cutlass,
# xmma), hipBLASLt/Tensile (Cijk_), rocBLAS, triton matmul templates, convolutions (implicit
# GEMMs in cuDNN/MIOpen) and fused attention. Normalisations and softmax are reductions; fused
# optimizer updates (multi_tensor_apply) are elementwise.
_KIND_RULES = (
    (K_COMMUNICATION, r"nccl|rccl|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|"
                      r"sendrecv|c10d"),
    (K_ELEMENTWISE, r"elementwise|pointwise|triton_poi|multi_tensor_apply"),
    (K_REDUCTION, r"batch_?norm|layer_?norm|group_?norm|rms_?norm|bn_fw|bn_bw|softmax|"
                  r"reduce|reduction|argmax|argmin|topk|sort|scan|cumsum|cross_entropy|"
                  r"nll_loss|classnll|triton_red|triton_per|welford|radix|histogram|pool|"
                  r"moments|gammabeta"),
    (K_GEMM, r"gemm|gemv|cutlass|cublas|nvjet|xmma|wgmma|hmma|\bcijk_|rocblas|hipblaslt|"
             r"matmul|triton_mm|triton_tem|bmm|dot_kernel|convolution|convolve|conv2d|"
             r"conv3d|cudnn|miopen|wgrad|dgrad|fprop|flash|fmha|attention|attn|sdpa"),
    (K_REDUCTION, r"\bsum|_sum|mean|embedding_backward"),
    (K_ELEMENTWISE, r"vectorized|unrolled|fill|copy|catarray|cat_|index|gather|scatter|where|"
                    r"dropout|activation|relu|gelu|silu|sigmoid|tanh|add|mul|div|pow|exp|"
                    r"transpose|permute|cast|amd_rocclr"),
)
_KIND_RES: list = []   # compiled on first use: CPU-only runs never need them


def kernel_kind(name: str, cat: int = CAT_KERNEL) -> int:
    """Kind code (index into ``KIND_NAMES``) of one GPU activity, from its category and name."""
    if cat == CAT_MEMCPY:
        return K_MEMCPY
    if cat == CAT_MEMSET:
        return K_MEMSET
    if not _KIND_RES:
        _KIND_RES.extend((k, re.compile(p, re.IGNORECASE)) for k, p in _KIND_RULES)
    for kind, rx in _KIND_RES:
        if rx.search(name):
            return kind
    return K_OTHER
