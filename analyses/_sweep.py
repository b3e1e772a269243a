"""Shared machinery of the sweep scripts: points, a resumable results file, measuring a point.

A *point* is a flat dict of the parameters that define one measurement (model shape, batch,
LoRA settings, device, timing settings). Its key is the dict as canonical JSON, so a point is
identified by what it measures, not by where it sits in a grid: two sweeps sharing a point
(rank 8 on the attention projections is in both the rank and the targets sweep) measure it once.

Each finished point is appended as one JSON line to ``figures/data/<sweep>.jsonl`` and flushed
to disk before the next starts. Re-running a sweep skips every point already in the file, so an
interrupted sweep (Ctrl-C, a crash, ``--max-points``) resumes where it stopped: nothing lost,
nothing run twice. A line cut short by a kill mid-write is dropped on the next load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from lora_profiler.names import BASE_MODES

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "figures"

# Which modules each named target set adapts, per architecture of the built-in presets.
TARGET_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": {"attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
              "mlp": ("gate_proj", "up_proj", "down_proj"),
              "all": ("all-linear",)},
    "gpt2": {"attention": ("attn.c_attn", "attn.c_proj"),
             "mlp": ("mlp.c_fc", "mlp.c_proj"),
             "all": ("all-linear",)},
}
# The modes the speedups need (names.BASE_MODES without forward-only).
MODES = tuple(m for m in BASE_MODES if m != "forward")


class SweepError(ValueError):
    """Bad sweep input or results file (the message names the file or flag and the fix)."""


def point_key(params: dict) -> str:
    """The identity of a point: its parameters as canonical JSON."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


# --- the results file ----------------------------------------------------------------------------

def load_results(path: Path) -> dict[str, dict]:
    """Records already in ``path`` by point key (empty when the file does not exist).

    A last line cut short by a kill mid-write is removed from the file.

    Raises:
        SweepError: a line other than the last is not JSON (the file was edited by hand).
    """
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    done: dict[str, dict] = {}
    good_bytes = 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a write cut short: drop it, keep the rest
                with open(path, "r+b") as f:
                    f.truncate(min(good_bytes, len(raw)))
                break
            raise SweepError(f"{path}:{i + 1}: not a JSON line; fix or delete that line to resume")
        done[point_key(record["params"])] = record
        good_bytes += len(line) + 1
    return done


def append_result(path: Path, record: dict) -> None:
    """Append one record as a JSON line and force it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class SweepRun:
    """What one invocation of ``run_sweep`` did."""

    records: list[dict]  # every finished point of the grid, in grid order
    ran: int  # points measured by this invocation
    reused: int  # points found in the results file
    remaining: int  # grid points still unmeasured (``max_points`` reached)


def run_sweep(grid: Sequence[dict], measure: Callable[[dict], dict], results: Path,
              max_points: Optional[int] = None, progress: bool = True,
              desc: str = "sweep", redo: Optional[Callable[[dict], bool]] = None) -> SweepRun:
    """Measure every point of ``grid`` not yet in ``results``, appending each as it finishes.

    Args:
        grid: the points (parameter dicts); duplicates are measured once.
        measure: point -> record (must contain ``"params": point``).
        results: the JSON-lines results file (created).
        max_points: stop after measuring this many new points (None: all).
        progress: show a tqdm bar on stderr.
        desc: the bar's label.
        redo: record -> True to measure that finished point again (on request only, e.g.
            ``noisy``); the new record is appended and, being later in the file, wins.

    Returns:
        A ``SweepRun`` with the finished records in grid order.
    """
    unique: dict[str, dict] = {}
    for p in grid:
        unique.setdefault(point_key(p), p)
    done = load_results(results)
    todo = [k for k in unique if k not in done or (redo is not None and redo(done[k]))]
    reused = len(unique) - len(todo)
    bar = _bar(len(unique), reused, progress, desc)
    ran = 0
    try:
        for k in todo:
            if max_points is not None and ran >= max_points:
                break
            params = unique[k]
            if bar:
                bar.set_postfix_str(_short(params), refresh=False)
            record = measure(params)
            if point_key(record["params"]) != k:
                raise SweepError(f"measure() returned params {record['params']} for point {params}")
            append_result(results, record)
            done[k] = record
            ran += 1
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    records = [done[k] for k in unique if k in done]
    return SweepRun(records=records, ran=ran, reused=reused, remaining=len(unique) - len(records))


def noisy(limit: float) -> Callable[[dict], bool]:
    """A ``redo`` test: some mode's step-time IQR exceeds ``limit`` times its median."""
    def test(record: dict) -> bool:
        for e in record["modes"].values():
            st = (e or {}).get("step_time_s") or {}
            if st.get("median") and st.get("iqr", 0) > limit * st["median"]:
                return True
        return False
    return test


def _bar(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="point", file=sys.stderr,
                dynamic_ncols=True)


def _short(params: dict) -> str:
    keys = ("n_embd", "batch_size", "seq_len", "rank", "targets")
    return " ".join(f"{k}={params[k]}" for k in keys if k in params)


# --- measuring one point -------------------------------------------------------------------------

