"""What LoraProfilerCallback adds to a training run's wall time, beyond the work it reports.

    python benchmarks/bench_trainer_callback.py [--steps 200] [--reps 7] [--threads 1]

The example's tiny PEFT Llama (examples/trainer_callback.py) trains ``--steps`` steps with
transformers.Trainer, with and without the callback (its defaults: start_step 5, 12 timed steps,
2 profiled rounds, the floor, calibration, the report and its figures), alternately in one
process (the order swapped every repetition, after one untimed pair that warms up imports and
caches). Two figures, each the median over the pairs of the paired ratio:

- whole run: ``(T_with - reported) / T_without - 1``, T the wall time of ``trainer.train()``;
  ``reported`` is the callback's own time (``facts["trainer"]["callback_s"]`` plus building the
  report: setup, floor replays, profiler sessions and the profiler's slowdown of the loop steps
  it recorded, saved-tensor accounting, calibration, facts, report). What remains is the cost of
  observing — wrappers and callbacks on every step, clock reads in the window, switch-in steps
  after replays — and the machine's noise, which on a shared machine is larger than it.
- unobserved steps: the median loop-step period (on_step_begin to the next) of the steps
  outside the callback's window (before it and after it), with against without: what the
  callback costs the steps it does not measure. Robust to load spikes (a median of ~175
  steps); both runs carry the same step timer.

Issue 13's target: at most 5% beyond what the callback reports. The last stdout line is one
JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("trainer_example", ROOT / "examples" / "trainer_callback.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Loop-step periods: global_step -> on_step_begin to the next on_step_begin (s)."""

        def __init__(self):
            self.begins: dict[int, float] = {}

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins[state.global_step] = time.perf_counter()

        def periods(self) -> dict[int, float]:
            return {k: self.begins[k + 1] - t for k, t in self.begins.items() if k + 1 in self.begins}
    return StepTimer()


def run(example, steps: int, batch_size: int, seq_len: int, callback=None) -> tuple[float, dict]:
    """One training run: the wall time of ``trainer.train()`` (s) and the loop-step periods."""
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = example.build_model()
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        args = TrainingArguments(output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size,
                                 learning_rate=1e-3, logging_steps=10, use_cpu=True, report_to=[],
                                 save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
        timer = _step_timer()
        trainer = Trainer(model=model, args=args, train_dataset=example.Strides(seq_len=seq_len),
                          callbacks=[timer] + ([callback] if callback else []))
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer's printed logs: stdout is ours
            trainer.train()
        return time.perf_counter() - t0, timer.periods()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    p.add_argument("--reps", type=int, default=5, help="timed pairs of runs (default 5)")
    p.add_argument("--batch-size", type=int, default=4, help="per-device batch size (default 4)")
    p.add_argument("--seq-len", type=int, default=32, help="sequence length (default 32)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine two threads stall on each other)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    from lora_profiler.integrations.hf import LoraProfilerCallback

    example = _example()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-bench-runs-") as runs:
        for rep in range(args.reps + 1):  # rep 0 warms up and is not counted
            cb = LoraProfilerCallback(out=Path(runs) / f"run{rep}", verbose=False)
            order = ["with", "without"] if rep % 2 else ["without", "with"]
            got = {}
            for which in order:
                got[which] = run(example, args.steps, args.batch_size, args.seq_len, cb if which == "with" else None)
            (t_with, p_with), (t_without, p_without) = got["with"], got["without"]
            first, last = cb.first_step, cb.first_step + len(cb.plan) - 1
            outside = [k for k in p_with if 0 < k < first or k > last]  # step 0 pays first-call costs
            step_with = statistics.median(p_with[k] for k in outside)
            step_without = statistics.median(p_without[k] for k in outside)
            reported = sum(cb.costs.values())
            row = {"rep": rep, "without_s": t_without, "with_s": t_with, "reported_s": reported,
                   "costs": {k: round(v, 3) for k, v in cb.costs.items()}, "observed_s": t_with - reported,
                   "added": (t_with - reported) / t_without - 1, "unobserved_steps": len(outside),
                   "step_with_s": step_with, "step_without_s": step_without,
                   "step_added": step_with / step_without - 1}
            print(f"rep {rep}{' (warm-up)' if rep == 0 else ''}: without {t_without:.2f} s, with {t_with:.2f} s, "
                  f"reported {reported:.2f} s {row['costs']}, with - reported {row['observed_s']:.2f} s "
                  f"({100 * row['added']:+.1f}%); unobserved step {1e3 * step_without:.2f} -> {1e3 * step_with:.2f} ms "
                  f"({100 * row['step_added']:+.1f}%, {len(outside)} steps)", file=sys.stderr, flush=True)
            if rep:
                rows.append(row)
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("without_s", "with_s", "reported_s", "observed_s", "added", "step_without_s", "step_with_s",
                     "step_added")}
    spread = {k: [min(r[k] for r in rows), max(r[k] for r in rows)] for k in ("added", "step_added")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{args.steps}-step runs, {len(rows)} pairs (medians): without {med['without_s']:.2f} s, with "
          f"{med['with_s']:.2f} s, reported by the callback {med['reported_s']:.2f} s", file=sys.stderr)
    print(f"  whole run, beyond what the callback reports: {100 * med['added']:+.1f}% "
          f"(pairs {100 * spread['added'][0]:+.1f}% to {100 * spread['added'][1]:+.1f}%)", file=sys.stderr)
    print(f"  unobserved steps: {1e3 * med['step_without_s']:.2f} -> {1e3 * med['step_with_s']:.2f} ms, "
          f"{100 * med['step_added']:+.1f}% (pairs {100 * spread['step_added'][0]:+.1f}% to "
          f"{100 * spread['step_added'][1]:+.1f}%); target <= 5%; load average {load}", file=sys.stderr)
    ok = med["added"] <= 0.05 and med["step_added"] <= 0.05
    print(json.dumps({"steps": args.steps, "reps": len(rows), "threads": args.threads, "median": med,
                      "spread": spread, "target": 0.05, "ok": ok, "load_average": load, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
