"""Sweep LoRA rank and which modules are adapted: step time per mode (figure f).

    python analyses/sweep_rank_targets.py --quick       # CPU grid, a few minutes on 2 cores
    python analyses/sweep_rank_targets.py --device cuda # the paper grid on a GPU
    python analyses/sweep_rank_targets.py --draw-only   # redraw from figures/data/

Two sweeps of one built-in Llama shape, each point timing full, LoRA and frozen steps in this
process (no profiler): the rank r on the attention projections, and the target set (attention
projections, MLP, every linear layer but lm_head) at one rank. Both append to
``figures/data/sweep_rank_targets-<grid>-<device>.jsonl`` (the point they share runs once) and
resume where an interrupted run stopped. Draws ``figures/sweep_rank_targets-<grid>-<device>.{png,pdf}``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `analyses` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyses import _sweep as sw  # noqa: E402

GRIDS = {
    # ~1 min on a 2-core CPU with one thread: 2 layers x 256 wide, batch 8 x seq 128.
    "quick": dict(preset="default", n_layer=2, n_embd=256, vocab_size=1024, batch_size=8, seq_len=128,
                  ranks=[1, 2, 4, 8, 16, 32, 64, 128, 256], target_rank=8, warmup=1, steps=5),
    # The GaLore LLaMA-130M shape (12 x 768), batch 8 x seq 512.
    "full": dict(preset="llama-134m", n_layer=12, n_embd=768, vocab_size=32000, batch_size=8, seq_len=512,
                 ranks=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512], target_rank=8, warmup=3, steps=10),
}
TARGETS = ("attention", "mlp", "all")


def build_parser():
    p = sw.Parser(prog="python analyses/sweep_rank_targets.py", description=__doc__.split("\n\n")[0],
                  epilog="Results: figures/data/<sweep>.jsonl (one JSON line per point); figure: "
                         "figures/<sweep>.png/.pdf.")
    sw.common_arguments(p)
    g = p.add_argument_group("grid (defaults: the chosen grid's)")
    g.add_argument("--ranks", type=sw.int_list, help="LoRA ranks, e.g. 1,4,16,64")
    g.add_argument("--target-rank", type=int, help="rank of the targets sweep")
    g.add_argument("--width", type=int, help="model width n_embd")
    g.add_argument("--layers", type=int, help="transformer blocks")
    g.add_argument("--batch-size", type=int, help="sequences per step")
    g.add_argument("--seq-len", type=int, help="tokens per sequence")
    return p


def make_grids(args, device: str) -> tuple[list[dict], list[dict]]:
    """(rank points, target points) of the chosen grid with the command line's overrides."""
    spec = GRIDS[args.size]
    width = args.width or spec["n_embd"]
    base = dict(preset=spec["preset"], n_layer=args.layers or spec["n_layer"], n_embd=width,
                n_head=max(1, width // 64), vocab_size=spec["vocab_size"],
                batch_size=args.batch_size or spec["batch_size"], seq_len=args.seq_len or spec["seq_len"],
                alpha=16.0, dropout=0.05, device=device, threads=args.threads if device == "cpu" else 0,
                warmup=spec["warmup"] if args.warmup is None else args.warmup,
                steps=args.steps or spec["steps"], seed=0)
    ranks = [dict(base, rank=r, targets="attention") for r in args.ranks or spec["ranks"]]
    rank = args.target_rank or spec["target_rank"]
    targets = [dict(base, rank=rank, targets=t) for t in TARGETS]
    return ranks, targets


def run(argv: Optional[Sequence[str]] = None, measure=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = sw.resolve_device(args.device)
    args.size = args.size or ("full" if device.startswith("cuda") else "quick")
    rank_grid, target_grid = make_grids(args, device)
    name = sw.stem("sweep_rank_targets", args.size, device)
    results = sw.results_path(args.out_dir, name)
    grid = rank_grid + target_grid
    if args.draw_only:
        done = sw.load_results(results)
        records = [done[k] for k in dict.fromkeys(map(sw.point_key, grid)) if k in done]
        outcome = sw.SweepRun(records, 0, len(records), len(set(map(sw.point_key, grid))) - len(records))
    else:
        outcome = sw.run_sweep(grid, measure or sw.measure_point, results, max_points=args.max_points,
                               progress=not args.no_progress, desc=name,
                               redo=sw.noisy(args.redo_noisy) if args.redo_noisy else None)
    by_key = {sw.point_key(r["params"]): r for r in outcome.records}
    ranks = [by_key[k] for k in map(sw.point_key, rank_grid) if k in by_key]
    targets = [by_key[k] for k in map(sw.point_key, target_grid) if k in by_key]
    figure = []
    if outcome.records:
        from lora_profiler.report.sweep_figures import rank_targets_figure

        try:
            figure = sw.save(rank_targets_figure(ranks, targets), args.out_dir, name)
        except ValueError as exc:  # e.g. every point failed
            print(f"sweep_rank_targets: no figure: {exc}", file=sys.stderr)
    return sw.finish({"sweep": name, "results": sw.rel(results), "figure": figure,
                      "points": len(by_key) + outcome.remaining, "ran": outcome.ran,
                      "reused": outcome.reused, "remaining": outcome.remaining,
                      "ok": sw.ok_count(outcome.records),
                      "elapsed_s": round(time.perf_counter() - started, 1)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    return sw.main_wrapper(run, argv, "sweep_rank_targets")


if __name__ == "__main__":
    sys.exit(main())