def measure_point(params: dict) -> dict:
    """Build the point's workload and time full, LoRA and frozen steps in this process.

    ``params`` keys: preset, n_layer, n_embd, n_head, vocab_size, batch_size, seq_len, rank,
    alpha, dropout, targets (a ``TARGET_SETS`` name), device, threads, warmup, steps, seed.
    No profiler runs (``profile=None``): step times only.

    Returns:
        The record: params, tokens_per_step, total/linear/adapter parameter counts, per-mode
        status, step and phase times, the environment, elapsed seconds.
    """
    import torch

    from lora_profiler.capture.run import CaptureOptions, capture
    from lora_profiler.workload.presets import get_preset, with_overrides
    from lora_profiler.workload.spec import LoraOptions, build_preset_workload

    p = params
    device = torch.device(p["device"])
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(p["threads"])  # restored below: the caller's setting stays its own
    started = time.perf_counter()
    try:
        preset = with_overrides(get_preset(p["preset"]), n_layer=p["n_layer"], n_embd=p["n_embd"],
                                n_head=p["n_head"], vocab_size=p["vocab_size"],
                                batch_size=p["batch_size"], seq_len=p["seq_len"])
        targets = TARGET_SETS[preset.config.arch][p["targets"]]
        workload = build_preset_workload(preset, device, LoraOptions(
            rank=p["rank"], alpha=p["alpha"], dropout=p["dropout"], targets=targets), seed=p["seed"])
        linear, adapter = matmul_params(workload)
        options = CaptureOptions(modes=MODES, warmup_steps=p["warmup"], steps=p["steps"], seed=p["seed"],
                                 profile=None)
        with tempfile.TemporaryDirectory(prefix="lp-sweep-") as tmp:
            facts = capture(workload, options, Path(tmp), progress=False)
        del workload
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch.set_num_threads(threads)
    modes = {}
    for m, e in facts["modes"].items():
        modes[m] = {k: e.get(k) for k in ("status", "error", "step_time_s", "phase_time_s",
                                          "trainable_params", "loss")}
    return {
        "params": params,
        "tokens_per_step": facts["workload"]["tokens_per_step"],
        "total_params": facts["workload"]["total_params"],
        "linear_params": linear,
        "adapter_params": adapter,
        "modes": modes,
        "environment": facts["environment"],
        "elapsed_s": time.perf_counter() - started,
        "finished": facts["created"],
    }


def matmul_params(workload) -> tuple[int, int]:
    """(weights of the base matmul layers, weights of the adapters) of a workload's model."""
    from lora_profiler.workload.lora import linear_features

    adapter_ids = {id(q) for q in workload.adapters.parameters()}
    linear = 0
    for module in workload.model.modules():
        w = getattr(module, "weight", None)
        if linear_features(module) is not None and w is not None and id(w) not in adapter_ids:
            linear += w.numel()
    return int(linear), int(sum(q.numel() for q in workload.adapters.parameters()))


# --- command lines -------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 128,256")
    return values


def common_arguments(p: argparse.ArgumentParser) -> None:
    """The options every sweep script shares."""
    g = p.add_argument_group("run")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="the small grid for a CPU (a few minutes on 2 cores); default on a CPU")
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="the paper grid, for a GPU; default when --device is cuda")
    g.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine, more threads make step "
                        "times swing with the other jobs' load)")
    g.add_argument("--steps", type=int, help="timed steps per mode per point (default: the grid's)")
    g.add_argument("--warmup", type=int, help="warm-up steps per mode per point (default: the grid's)")
    g.add_argument("--max-points", type=int, help="measure at most N new points, then draw and stop "
                                                   "(run again to continue)")
    g.add_argument("--draw-only", action="store_true", help="measure nothing; draw from the results file")
    g.add_argument("--redo-noisy", type=float, metavar="FRAC",
                   help="measure again the finished points where a mode's step-time IQR exceeds "
                        "FRAC x its median (e.g. 0.3 after other jobs disturbed a CPU run); the new "
                        "line is appended and replaces the old one")
    g.add_argument("--out-dir", type=Path, default=FIGURES,
                   help="where figures go; results in OUT_DIR/data/ (default: the repository's figures/)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_device(text: str) -> str:
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise SweepError(f"--device {text}: no CUDA device here; use --device cpu (and --quick)")
    if not (text == "cpu" or text.startswith("cuda")):
        raise SweepError(f"--device {text}: use auto, cpu, cuda or cuda:N")
    return text


def stem(sweep: str, size: str, device: str) -> str:
    """File stem of a sweep's results and figure: ``<sweep>-<size>-<device type>``."""
    return f"{sweep}-{size}-{device.split(':')[0]}"


def finish(summary: dict) -> int:
    """Print the summary as the last stdout line (one JSON object); exit status 0."""
    print(json.dumps(summary))
    return 0


def main_wrapper(run: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]],
                 prog: str) -> int:
    """Run a sweep script's ``run``; bad input is one line on stderr and exit status 2."""
    try:
        return run(argv)
    except SweepError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished points are saved, run again to resume", file=sys.stderr)
        return 130


def save(fig, out_dir: Path, name: str) -> list[str]:
    """Save a sweep figure as PNG and PDF in ``out_dir``; paths relative to the repository if inside."""
    from lora_profiler.report.style import save_figure

    return [rel(p) for p in save_figure(fig, out_dir / name)]


def rel(path: Path) -> str:
    """``path`` relative to the repository when inside it (for the summary line)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def results_path(out_dir: Path, name: str) -> Path:
    """The results file of sweep ``name``: ``out_dir/data/<name>.jsonl``."""
    return out_dir / "data" / f"{name}.jsonl"


def ok_count(records: Iterable[dict]) -> int:
    """Records whose full, lora and frozen modes all ran."""
    return sum(all((r["modes"].get(m) or {}).get("status") == "ok" for m in MODES) for r in records)
