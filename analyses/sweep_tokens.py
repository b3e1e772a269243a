"""Sweep model width x tokens per step: LoRA's speedup over full fine-tuning (figure e).

    python analyses/sweep_tokens.py --quick            # CPU grid, a few minutes on 2 cores
    python analyses/sweep_tokens.py --device cuda      # the paper grid on a GPU
    python analyses/sweep_tokens.py --draw-only        # redraw from figures/data/

Every point times full, LoRA and frozen steps of one built-in Llama shape in this process
(no profiler), appends the result to ``figures/data/sweep_tokens-<grid>-<device>.jsonl`` and
moves on; an interrupted sweep resumes where it stopped. Then it draws
``figures/sweep_tokens-<grid>-<device>.{png,pdf}``: T_full / T_lora against batch x seq for
each width, with the ideal T_full / T_frozen and the naive 6L / (4L + 6A) from matmul FLOPs.
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
    # ~2.5 min on a 2-core CPU with one thread: 2 layers, widths 128..768, 64..4096 tokens.
    "quick": dict(preset="default", n_layer=2, vocab_size=1024, widths=[128, 256, 512, 768],
                  shapes=[(1, 64), (4, 64), (4, 256), (16, 256)], warmup=1, steps=5),
    # The GaLore LLaMA-130M depth (12 layers) at four widths, up to 16k tokens per step.
    "full": dict(preset="llama-134m", n_layer=12, vocab_size=32000, widths=[512, 768, 1024, 2048],
                 shapes=[(1, 128), (4, 128), (8, 256), (8, 1024), (16, 1024)], warmup=3, steps=10),
}


def shapes_arg(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            b, s = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise sw.argparse.ArgumentTypeError(f"{part!r} is not BATCHxSEQ, e.g. 4x128")
        if b <= 0 or s <= 0:
            raise sw.argparse.ArgumentTypeError(f"{part!r}: batch and seq must be positive")
        out.append((b, s))
    return out


def build_parser():
    p = sw.Parser(prog="python analyses/sweep_tokens.py", description=__doc__.split("\n\n")[0],
                  epilog="Results: figures/data/<sweep>.jsonl (one JSON line per point); figure: "
                         "figures/<sweep>.png/.pdf.")
    sw.common_arguments(p)
    g = p.add_argument_group("grid (defaults: the chosen grid's)")
    g.add_argument("--widths", type=sw.int_list, help="model widths n_embd, e.g. 128,256,512")
    g.add_argument("--shapes", type=shapes_arg, help="batch x seq pairs, e.g. 1x64,4x64,4x256")
    g.add_argument("--layers", type=int, help="transformer blocks")
    g.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    return p


def make_grid(args, device: str) -> list[dict]:
    spec = GRIDS[args.size]
    points = []
    for w in args.widths or spec["widths"]:
        for b, s in args.shapes or spec["shapes"]:
            points.append(dict(
                preset=spec["preset"], n_layer=args.layers or spec["n_layer"], n_embd=w,
                n_head=max(1, w // 64), vocab_size=spec["vocab_size"], batch_size=b, seq_len=s,
                rank=args.rank, alpha=16.0, dropout=0.05, targets="attention", device=device,
                threads=args.threads if device == "cpu" else 0,
                warmup=spec["warmup"] if args.warmup is None else args.warmup,
                steps=args.steps or spec["steps"], seed=0))
    return points


def run(argv: Optional[Sequence[str]] = None, measure=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = sw.resolve_device(args.device)
    args.size = args.size or ("full" if device.startswith("cuda") else "quick")
    grid = make_grid(args, device)
    name = sw.stem("sweep_tokens", args.size, device)
    results = sw.results_path(args.out_dir, name)
    if args.draw_only:
        done = sw.load_results(results)
        records = [done[k] for k in map(sw.point_key, grid) if k in done]
        outcome = sw.SweepRun(records, 0, len(records), len(grid) - len(records))
    else:
        outcome = sw.run_sweep(grid, measure or sw.measure_point, results, max_points=args.max_points,
                               progress=not args.no_progress, desc=name,
                               redo=sw.noisy(args.redo_noisy) if args.redo_noisy else None)
    figure = []
    if outcome.records:
        from lora_profiler.report.sweep_figures import speedup_tokens_figure

        try:
            figure = sw.save(speedup_tokens_figure(outcome.records), args.out_dir, name)
        except ValueError as exc:  # e.g. every point failed
            print(f"sweep_tokens: no figure: {exc}", file=sys.stderr)
    return sw.finish({"sweep": name, "results": sw.rel(results), "figure": figure,
                      "points": len(grid), "ran": outcome.ran, "reused": outcome.reused,
                      "remaining": outcome.remaining, "ok": sw.ok_count(outcome.records),
                      "elapsed_s": round(time.perf_counter() - started, 1)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    return sw.main_wrapper(run, argv, "sweep_tokens")


if __name__ == "__main__":
    sys.exit(main())
