"""Benchmark: the cost of the capture hooks when no profiler runs (issue 2: <= 3%).

Times the same LoRA (and full) training step of the default workload with the module hooks
installed and without them, interleaved in one process (hooks installed and removed between
steps), and reports the median of each and their ratio.

    python benchmarks/bench_hooks.py [--preset default] [--rounds 15]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from lora_profiler.capture.hooks import ModuleHooks
from lora_profiler.capture.step import StepRunner
from lora_profiler.workload.modes import InputGrad, switch_mode
from lora_profiler.workload.presets import get_preset
from lora_profiler.workload.spec import LoraOptions, build_preset_workload


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--modes", default="lora,full")
    args = p.parse_args()
    wl = build_preset_workload(get_preset(args.preset), torch.device("cpu"), LoraOptions())
    ig = InputGrad(wl.model)
    result = {}
    for mode in args.modes.split(","):
        runner = StepRunner(wl, switch_mode(wl, mode, ig))
        for _ in range(2):
            runner.step()
        times = {"hooks": [], "bare": []}
        for r in range(args.rounds):
            order = ("hooks", "bare") if r % 2 == 0 else ("bare", "hooks")
            for kind in order:
                hooks = ModuleHooks(wl.model, wl.adapters) if kind == "hooks" else None
                _, t = runner.step()
                times[kind].append(sum(t.values()))
                if hooks is not None:
                    hooks.remove()
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = [h / b for h, b in zip(times["hooks"], times["bare"])]
        result[mode] = {"bare_s": med["bare"], "hooks_s": med["hooks"],
                        "ratio_of_medians": med["hooks"] / med["bare"],
                        "median_pair_ratio": statistics.median(ratios), "rounds": args.rounds}
        print(f"{mode:6s} bare {med['bare'] * 1e3:8.1f} ms  hooks {med['hooks'] * 1e3:8.1f} ms  "
              f"ratio {med['hooks'] / med['bare']:.4f}  (median of paired ratios "
              f"{statistics.median(ratios):.4f}, {args.rounds} rounds)")
        runner.release()
    print(json.dumps({"preset": args.preset, "threads": torch.get_num_threads(), "modes": result}))


if __name__ == "__main__":
    main()
