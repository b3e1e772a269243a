"""Benchmark: wall time of `python -m lora_profiler.trace` with no arguments (issue 2: <= 60 s).

Runs the command N times, each a fresh process writing into a temporary folder, and reports
every wall time and the median.

    python benchmarks/bench_default_run.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    walls, steps = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "lora_profiler.trace", "--quiet"],
                                  cwd=tmp, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"run {i}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
            head = json.loads(proc.stdout.strip().splitlines()[-1])
            report = json.loads((Path(tmp) / head["report"]).read_text())
            n = min(e["step_time_s"]["n"] for e in report["modes"].values())
            walls.append(wall)
            steps.append(n)
            att = report["attribution"]
            print(f"run {i}: {wall:.1f} s, {n} timed steps per mode, speedup lora {head['speedup']['lora_vs_full']:.2f}x "
                  f"ideal {head['speedup']['ideal_vs_full']:.2f}x, overhead {att['overhead_s'] * 1e3:.1f} ms "
                  f"residual {att['residual_s'] * 1e3:.1f} ms ({100 * att['residual_s'] / att['overhead_s']:.1f}%)")
    print(json.dumps({"runs": walls, "median_s": statistics.median(walls), "timed_steps_per_mode": min(steps)}))


if __name__ == "__main__":
    main()
