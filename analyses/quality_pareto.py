"""Quality beside speed: fine-tune every strategy on a synthetic task and draw the Pareto figure.

    python analyses/quality_pareto.py                # every strategy, 3 seeds (~5 min on 2 cores)
    python analyses/quality_pareto.py --quick        # fewer steps, 1 seed (tests, a minute)
    python analyses/quality_pareto.py --draw-only    # redraw from figures/data/

A small Llama (4 blocks, 128 wide) is pre-trained on a synthetic Markov language made in code,
then each strategy fine-tunes it on a shifted language (half its rows redrawn) with the same
batches in the same order; the held-out loss on target text is measured against the pre-trained
model's (not fine-tuned) and against the target's entropy rate (the best possible). Writes
``figures/data/quality-<grid>-<device>.json`` and ``figures/quality-<grid>-<device>.{png,pdf}``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

STRATEGIES = ("full", "lora", "fused-lora", "lora-top:2", "partial-top:2", "lora-fa", "partial-connections:0.25")
GRIDS = {
    "full": dict(seeds=3, pretrain_steps=300, finetune_steps=150),
    "quick": dict(seeds=1, pretrain_steps=120, finetune_steps=40),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python analyses/quality_pareto.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick grid: 1 seed, fewer steps")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated (default {','.join(STRATEGIES)})")
    p.add_argument("--seeds", type=int, help="seeds (default: the grid's)")
    p.add_argument("--steps", type=int, help="fine-tuning steps (default: the grid's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: steady on a shared 2-core machine)")
    p.add_argument("--out", type=Path, default=ROOT / "figures", help="figures folder (default figures/)")
    p.add_argument("--draw-only", action="store_true", help="redraw the figure from the saved data")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> dict:
    import torch

    from lora_profiler.capture.run import environment
    from lora_profiler.workload.models import ModelConfig
    from lora_profiler.workload.presets import Preset
    from lora_profiler.workload.quality import MarkovLanguage, TaskSpec, fine_tune, held_out, pretrain
    from lora_profiler.workload.spec import LoraOptions, build_preset_workload

    torch.set_num_threads(args.threads)
    grid = GRIDS["quick" if args.quick else "full"]
    spec = TaskSpec(pretrain_steps=grid["pretrain_steps"], finetune_steps=args.steps or grid["finetune_steps"])
    preset = Preset("quality", "the quality task's model", ModelConfig(arch="llama", vocab_size=spec.vocab, n_layer=4,
                                                                       n_embd=128, n_head=4, max_seq_len=spec.seq),
                    batch_size=spec.batch, seq_len=spec.seq)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    runs, languages = [], []
    started = time.perf_counter()
    for seed in range(args.seeds or grid["seeds"]):
        import numpy as np

        source = MarkovLanguage.random(spec.vocab, spec.branching, seed=seed)
        target = source.shifted(spec.shift, spec.branching, seed=1000 + seed)
        languages.append({"seed": seed, "source_entropy_rate": source.entropy_rate(),
                          "target_entropy_rate": target.entropy_rate()})
        wl = build_preset_workload(preset, torch.device("cpu"), LoraOptions(rank=8, alpha=16, dropout=0.05), seed=seed)
        log = (lambda m: print(f"seed {seed}: {m}", file=sys.stderr)) if not args.quiet else None
        state = pretrain(wl, source, spec, seed, progress=log)
        rng = np.random.default_rng(30_000 + seed)
        held = [target.sample(spec.batch, spec.seq, rng) for _ in range(spec.eval_batches)]
        src_held = [source.sample(spec.batch, spec.seq, rng) for _ in range(spec.eval_batches)]
        languages[-1]["pretrained_loss_on_source"] = held_out(wl.model, src_held)
        for strategy in ["none"] + strategies:
            t0 = time.perf_counter()
            res = fine_tune(wl, state, strategy, target, spec, seed, held)
            row = {k: getattr(res, k) for k in ("strategy", "seed", "status", "error", "trainable_params", "lr",
                                                "curve", "held_out_loss", "wall_s")}
            row["median_step_s"] = float(np.median(res.step_s)) if res.step_s else None
            row["total_s"] = time.perf_counter() - t0
            runs.append(row)
            if log:
                log(f"{strategy}: {row['status']} held-out {row['held_out_loss']} in {row['wall_s']} s"
                    + (f" ({row['error']})" if row["error"] else ""))
    return {"kind": "lora_profiler.quality", "grid": "quick" if args.quick else "full", "task": spec.__dict__,
            "model": {"arch": "llama", "n_layer": 4, "n_embd": 128, "vocab": spec.vocab, "rank": 8},
            "steps": spec.finetune_steps, "languages": languages,
            "entropy_rate": float(np.mean([x["target_entropy_rate"] for x in languages])),
            "runs": runs, "environment": environment(torch.device("cpu"), "not used: no CUDA device"),
            "elapsed_s": time.perf_counter() - started}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    grid = "quick" if args.quick else "full"
    data_path = args.out / "data" / f"quality-{grid}-cpu.json"
    if args.draw_only:
        if not data_path.is_file():
            print(f"quality_pareto: error: {data_path}: no data; run without --draw-only first", file=sys.stderr)
            return 2
        data = json.loads(data_path.read_text())
    else:
        data = run(args)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        data_path.write_text(json.dumps(data, indent=1) + "\n")
    from lora_profiler.report.strategy_figures import pareto_figure
    from lora_profiler.report.style import save_figure

    paths = save_figure(pareto_figure(data), args.out / f"quality-{grid}-cpu")
    by = {}
    for r in data["runs"]:
        by.setdefault(r["strategy"], []).append(r)
    import numpy as np

    summary = {s: {"held_out_loss": float(np.median([r["held_out_loss"] for r in rs if r["held_out_loss"] is not None]))
                   if any(r["held_out_loss"] is not None for r in rs) else None,
                   "wall_s": float(np.median([r["wall_s"] for rs_ in [rs] for r in rs_ if r["wall_s"] is not None]))
                   if any(r["wall_s"] is not None for r in rs) else None,
                   "failed": [r["error"] for r in rs if r["status"] != "ok"]}
               for s, rs in by.items()}
    if not args.quiet:
        print(f"{'strategy':26s} {'held-out loss':>14s} {'fine-tune s':>12s}")
        for s, v in summary.items():
            hl = f"{v['held_out_loss']:.3f}" if v["held_out_loss"] is not None else "failed"
            ws = f"{v['wall_s']:.1f}" if v["wall_s"] is not None else ""
            print(f"{s:26s} {hl:>14s} {ws:>12s}")
        print(f"entropy rate (best possible): {data['entropy_rate']:.3f}; elapsed {data.get('elapsed_s', 0):.0f} s")
    print(json.dumps({"data": str(data_path), "figures": [str(p) for p in paths], "summary": summary,
                      "entropy_rate": data["entropy_rate"], "elapsed_s": data.get("elapsed_s")}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    sys.exit(main())
