"""2 ranks x Gloo on this CPU with the tiny preset, N times: the whole torchrun run's wall time
(median), and the report's gradient bytes per step for full and LoRA against the trainable
parameters x element size.

    python benchmarks/bench_distributed.py --runs 3

The last line is one JSON object.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=90.0, help="the wall time a run must stay under")
    args = p.parse_args()
    walls, checks = [], []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc_per_node", str(args.nproc), "-m", "lora_profiler.trace",
                                   "--preset", "tiny", "--device", "cpu", "--quiet", "--out", str(out)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            report = json.loads((out / "report.json").read_text())
            comm = report["distributed"]["communication"]
            row = {m: {"expected": comm[m]["expected_bytes_per_step"],
                       "measured": sorted({v["gradient_bytes_per_step"] for v in comm[m]["per_rank"].values()}),
                       "trainable_params": report["modes"][m]["trainable_params"],
                       "matches": comm[m]["matches"]} for m in ("full", "lora")}
            walls.append(wall)
            checks.append(row)
            print(f"run {i + 1}: {wall:.1f} s; full {row['full']['measured']} B/step (expected "
                  f"{row['full']['expected']}), lora {row['lora']['measured']} B/step (expected "
                  f"{row['lora']['expected']})", file=sys.stderr)
    med = statistics.median(walls)
    ok = med <= args.budget_s and all(r[m]["matches"] for r in checks for m in r)
    print(json.dumps({"runs": args.runs, "nproc": args.nproc, "wall_s_median": med, "wall_s": walls,
                      "within_budget": med <= args.budget_s, "bytes": checks[-1], "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
