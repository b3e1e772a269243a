"""Benchmark: is the attribution a measurement? (issue 7)

Runs ``python -m lora_profiler.trace`` N times, each a fresh process, and reports for every run
and across runs:

- the residual (measured overhead minus the sum of the causes) as a share of the overhead —
  target |residual| <= 10% in each run;
- every cause whose ops take >= 1 ms of traced time per step, and whether it is reported non-zero;
- each group's share of the overhead, and how much it varies across the runs (target <= 15
  percentage points);
- with ``--validate``: each ablation's predicted and measured saving (target: within 25% or
  inside the measured 95% interval);
- the run's wall time (target <= 60 s, <= 120 s with --validate) and the calibration's.

    python benchmarks/bench_attribution.py --runs 5
    python benchmarks/bench_attribution.py --runs 2 --validate
    python benchmarks/bench_attribution.py --runs 2 --validate -- --preset gpt2-small --batch-size 4

Arguments after ``--`` go to ``lora_profiler.trace``. The last stdout line is one JSON object.
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


def traced_ms(report: dict) -> dict:
    """cause -> traced ms per step of the lora trace's ops of that cause (before any correction),
    to know which causes are 'event-dense' enough to matter (>= 1 ms)."""
    from lora_profiler.analyses.attribution import ModeTrace
    from lora_profiler.analyses.step_causes import C
    from lora_profiler.report.build import load_mode_traces

    run = Path(report["_run"])
    traces = load_mode_traces(run, report)
    mt = ModeTrace(traces["lora"], None)  # no calibration: raw traced time
    typ = mt.causes.value_us.mean(axis=0)  # (causes, 2) us, the mean over rounds
    out = {}
    for cause in ("dropout", "lora_A", "lora_B", "scale", "add", "adapter_other", "dispatch"):
        out[cause] = float(typ[C[cause]].sum()) / 1e3
    out["grad_accumulation"] = float(typ[C["accumulate_grad"]].sum()) / 1e3
    return out


def one_run(extra: list, validate: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lora_profiler.trace", "--quiet", "--no-figures", "--out", f"{tmp}/run"]
        cmd += (["--validate"] if validate else []) + extra
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
        report = json.loads(Path(f"{tmp}/run/report.json").read_text())
        report["_run"] = f"{tmp}/run"
        raw = traced_ms(report)
    att = report["attribution"]
    overhead = att["overhead_s"]
    from lora_profiler.analyses import stats

    phases = {}
    for ph in ("forward", "backward", "optimizer"):
        a = report["modes"]["lora"]["phase_samples_s"][ph]
        b = report["modes"]["frozen"]["phase_samples_s"][ph]
        phases[ph] = {"timed_ms": stats.paired_difference(a, b) * 1e3,
                      "attributed_ms": sum(c["phases"].get(ph, 0.0) for c in att["causes"].values()) * 1e3}
    res = {
        "wall_s": wall,
        "calibration_s": (report.get("calibration") or {}).get("seconds"),
        "overhead_ms": overhead * 1e3,
        "overhead_ci_ms": [x * 1e3 for x in att["overhead_ci_s"]] if att.get("overhead_ci_s") else None,
        "residual_pct": 100 * att["residual_s"] / overhead,
        "groups_pct": {g: 100 * v["seconds"] / overhead for g, v in att["groups"].items()},
        "phases": phases,
        "causes_ms": {c: v["seconds"] * 1e3 for c, v in att["causes"].items()},
        "traced_ms": raw,
        "dense_zero": [c for c, ms in raw.items() if ms >= 1.0
                       and abs((att["causes"].get(c) or {}).get("seconds") or 0.0) == 0.0],
        "unreliable": [f["numbers"] for f in att.get("reliability") or []],
        "validation": [{k: r.get(k) for k in ("variant", "predicted_s", "measured_s", "ci_s", "agrees", "verdict")}
                       for r in att.get("validation") or []],
    }
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--validate", action="store_true")
    p.add_argument("extra", nargs="*", help="arguments for lora_profiler.trace (after --)")
    args = p.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.extra, args.validate)
        runs.append(r)
        print(f"run {i}: {r['wall_s']:.1f} s (calibration {r['calibration_s'] or 0:.1f} s), overhead "
              f"{r['overhead_ms']:.1f} ms {r['overhead_ci_ms'] and [round(x, 1) for x in r['overhead_ci_ms']]}, "
              f"residual {r['residual_pct']:+.1f}%; groups "
              + ", ".join(f"{g} {v:.0f}%" for g, v in r["groups_pct"].items() if abs(v) >= 0.5)
              + (f"; ZERO dense causes {r['dense_zero']}" if r["dense_zero"] else "")
              + (f"; unreliable: {r['unreliable']}" if r["unreliable"] else ""), flush=True)
        print("    causes: " + ", ".join(f"{c} {v:.1f}" for c, v in r["causes_ms"].items() if abs(v) >= 0.1))
        print("    per phase, timed (paired) vs attributed: " + ", ".join(
            f"{ph} {d['timed_ms']:.1f} vs {d['attributed_ms']:.1f} ms" for ph, d in r["phases"].items()))
        for v in r["validation"]:
            if v["predicted_s"] is not None and v["measured_s"] is not None:
                ci = v["ci_s"]
                print(f"    {v['variant']:11s} predicted {v['predicted_s'] * 1e3:7.2f} ms, measured "
                      f"{v['measured_s'] * 1e3:7.2f} ms" + (f" [{ci[0] * 1e3:.2f}, {ci[1] * 1e3:.2f}]" if ci else "")
                      + f": {v['verdict']}", flush=True)
    groups = sorted({g for r in runs for g in r["groups_pct"]})
    swing = {g: max(r["groups_pct"].get(g, 0) for r in runs) - min(r["groups_pct"].get(g, 0) for r in runs)
             for g in groups}
    summary = {
        "runs": len(runs),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "calibration_s_median": statistics.median(r["calibration_s"] or 0 for r in runs),
        "residual_pct": [round(r["residual_pct"], 1) for r in runs],
        "max_abs_residual_pct": max(abs(r["residual_pct"]) for r in runs),
        "group_share_swing_pp": {g: round(v, 1) for g, v in swing.items()},
        "max_group_swing_pp": max(swing.values()) if swing else None,
        "dense_causes_reported_zero": sorted({c for r in runs for c in r["dense_zero"]}),
        "validation": [v for r in runs for v in r["validation"]],
    }
    print(f"residual per run: {summary['residual_pct']} (max |.| {summary['max_abs_residual_pct']:.1f}%); "
          f"group share swing across runs (pp): {summary['group_share_swing_pp']}; median wall "
          f"{summary['wall_s_median']:.1f} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
