"""What LoraProfilerCallback adds to a training run's wall time, beyond the work it reports.

    python benchmarks/bench_trainer_callback.py [--steps 200] [--reps 5] [--threads 1]

The example's tiny PEFT Llama (examples/trainer_callback.py) trains ``--steps`` steps with
transformers.Trainer, with and without the callback (its defaults: start_step 5, 12 timed steps,
2 profiled rounds, the floor, calibration, the report and its figures), alternately in one
process (the order swapped every repetition, after one untimed pair that warms up imports and
caches). Each run's wall time is ``trainer.train()``. The callback reports its own time
(``facts["trainer"]["callback_s"]``, plus building the report): setup, floor replays, profiler
sessions and what the profiler added to the two loop steps of each profiled round, saved-tensor
accounting, calibration, facts and report. What it adds beyond that —

    added = median(T_with - reported) / median(T_without) - 1

— is the cost of observing: the wrappers and callbacks on every step, the clock reads in the
window, the switch-in steps after replays. Issue 13's target: at most 5%.

The last stdout line is one JSON object.
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


def run(example, steps: int, batch_size: int, seq_len: int, callback=None) -> float:
    """One training run; returns the wall time of ``trainer.train()`` (s)."""
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = example.build_model()
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        args = TrainingArguments(output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size,
                                 learning_rate=1e-3, logging_steps=10, use_cpu=True, report_to=[],
                                 save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=example.Strides(seq_len=seq_len),
                          callbacks=[callback] if callback else None)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer's printed logs: stdout is ours
            trainer.train()
        return time.perf_counter() - t0


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
            reported = sum(cb.costs.values())
            row = {"rep": rep, "without_s": got["without"], "with_s": got["with"], "reported_s": reported,
                   "costs": {k: round(v, 3) for k, v in cb.costs.items()},
                   "observed_s": got["with"] - reported}
            row["added"] = row["observed_s"] / row["without_s"] - 1
            print(f"rep {rep}{' (warm-up)' if rep == 0 else ''}: without {row['without_s']:.2f} s, with "
                  f"{row['with_s']:.2f} s, reported {reported:.2f} s {row['costs']}, with - reported "
                  f"{row['observed_s']:.2f} s ({100 * row['added']:+.1f}%)", file=sys.stderr, flush=True)
            if rep:
                rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in ("without_s", "with_s", "reported_s", "observed_s")}
    added = med["observed_s"] / med["without_s"] - 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{args.steps}-step runs, medians of {len(rows)} pairs: without {med['without_s']:.2f} s, with "
          f"{med['with_s']:.2f} s, reported by the callback {med['reported_s']:.2f} s; added beyond what it "
          f"reports {100 * added:+.1f}% (target <= 5%); load average {load}", file=sys.stderr)
    print(json.dumps({"steps": args.steps, "reps": len(rows), "threads": args.threads, "median": med,
                      "added_fraction": added, "target": 0.05, "ok": added <= 0.05, "load_average": load,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
