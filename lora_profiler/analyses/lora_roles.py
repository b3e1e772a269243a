"""Give every op and kernel of one of our traces its role: which cause its time belongs to.

Reads the scopes the capture hooks record (docs/FORMAT.md, names in ``lora_profiler.names``,
with the trace's own scope prefix):

- a forward op's role comes from its innermost scope;
- a backward op's role comes from the scope of the forward op that created its autograd node
  (``Sequence number`` link), since backward runs outside the module scopes;
- the phase (forward, backward, optimizer, zero_grad) of any op comes from the phase windows of
  its process, by time, so backward ops on an autograd worker thread get one too.

Roles (``ROLES``):

- ``none``   outside every module scope (loss, optimizer);
- ``module`` any module that is not an adapted layer; ``base`` an adapted layer's frozen base;
- the adapter path: ``dropout``, ``lora_A``, ``lora_B``, ``scale`` (the multiply by alpha/r),
  ``add`` (the sum with the base output) and ``adapter_other`` (anything else the adapted layer
  runs outside its parts: dtype casts), ``dora`` (PEFT's DoRA module: the magnitude and the
  weight norm, lora_A/lora_B called inside it keep their own roles);
- ``accumulate_grad`` autograd's AccumulateGrad nodes (gradients into leaves: trainable weights,
  or the frozen floor's input embedding output);
- ``engine`` the autograd engine's own ops between nodes: summing the gradients of a tensor used
  more than once (an adapted layer's input feeds the base and the adapter path), output casts;
- ``weight_grad`` the weight-gradient matmuls of trainable base weights (full fine-tuning), found
  by their output shape among the trainable weights' shapes.

A role holds for an op and everything nested in it. Time is counted exclusively (each op's self
time goes to its role), so nested ops of another role are never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from ..events import Trace, parse_dims
from ..events.schema import BACKWARD_PREFIX
from ..names import PHASES as STEP_PHASES
from ..names import TRACED_PHASES, parse_scope

# Phase indices here follow this order (forward first); names.PHASES lists them in run order.
PHASES = TRACED_PHASES + tuple(p for p in STEP_PHASES if p not in TRACED_PHASES)
ROLES = ("none", "module", "base", "dropout", "lora_A", "lora_B", "scale", "add", "adapter_other", "dora",
         "accumulate_grad", "engine", "weight_grad")
ADAPTER_ROLES = ("dropout", "lora_A", "lora_B", "scale", "add", "adapter_other", "dora")
MATMUL_ROLES = ("lora_A", "lora_B")
MATMUL_LEAF_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
_MATMUL_LIKE = MATMUL_LEAF_OPS | {"aten::linear", "aten::matmul", "aten::_addmm_activation"}
_SCALE_OPS = frozenset({"aten::mul", "aten::mul_", "aten::div", "aten::div_"})
_ADD_OPS = frozenset({"aten::add", "aten::add_"})
ACCUMULATE_GRAD = BACKWARD_PREFIX + " torch::autograd::AccumulateGrad"
_PART_ROLE = {"base": "base", "dropout": "dropout", "lora_A": "lora_A", "lora_B": "lora_B", "dora": "dora"}
R = {name: i for i, name in enumerate(ROLES)}


@dataclass(frozen=True)
class Roles:
    """Per-row labels of one trace (all arrays aligned with the trace's tables).

    Attributes:
        layers: adapted layer paths, in first-seen order.
        op_role, kernel_role: (ops,) / (kernels,) int8 index into ROLES.
        op_phase, kernel_phase: int8 index into PHASES, -1 outside every phase window.
        op_layer, kernel_layer: int32 index into ``layers``, -1 when not on an adapted layer.
        op_root: (ops,) bool — the outermost op of its (role, layer) region.
        op_leaf: (ops,) bool — no op nested inside it (the work that reaches a kernel).
        scope_layer, scope_part: per scope, the adapted layer index and part ('' = the layer's
            own scope, None = not an adapter scope).
        scope_phase: (scopes,) int8 phase index for phase scopes, else -1.
        scope_kind: per scope, "phase" | "module" | "adapter" | "other".
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
    scope_phase: np.ndarray
    scope_kind: list

    def role_mask(self, roles: Iterable[str], kernels: bool = False) -> np.ndarray:
        """Rows whose role is one of ``roles``."""
        ids = [R[r] for r in roles]
        return np.isin(self.kernel_role if kernels else self.op_role, ids)


def _parse_scopes(trace: Trace):
    """Per scope: phase index, adapted-layer index, part, kind."""
    n = len(trace.scopes.name)
    phase = np.full(n, -1, dtype=np.int8)
    layer = np.full(n, -1, dtype=np.int32)
    part: list = [None] * n
    kind: list = ["other"] * n
    layers: list = []
    index: dict = {}
    prefix = trace.scope_prefix
    for i, nid in enumerate(trace.scopes.name.tolist()):
        parsed = parse_scope(trace.names[nid], prefix)
        if parsed is None:
            continue
        kind[i] = parsed.kind
        if parsed.kind == "phase":
            if parsed.path in PHASES:
                phase[i] = PHASES.index(parsed.path)
        elif parsed.kind == "adapter":
            if parsed.path not in index:
                index[parsed.path] = len(layers)
                layers.append(parsed.path)
            layer[i] = index[parsed.path]
            part[i] = parsed.part
    return phase, layer, part, kind, layers


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


def _inherit_down(values: np.ndarray, set_here: np.ndarray, parent: np.ndarray, depth: np.ndarray) -> None:
    """Give every op nested under a row with ``set_here`` that row's value (in place), level by
    level from the top, so the outermost marked ancestor wins."""
    if not len(depth):
        return
    marked = set_here.copy()
    order = np.argsort(depth, kind="stable")
    d = depth[order]
    bounds = np.searchsorted(d, np.arange(1, int(d[-1]) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = order[lo:hi]
        if not rows.size:
            continue
        par = parent[rows]
        take = (par >= 0) & marked[np.maximum(par, 0)] & ~set_here[rows]
        values[rows[take]] = values[par[take]]
        marked[rows[take]] = True


def _name_ids(trace: Trace, names) -> np.ndarray:
    return np.array([i for i, n in enumerate(trace.names) if n in names], dtype=np.int32)


def top_ancestor(parent: np.ndarray) -> np.ndarray:
    """(ops,) index of each op's outermost enclosing op (itself when top level)."""
    top = np.arange(len(parent))
    p = parent.copy()
    while (p >= 0).any():
        has = p >= 0
        top = np.where(has, p, top)
        p = np.where(has, parent[np.maximum(p, 0)], -1)
    return top


def weight_grad_mask(trace: Trace, is_bwd: np.ndarray, shapes: Optional[list]) -> np.ndarray:
    """(ops,) bool: backward matmuls computing the gradient of a trainable 2-D weight.

    ``shapes`` are the trainable tensors' shapes (facts ``trainable_shapes``: [[shape, count]]).
    A candidate is a backward mm/addmm whose output has a weight's shape (either orientation).
    A linear layer's input gradient has the activations' shape ([tokens, in]) and can match too
    when the tokens equal a weight dimension; then the weight gradient is the one contracting
    over the tokens (inner dimension not a dimension of its output), and when even that cannot
    tell, the first of the node's candidates (autograd computes the weight's gradient first).
    """
    ops = trace.ops
    out = np.zeros(len(ops.name), dtype=bool)
    weights = {tuple(s) for s, _ in (shapes or []) if len(s) == 2}
    if not weights:
        return out
    weights |= {(b, a) for a, b in weights}
    mm = np.flatnonzero(np.isin(ops.name, _name_ids(trace, MATMUL_LEAF_OPS)) & is_bwd)
    cand = []
    for i in mm.tolist():
        mats = [d for d in parse_dims(trace, i) if isinstance(d, list) and len(d) == 2]
        if len(mats) >= 2:
            (m, k), (_, n) = mats[-2], mats[-1]
            if (m, n) in weights:
                cand.append((i, k not in (m, n)))
    if not cand:
        return out
    node = top_ancestor(ops.parent)
    by_node: dict[int, list] = {}
    for i, clear in cand:
        by_node.setdefault(int(node[i]), []).append((i, clear))
    for rows in by_node.values():
        clear = [i for i, c in rows if c]
        keep = clear if clear else [min((i for i, _ in rows), key=lambda j: ops.ts_us[j])]
        out[keep] = True
    return out


def assign_roles(trace: Trace, weight_shapes: Optional[list] = None) -> Roles:
    """Label every op and kernel of ``trace`` (one of ours: it must hold our scopes).

    Args:
        trace: a trace recorded by ``python -m lora_profiler.trace`` (or with the same scopes).
        weight_shapes: the mode's trainable tensor shapes (facts ``trainable_shapes``); with them,
            backward matmuls producing a weight-shaped gradient get the ``weight_grad`` role.
    """
    ops, kernels = trace.ops, trace.kernels
    scope_phase, scope_layer, scope_part, scope_kind, layers = _parse_scopes(trace)
    ns = len(scope_part)
    n = len(ops.name)

    # Role per scope.
    scope_role = np.zeros(ns, dtype=np.int8)
    has_base = set(int(scope_layer[i]) for i in range(ns) if scope_part[i] == "base")
    for i in range(ns):
        if scope_kind[i] == "module":
            scope_role[i] = R["module"]
        elif scope_part[i] is not None:
            # the layer's own scope and #scale_add: split by op name below
            scope_role[i] = R[_PART_ROLE.get(scope_part[i], "adapter_other")]
    path_scope = np.array([p == "" or p == "scale_add" for p in scope_part] + [False])
    # A forward op's role comes from its own innermost scope (phase scopes carry no role).
    own = ops.scope
    if ns:
        own = np.where((own >= 0) & (scope_phase[np.maximum(own, 0)] >= 0), -1, own)
    op_role = np.where(own >= 0, scope_role[np.maximum(own, 0)] if ns else 0, 0).astype(np.int8)
    op_layer = np.where(own >= 0, scope_layer[np.maximum(own, 0)] if ns else -1, -1).astype(np.int32)
    parent = ops.parent
    if ns:
        in_path = path_scope[np.where(own >= 0, own, ns)]
        # outermost op of a path scope (its parent is outside the scope): classify by name
        head = in_path & ((parent < 0) | (own[np.maximum(parent, 0)] != own))
        names = np.array(trace.names, dtype=object)
        head_names = names[ops.name[head]] if head.any() else np.array([], dtype=object)
        cls = np.full(int(head.sum()), R["adapter_other"], dtype=np.int8)
        cls[np.isin(head_names, list(_SCALE_OPS))] = R["scale"]
        cls[np.isin(head_names, list(_ADD_OPS))] = R["add"]
        # torchtune: no base module, the base matmul sits in the layer's own scope
        no_base = ~np.isin(op_layer[head], list(has_base)) & np.isin(head_names, list(_MATMUL_LIKE))
        cls[no_base] = R["base"]
        op_role[head] = cls
        _inherit_down(op_role, head, parent, ops.depth)
    # A backward op takes the role of the forward op that created its autograd node.
    bw = np.flatnonzero(ops.is_backward & (ops.fwd_op >= 0))
    op_role[bw] = op_role[ops.fwd_op[bw]]
    op_layer[bw] = op_layer[ops.fwd_op[bw]]
    # Autograd's own work: AccumulateGrad nodes, and the engine's ops between nodes (children of
    # an evaluate_function that are not the node's function: gradient sums, casts).
    node_ids = set(_name_ids(trace, [s for s in trace.names if s.startswith(BACKWARD_PREFIX)]).tolist())
    is_node = np.isin(ops.name, list(node_ids)) if node_ids else np.zeros(n, dtype=bool)
    acc = np.isin(ops.name, _name_ids(trace, [ACCUMULATE_GRAD]))
    op_role[acc] = R["accumulate_grad"]
    _inherit_down(op_role, acc, parent, ops.depth)
    par_is_node = (parent >= 0) & is_node[np.maximum(parent, 0)]
    node_fn = np.array([s[len(BACKWARD_PREFIX):].strip() for s in trace.names], dtype=object)
    own_fn = par_is_node & (np.array(trace.names, dtype=object)[ops.name] == node_fn[ops.name[np.maximum(parent, 0)]])
    engine = par_is_node & ~own_fn & ~acc[np.maximum(parent, 0)]
    op_role[engine] = R["engine"]
    _inherit_down(op_role, engine, parent, ops.depth)
    # Weight gradients of trainable base weights (the adapters' own stay lora_A / lora_B).
    wg = weight_grad_mask(trace, ops.is_backward, weight_shapes)
    wg &= ~np.isin(op_role, [R[r] for r in ADAPTER_ROLES])
    op_role[wg] = R["weight_grad"]
    _inherit_down(op_role, wg, parent, ops.depth)
    # AccumulateGrad nodes belong to the layer whose node ran just before them.
    op_layer[acc] = _previous_layer(ops, op_layer, acc)

    region = op_role.astype(np.int64) * (len(layers) + 1) + (op_layer + 1)
    op_root = (parent < 0) | (region[np.maximum(parent, 0)] != region)
    op_leaf = np.ones(n, dtype=bool)
    op_leaf[parent[parent >= 0]] = False

    op_phase = _phase_by_time(trace, scope_phase, ops.ts_us, ops.pid)
    has_op = kernels.op >= 0
    kop = np.maximum(kernels.op, 0)
    kernel_role = np.where(has_op, op_role[kop] if n else 0, 0).astype(np.int8)
    kernel_layer = np.where(has_op, op_layer[kop] if n else -1, -1).astype(np.int32)
    kernel_phase = np.where(has_op, op_phase[kop] if n else -1, -1).astype(np.int8)
    return Roles(layers=layers, op_role=op_role, op_phase=op_phase, op_layer=op_layer,
                 op_root=op_root, op_leaf=op_leaf, kernel_role=kernel_role,
                 kernel_phase=kernel_phase, kernel_layer=kernel_layer, scope_layer=scope_layer,
                 scope_part=scope_part, scope_phase=scope_phase, scope_kind=scope_kind)


def _previous_layer(ops, op_layer: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(rows,) layer of the latest top-level op with a layer that ended before each row starts,
    on the same thread (-1 when none)."""
    out = np.full(int(rows.sum()), -1, dtype=np.int32)
    idx = np.flatnonzero(rows)
    if not idx.size:
        return out
    cand = np.flatnonzero(ops.is_top & (op_layer >= 0))
    key_c = ops.pid[cand] * 1_000_003 + ops.tid[cand]
    key_r = ops.pid[idx] * 1_000_003 + ops.tid[idx]
    for key in np.unique(key_r).tolist():
        c = cand[key_c == key]
        c = c[np.argsort(ops.ts_us[c] + ops.dur_us[c], kind="stable")]
        ends = ops.ts_us[c] + ops.dur_us[c]
        r = np.flatnonzero(key_r == key)
        pos = np.searchsorted(ends, ops.ts_us[idx[r]], side="right") - 1
        ok = pos >= 0
        out[r[ok]] = op_layer[c[pos[ok]]]
    return out
