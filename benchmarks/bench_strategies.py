"""Benchmark: does fused-lora halve LoRA's overhead, and is the cost model within 20%? (issue 9)

Runs ``python -m lora_profiler.trace`` N times (fresh processes) with lora, frozen, fused-lora
(and any strategies you add) timed interleaved in one process, and reports per run:

- each strategy's overhead over the frozen floor, ``T - T_frozen``, as the trimmed mean of the
  paired timed steps' differences (the same estimate the report's attribution uses), with a
  95% paired-bootstrap interval, and its ratio to LoRA's overhead — target fused-lora <= 0.5;
- with ``--advise``: the cost model's predicted step time against the measured median for
  every mode and strategy — target within 20%.

Across runs: the median of each figure.

    python benchmarks/bench_strategies.py --runs 3 -- --dropout 0.05
    python benchmarks/bench_strategies.py --runs 3 -- --dropout 0
    python benchmarks/bench_strategies.py --runs 3 -- --preset gpt2-small --batch-size 4 --dropout 0.05
    python benchmarks/bench_strategies.py --runs 3 --advise --modes full,lora,frozen,forward,fused-lora,lora-fa

Arguments after ``--`` go to ``lora_profiler.trace``. The last stdout line is one JSON object.
Run it on a quiet machine: other processes make steps jump between levels.
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

import numpy as np


def overheads(facts: dict, floor: str = "frozen") -> dict:
    """mode -> {"overhead_ms", "ci_ms"} against the floor, paired over the timed steps."""
    from lora_profiler.analyses.stats import paired_bootstrap, paired_difference, samples

    base = samples(facts, floor)
    out = {}
    for mode, entry in facts["modes"].items():
        if mode == floor or entry.get("status") != "ok" or mode in ("forward",):
            continue
        s = samples(facts, mode)
        if s is None or base is None:
            continue
        n = min(len(s), len(base))
        ci = paired_bootstrap(s[:n], base[:n], paired_difference)
        out[mode] = {"overhead_ms": 1e3 * paired_difference(s[:n], base[:n]),
                     "ci_ms": [1e3 * ci[0], 1e3 * ci[1]] if ci else None,
                     "median_ms": 1e3 * float(np.median(s))}
    return out


def one_run(modes: str, advise: bool, extra: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lora_profiler.trace", "--quiet", "--no-figures", "--no-profile",
               "--modes", modes, "--out", f"{tmp}/run"] + (["--advise"] if advise else []) + extra
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
        facts = json.loads((Path(tmp) / "run" / "facts.json").read_text())
        report = json.loads((Path(tmp) / "run" / "report.json").read_text())
    got = {"wall_s": wall, "overheads": overheads(facts)}
    lora = got["overheads"].get("lora", {}).get("overhead_ms")
    got["ratio_to_lora"] = {m: o["overhead_ms"] / lora for m, o in got["overheads"].items()
                            if lora and m != "lora"}
    if advise and report.get("prediction"):
        got["prediction"] = {r["mode"]: {"measured_ms": 1e3 * r["measured_s"] if r["measured_s"] else None,
                                         "predicted_ms": 1e3 * r["predicted_s"], "error": r["error"]}
                             for r in report["prediction"]["rows"]}
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="lora,frozen,fused-lora")
    ap.add_argument("--advise", action="store_true", help="also check the cost model's predictions")
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    runs = []
    for i in range(args.runs):
        r = one_run(args.modes, args.advise, extra)
        runs.append(r)
        line = "  ".join(f"{m} {o['overhead_ms']:.1f} ms [{o['ci_ms'][0]:.1f}, {o['ci_ms'][1]:.1f}]"
                         if o["ci_ms"] else f"{m} {o['overhead_ms']:.1f} ms" for m, o in r["overheads"].items())
        ratios = "  ".join(f"{m}/lora {v:.2f}" for m, v in r["ratio_to_lora"].items())
        print(f"run {i + 1}: {r['wall_s']:.0f} s  overhead vs frozen: {line}  {ratios}", flush=True)
        for m, p in (r.get("prediction") or {}).items():
            err = f"{100 * p['error']:+.0f}%" if p["error"] is not None else "(not run)"
            meas = f"{p['measured_ms']:.1f}" if p["measured_ms"] else "-"
            print(f"    predicted {m:16s} {p['predicted_ms']:8.1f} ms  measured {meas:>8s} ms  {err}")
    summary = {"runs": len(runs), "extra": extra, "modes": args.modes,
               "median_ratio_to_lora": {m: statistics.median(r["ratio_to_lora"][m] for r in runs)
                                        for m in runs[0]["ratio_to_lora"]},
               "median_overhead_ms": {m: statistics.median(r["overheads"][m]["overhead_ms"] for r in runs)
                                      for m in runs[0]["overheads"]},
               "median_wall_s": statistics.median(r["wall_s"] for r in runs)}
    if args.advise:
        modes = [m for m, p in runs[0]["prediction"].items() if p["error"] is not None]
        summary["median_abs_error"] = {m: statistics.median(abs(r["prediction"][m]["error"]) for r in runs)
                                       for m in modes}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
