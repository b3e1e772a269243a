"""A cost model: predict a mode's step time from its ops' shapes and a device's measured rates.

Torch-free: it reads an op census (``capture/census.py``: every ATen op of one step with its
inputs' shapes, strides and dtypes, the module calls and autograd nodes) and a device model —
measured on this machine (``capture/devicebench.py``: the time of each distinct matmul shape,
the memory throughput of each class of op, the cost of dispatching an op, calling a module,
running an autograd node) or taken from a table of GPUs (``GPUS``: peak FLOP/s, HBM bandwidth,
launch and dispatch cost) — and adds up:

- matmuls: the measured time of the same shape (or, for a shape not measured, the nearest
  measured one scaled by FLOPs); on a GPU table, FLOPs at a shape-dependent fraction of the peak,
  or bytes at the bandwidth, whichever is slower;
- every other op: the bytes it reads and writes at its class's measured throughput (elementwise,
  random numbers, transcendental functions, reductions, softmax, indexing, copies, the
  optimizer's foreach ops);
- overheads: each dispatched op, each view, each module call, each autograd node;
- on a GPU, each op costs at least its launch: the step is the sum over ops of
  max(GPU time, CPU launch time) — small ops are launch-bound.

``predict`` returns the step time and its parts per phase. Nothing here is fitted to the step
times it predicts.
"""

from __future__ import annotations

import math
from typing import Optional

from .names import BASE_MODES

MATMUL = frozenset({"mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
                    "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_efficient_attention",
                    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention_backward",
                    "_scaled_dot_product_flash_attention_backward", "convolution", "convolution_backward",
                    "_addmm_activation"})
