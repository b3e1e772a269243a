"""Give every op and kernel of one of our traces its role on the LoRA path.

Reads the ``lp/`` scopes the capture hooks record (docs/FORMAT.md):

- a forward op's role comes from its innermost scope;
- a backward op's role comes from the scope of the forward op that created its autograd node
  (``Sequence number`` link), since backward runs outside the module scopes;
- the phase (forward, backward, optimizer, zero_grad) of any op comes from the ``lp/phase/``
  windows of its process, by time, so backward ops on an autograd worker thread get one too.

Roles: ``base`` (the adapted layer's frozen base layer), ``lora_A``, ``lora_B``, ``dropout``,
``scale_add`` (explicit scope, or ops directly in the adapted layer's scope outside its parts),
``module`` (any other module), ``none`` (outside every module: loss, optimizer, grad
accumulation). Layers without a base module (torchtune) have their base matmul in the layer's
own scope: matmul-like ops there are ``base``, the rest ``scale_add``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..events import Trace

PHASES = ("forward", "backward", "optimizer", "zero_grad")
ROLES = ("none", "module", "base", "dropout", "lora_A", "lora_B", "scale_add")
ADAPTER_ROLES = ("dropout", "lora_A", "lora_B", "scale_add")
MATMUL_ROLES = ("lora_A", "lora_B")
MATMUL_LEAF_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
_MATMUL_LIKE = MATMUL_LEAF_OPS | {"aten::linear", "aten::matmul", "aten::_addmm_activation"}
_PART_ROLE = {"base": "base", "dropout": "dropout", "lora_A": "lora_A", "lora_B": "lora_B",
              "scale_add": "scale_add"}


@dataclass(frozen=True)
class Roles:
    """Per-row labels of one trace (all arrays aligned with the trace's tables).

    Attributes:
        layers: adapted layer paths, in first-seen order.
        op_role, kernel_role: (ops,) / (kernels,) int8 index into ROLES.
        op_phase, kernel_phase: int8 index into PHASES, -1 outside every phase window.
        op_layer, kernel_layer: int32 index into ``layers``, -1 when not on an adapted layer.
        op_root: (ops,) bool — the outermost op of its (role, layer) region: summing the
            durations of roots counts each region's time once.
        op_leaf: (ops,) bool — no op nested inside it (the work that reaches a kernel).
        scope_layer, scope_part: per scope, the adapted layer index and part ('' = the layer's
            own scope, None = not an adapter scope).
    """

    layers: list
    op_role: np.ndarray
    op_phase: np.ndarray
    op_layer: np.ndarray
    op_root: np.ndarray
    op_leaf: np.ndarray
    kernel_role: np.ndarray
    kernel_phase: np.ndarray
    kernel_layer: np.ndarray
    scope_layer: np.ndarray
    scope_part: list
    scope_phase: np.ndarray  # (scopes,) int8 phase index for lp/phase/ scopes, else -1

    def role_mask(self, roles, kernels: bool = False) -> np.ndarray:
        """Rows whose role is one of ``roles``."""
        ids = [ROLES.index(r) for r in roles]
        return np.isin(self.kernel_role if kernels else self.op_role, ids)


def _parse_scopes(trace: Trace):
    """Per scope: phase index, adapted-layer index and part, module flag."""
    n = len(trace.scopes.name)
    phase = np.full(n, -1, dtype=np.int8)
    layer = np.full(n, -1, dtype=np.int32)
    part: list = [None] * n
    is_module = np.zeros(n, dtype=bool)
    layers: list = []
    index: dict = {}
    for i, nid in enumerate(trace.scopes.name):
        name = trace.names[nid]
        kind, _, rest = name[3:].partition("/")  # strip "lp/"
        if kind == "phase":
            if rest in PHASES:
                phase[i] = PHASES.index(rest)
        elif kind == "adapter":
            path, _, p = rest.partition("#")
            if path not in index:
                index[path] = len(layers)
                layers.append(path)
            layer[i] = index[path]
            part[i] = p
        elif kind == "module":
            is_module[i] = True
    return phase, layer, part, is_module, layers


def _phase_by_time(trace: Trace, scope_phase: np.ndarray, ts: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """(rows,) phase index of each timestamp: the phase window of the same process holding it."""
    out = np.full(ts.shape, -1, dtype=np.int8)
    sc = trace.scopes
    sel = np.flatnonzero(scope_phase >= 0)
    for p in np.unique(sc.pid[sel]):
        win = sel[sc.pid[sel] == p]
        win = win[np.argsort(sc.ts_us[win], kind="stable")]
        start, end = sc.ts_us[win], sc.ts_us[win] + sc.dur_us[win]  # (windows,) us
        rows = np.flatnonzero(pid == p)
        k = np.searchsorted(start, ts[rows], side="right") - 1  # last window starting before
        ok = (k >= 0) & (ts[rows] <= end[np.maximum(k, 0)])
        out[rows[ok]] = scope_phase[win[k[ok]]]
    return out


def assign_roles(trace: Trace) -> Roles:
    """Label every op and kernel of ``trace`` (one of ours: it must hold ``lp/`` scopes)."""
    ops, kernels = trace.ops, trace.kernels
    scope_phase, scope_layer, scope_part, scope_module, layers = _parse_scopes(trace)
    ns = len(scope_part)

    # Role and layer per scope.
    scope_role = np.zeros(ns, dtype=np.int8)
    has_base = set(int(scope_layer[i]) for i in range(ns) if scope_part[i] == "base")
    for i in range(ns):
        if scope_module[i]:
            scope_role[i] = ROLES.index("module")
        elif scope_part[i] is not None:
            role = _PART_ROLE.get(scope_part[i]) if scope_part[i] else "scale_add"
            scope_role[i] = ROLES.index(role or "module")
    # A forward op's role comes from its own innermost scope (phase scopes carry no role).
    own = ops.scope
    if ns:
        own = np.where((own >= 0) & (scope_phase[np.maximum(own, 0)] >= 0), -1, own)
    op_role = np.where(own >= 0, scope_role[np.maximum(own, 0)] if ns else 0, 0).astype(np.int8)
    op_layer = np.where(own >= 0, scope_layer[np.maximum(own, 0)] if ns else -1, -1).astype(np.int32)
    # Layers without a base module (torchtune): matmul-like ops in the layer's own scope, and
    # everything nested in them, are the base.
    if ns:
        in_layer_scope = np.array([p == "" for p in scope_part] + [False])[np.where(own >= 0, own, ns)]
        no_base = ~np.isin(op_layer, list(has_base)) & in_layer_scope
        if no_base.any():
            matmul_ids = [i for i, n in enumerate(trace.names) if n in _MATMUL_LIKE]
            base_rows = no_base & np.isin(ops.name, matmul_ids)
            under = np.zeros(len(ops.name), dtype=bool)
            for _ in range(8):  # a few nesting levels: linear -> matmul -> mm
                under = np.where(ops.parent >= 0, (base_rows | under)[np.maximum(ops.parent, 0)], False)
            op_role[no_base & (base_rows | under)] = ROLES.index("base")
    # A backward op takes the role of the forward op that created its autograd node.
    bw = np.flatnonzero(ops.is_backward & (ops.fwd_op >= 0))
    op_role[bw] = op_role[ops.fwd_op[bw]]
    op_layer[bw] = op_layer[ops.fwd_op[bw]]

    region = op_role.astype(np.int64) * (len(layers) + 1) + (op_layer + 1)
    parent = ops.parent
    op_root = (parent < 0) | (region[np.maximum(parent, 0)] != region)
    op_leaf = np.ones(len(ops.name), dtype=bool)
    op_leaf[parent[parent >= 0]] = False

    op_phase = _phase_by_time(trace, scope_phase, ops.ts_us, ops.pid)
    has_op = kernels.op >= 0
    kop = np.maximum(kernels.op, 0)
    kernel_role = np.where(has_op, op_role[kop] if len(op_role) else 0, 0).astype(np.int8)
    kernel_layer = np.where(has_op, op_layer[kop] if len(op_layer) else -1, -1).astype(np.int32)
    kernel_phase = np.where(has_op, op_phase[kop] if len(op_phase) else -1, -1).astype(np.int8)
    return Roles(layers=layers, op_role=op_role, op_phase=op_phase, op_layer=op_layer,
                 op_root=op_root, op_leaf=op_leaf, kernel_role=kernel_role,
                 kernel_phase=kernel_phase, kernel_layer=kernel_layer, scope_layer=scope_layer,
                 scope_part=scope_part, scope_phase=scope_phase)