CLASSES = {
    "random": ("bernoulli_", "bernoulli", "uniform_", "normal_", "random_", "rand", "randn", "native_dropout",
               "rand_like", "randn_like", "exponential_"),
    "transcendental": ("exp", "exp_", "log", "silu", "silu_", "gelu", "tanh", "sigmoid", "rsqrt", "sqrt", "pow",
                       "sin", "cos", "erf", "silu_backward", "gelu_backward", "tanh_backward", "sigmoid_backward",
                       "softplus", "log1p", "_foreach_sqrt", "reciprocal", "exp2"),
    "softmax": ("_softmax", "_log_softmax", "_softmax_backward_data", "_log_softmax_backward_data",
                "nll_loss_forward", "nll_loss_backward", "nll_loss2d_forward", "nll_loss2d_backward"),
    "reduction": ("sum", "mean", "amax", "max", "min", "norm", "var", "std", "linalg_vector_norm", "_foreach_norm",
                  "native_layer_norm", "native_layer_norm_backward", "prod", "any", "all", "argmax"),
    "index": ("embedding", "embedding_dense_backward", "index_select", "gather", "scatter", "scatter_add",
              "index_add", "index", "index_put_", "index_put", "scatter_", "masked_scatter"),
    "copy": ("copy_", "clone", "_to_copy", "cat", "stack", "fill_", "zero_", "zeros", "zeros_like", "ones_like",
             "full", "full_like", "new_zeros", "new_ones", "ones", "new_empty_strided", "arange", "tril", "triu"),
}
_CLASS_OF = {op: cls for cls, ops in CLASSES.items() for op in ops}
ALLOC = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "resize_", "set_"})
ELEM = {"float32": 4, "float": 4, "float64": 8, "bfloat16": 2, "float16": 2, "half": 2, "int64": 8, "int32": 4,
        "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "complex64": 8}

# Datasheet peaks (dense bf16 tensor TFLOP/s, fp32 non-tensor TFLOP/s, HBM TB/s) and typical
# eager-PyTorch costs: the CUDA launch (us) and the CPU's dispatch of one op (us).
GPUS = {
    "A100": {"bf16_tflops": 312.0, "fp32_tflops": 19.5, "tf32_tflops": 156.0, "bandwidth_tbs": 2.039,
             "launch_us": 4.0, "dispatch_us": 8.0},
    "H100": {"bf16_tflops": 989.0, "fp32_tflops": 67.0, "tf32_tflops": 495.0, "bandwidth_tbs": 3.35,
             "launch_us": 3.5, "dispatch_us": 7.0},
    "H200": {"bf16_tflops": 989.0, "fp32_tflops": 67.0, "tf32_tflops": 495.0, "bandwidth_tbs": 4.8,
             "launch_us": 3.5, "dispatch_us": 7.0},
}


def op_class(op: str) -> str:
    """matmul | view | alloc | foreach | one of CLASSES | elementwise."""
    if op in MATMUL:
        return "matmul"
    if op in _CLASS_OF:
        return _CLASS_OF[op]
    if op in ALLOC:
        return "alloc"
    if op.startswith("_foreach_"):
        return "foreach"
    return "elementwise"


def _extent(sig) -> int:
    """Elements a tensor input spans (a broadcast dimension, stride 0, counts once)."""
    if isinstance(sig, dict):  # a list of tensors (foreach ops)
        return int(sig["numel"])
    shape, strides, _ = sig
    n = 1
    for d, s in zip(shape, strides):
        if s != 0:
            n *= d
    return n


def _elem(sig) -> int:
    return ELEM.get(sig["dtype"] if isinstance(sig, dict) else sig[2], 4)


def op_bytes(entry: dict) -> float:
    """Bytes an op reads and writes (its tensor inputs and outputs, once each)."""
    return float(sum(_extent(s) * _elem(s) for s in entry["inputs"] + entry["outputs"]))


def op_flops(entry: dict) -> float:
    """Multiply-adds x 2 of a matmul-class op from its inputs' shapes (0 when unknown)."""
    op = entry["op"]
    mats = [s[0] for s in entry["inputs"] if isinstance(s, list)]
    try:
        if op in ("mm", "_addmm_activation") or (op == "addmm" and len(mats) >= 3):
            (m, k), (_, n) = mats[-2], mats[-1]
            return 2.0 * m * k * n
        if op in ("bmm", "baddbmm"):
            (b, m, k), (_, _, n) = mats[-2], mats[-1]
            return 2.0 * b * m * k * n
        if op.startswith("_scaled_dot_product"):
            q, k_ = mats[0], mats[1]
            bh = math.prod(q[:-2])
            f = 4.0 * bh * q[-2] * k_[-2] * q[-1]
            return f * (2.5 if op.endswith("backward") else 1.0)
        if op == "convolution":
            out = entry["outputs"][0][0]
            w = mats[1]
            return 2.0 * math.prod(out) * math.prod(w[1:])
        if op == "convolution_backward":
            w = mats[2] if len(mats) > 2 else mats[-1]
            g = mats[0]
            return 4.0 * math.prod(g) * math.prod(w[1:])
    except (ValueError, IndexError, TypeError):
        return 0.0
    return 0.0


def _matmul_key(entry: dict) -> str:
    return repr((entry["op"], [s for s in entry["inputs"] if isinstance(s, list)]))


def _matmul_time_us(entry: dict, device: dict) -> float:
    """Measured time of this matmul's shape, else the nearest measured one scaled by FLOPs."""
    table = device.get("_matmul_index")
    if table is None:
        table = device["_matmul_index"] = {m["key"]: m for m in device.get("matmul") or []}
    hit = table.get(_matmul_key(entry))
    if hit:
        return float(hit["us"])
    f = op_flops(entry)
    cands = [m for m in table.values() if m.get("flops")]
    if not cands or not f:
        return op_bytes(entry) / (device["classes"]["elementwise"]["gbs"] * 1e3)
    near = min(cands, key=lambda m: abs(math.log(m["flops"]) - math.log(f)))
    return float(near["us"]) * f / near["flops"]


def _gpu_op_us(entry: dict, gpu: dict, dtype: str) -> float:
    """GPU time of one op from the table: FLOPs at a size-dependent share of the peak, or bytes at
    the bandwidth, whichever takes longer."""
    nbytes = op_bytes(entry)
    mem_us = nbytes / (gpu["bandwidth_tbs"] * 1e12) * 1e6
    if op_class(entry["op"]) != "matmul":
        return mem_us / 0.8  # elementwise kernels reach ~80% of the bandwidth
    f = op_flops(entry)
    peak = gpu["bf16_tflops"] if dtype in ("bfloat16", "float16") else gpu["tf32_tflops"]
    dims = [d for s in entry["inputs"] if isinstance(s, list) for d in s[0][-2:]]
    small = min(dims) if dims else 1
    eff = 0.75 * min(1.0, small / 256.0) ** 0.5  # thin matmuls use a fraction of the tensor cores
    return max(f / (peak * 1e12 * max(eff, 0.02)) * 1e6, mem_us)


def predict(census: dict, device: dict) -> dict:
    """Predicted step time (s) of one mode's census on a device model (this machine's, or
    ``gpu_device(name)``): ``{"step_s", "by_phase": {phase: s}, "parts": {matmul_s, memory_s,
    dispatch_s, modules_s, nodes_s}}``."""
    gpu = device.get("gpu")
    parts = {"matmul_s": 0.0, "memory_s": 0.0, "dispatch_s": 0.0, "modules_s": 0.0, "nodes_s": 0.0}
    by_phase: dict = {}
    dtype = device.get("dtype") or _census_dtype(census)
    for e in census["ops"]:
        cls = op_class(e["op"])
        n = e["count"]
        if gpu is not None:
            cpu = device["view_us"] if e.get("view") or cls in ("view", "alloc") else device["dispatch_us"]
            gpu_us = 0.0 if e.get("view") or cls == "alloc" else _gpu_op_us(e, gpu, dtype)
            launch = 0.0 if e.get("view") or cls == "alloc" else gpu["launch_us"]
            us = max(gpu_us + 0.0, cpu + launch)  # an op is launch-bound or GPU-bound
            key = "matmul_s" if cls == "matmul" else ("memory_s" if gpu_us >= cpu + launch else "dispatch_s")
        elif e.get("view") or cls == "alloc":
            us, key = device["view_us"], "dispatch_s"
        else:
            if cls == "matmul":
                us, key = _matmul_time_us(e, device), "matmul_s"
            else:
                rate = device["classes"].get(cls) or device["classes"]["elementwise"]
                us, key = op_bytes(e) / (rate["gbs"] * 1e3), "memory_s"
            parts["dispatch_s"] += n * device["dispatch_us"] * 1e-6
            by_phase[e["phase"]] = by_phase.get(e["phase"], 0.0) + n * device["dispatch_us"] * 1e-6
        parts[key] += n * us * 1e-6
        by_phase[e["phase"]] = by_phase.get(e["phase"], 0.0) + n * us * 1e-6
    parts["modules_s"] = census.get("module_calls", 0) * device["module_call_us"] * 1e-6
    parts["nodes_s"] = census.get("nodes", 0) * device["node_us"] * 1e-6
    by_phase["forward"] = by_phase.get("forward", 0.0) + parts["modules_s"]
    by_phase["backward"] = by_phase.get("backward", 0.0) + parts["nodes_s"]
    return {"step_s": sum(parts.values()), "by_phase": by_phase, "parts": parts}


def _census_dtype(census: dict) -> str:
    for e in census["ops"]:
        if op_class(e["op"]) == "matmul":
            for s in e["inputs"]:
                if isinstance(s, list):
                    return s[2]
    return "float32"


def gpu_device(name: str, dtype: Optional[str] = None) -> dict:
    """A device model for a GPU of the table (no measurement): ``predict(census, gpu_device("A100"))``.

    Raises:
        KeyError: the GPU is not in ``GPUS``.
    """
    g = GPUS[name]
    return {"gpu": g, "name": name, "dtype": dtype, "dispatch_us": g["dispatch_us"], "view_us": 1.5,
            "module_call_us": 4.0, "node_us": 6.0, "classes": {}}


def advise(rows: list) -> Optional[str]:
    """One line from ``[{"mode", "measured_s", "predicted_s"}]``: the fastest strategy against LoRA,
    like with like: measured against measured LoRA where it ran, else predicted against predicted."""
    lora = next((r for r in rows if r["mode"] == "lora"), None)
    cands = [r for r in rows if r["mode"] not in BASE_MODES]
    if not lora or not cands:
        return None

    def gain(r):
        key = "measured_s" if r.get("measured_s") and lora.get("measured_s") else "predicted_s"
        return (lora[key] / r[key], "measured" if key == "measured_s" else "predicted") \
            if r.get(key) and lora.get(key) else (0.0, "")

    best = max(cands, key=lambda r: gain(r)[0])
    g, how = gain(best)
    if not g:
        return None
    if g < 1.03:
        return f"no strategy beats LoRA by more than 3% here ({how}); keep LoRA, or check the quality task"
    return (f"{best['mode']} is {g:.2f}x faster than LoRA ({how}); check its quality beside its speed "
            "(analyses/quality_pareto.py) before switching")
