"""Profile a fine-tuning step under full, LoRA and frozen training.

    python -m lora_profiler.trace                      # the built-in default workload
    python -m lora_profiler.trace --preset gpt2-small  # another preset
    python -m lora_profiler.trace path/to/model.py     # your model

See ``--help`` and README.md. The last stdout line is one JSON object with the output folder and
the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

# Quiet Kineto and c10 logging before torch loads (see capture/__init__.py).
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from .names import BASE_MODES as MODES  # noqa: E402

EPILOG = """\
modes:
  full     every weight trainable, AdamW over all of them
  lora     base frozen, LoRA adapters trainable (AdamW over the adapters)
  frozen   every weight frozen, backward still runs (activation gradients only):
           the floor LoRA cannot beat; T_full/T_frozen is the ideal speedup
  forward  forward only, under torch.no_grad

strategies (add them to --modes; timed with the modes, profiled and attributed like lora):
  fused-lora               each adapted layer as one autograd Function (mask as random bits,
                           x.A once, scale folded into the B GEMM, one backward node)
  lora-top:K               adapters on the top K blocks only (backward stops below them)
  partial-top:K            full fine-tuning of the top K blocks, the rest frozen, no adapters
  lora-fa                  LoRA with A frozen: only B trains
  partial-connections:F    a random fraction F of each adapted layer's weight columns trained
                           in place (PaCA-style)
  lora-compiled            the LoRA model under torch.compile (timed only; the first step,
                           which compiles, is reported apart)

validation (--validate): LoRA variants timed interleaved with the modes, each removing one cause;
the saving each should bring, predicted from the attribution, is compared with the saving measured
  no-dropout   every adapter's dropout replaced by nn.Identity
  fold-scale   the adapter output not multiplied by alpha/r (scale folded into B)
  upper-half   adapters on the upper half of the blocks only (backward still through every block)
  rank-x4      adapters of 4x the rank

a model file defines build_model() returning an nn.Module (or a module-level `model`), and
optionally make_batch(batch_size, seq_len, device), loss_fn(model, batch) and LORA_TARGETS.
Adapters already in the model (PEFT, torchtune) are used as they are.

distributed (torchrun):
  torchrun --nproc_per_node N -m lora_profiler.trace [model.py] ... runs every rank on its own
  shard of the batch (--batch-size is the global batch), each training mode wrapped as users
  wrap it (--wrap ddp: DistributedDataParallel over the mode's trainable parameters; the frozen
  floor and forward have none and run unwrapped), timed in lock-step (a barrier before every
  block), traces per rank in tb/<mode>/<mode>.rank<R>.<ns>.pt.trace.json.gz; rank 0 writes one
  report with every rank's step times and the communication. A rank that dies or hangs past
  --dist-timeout stops the run with one line naming it; what was measured stays in facts.json.

interrupted runs:
  Ctrl-C or SIGTERM writes what was measured (facts.json, "status": "interrupted"), builds the
  report from it and exits 130 (SIGINT) or 143 (SIGTERM); --resume DIR finishes the run,
  keeping every finished timed and profiled round. One run at a time per folder (OUT/.lock).

examples:
  python -m lora_profiler.trace --out runs/first
  python -m lora_profiler.trace --preset gpt2-small --steps 10 --device cuda
  python -m lora_profiler.trace my_model.py --targets q_proj,v_proj --rank 16
  python -m lora_profiler.analyze runs/first          # read a run again, or any trace
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def _modes(text: str) -> tuple[str, ...]:
    from .workload.variants import is_strategy

    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in MODES and not is_strategy(m)]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode {', '.join(bad) or repr(text)}; choose from {', '.join(MODES)} or a strategy: "
            "fused-lora, lora-top:K, partial-top:K, lora-fa, partial-connections:F, lora-compiled")
    return names


def _variants(text: str) -> tuple[str, ...]:
    from .workload.variants import is_variant

    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if not is_variant(m)]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant {', '.join(bad) or repr(text)}; choose from no-dropout, fold-scale, "
            "upper-half, rank-xN (N >= 2)")
    return names


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one module-name pattern, e.g. q_proj,v_proj")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m lora_profiler.trace",
        description="Time one model and batch under full fine-tuning, LoRA, a frozen-weight floor "
                    "and forward-only; record torch.profiler traces; attribute LoRA's overhead.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a model .py file (default: the built-in preset)")
    w = p.add_argument_group("workload")
    w.add_argument("--preset", default=None, help="built-in model preset (default: 'default'; see --list-presets)")
    w.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    w.add_argument("--batch-size", type=_positive_int, help="sequences per step")
    w.add_argument("--seq-len", type=_positive_int, help="tokens per sequence")
    w.add_argument("--layers", type=_positive_int, help="preset: number of transformer blocks")
    w.add_argument("--width", type=_positive_int, help="preset: hidden size (n_embd)")
    w.add_argument("--heads", type=_positive_int, help="preset: attention heads")
    lo = p.add_argument_group("LoRA (when the model has no adapters of its own)")
    lo.add_argument("--targets", type=_targets, help="comma-separated module-name patterns "
                    "(suffix at a dot, or a regex); 'all-linear' for every linear but lm_head; "
                    "default: the attention projections")
    lo.add_argument("--rank", type=_positive_int, default=8, help="LoRA rank r (default 8)")
    lo.add_argument("--alpha", type=_positive_float, default=16.0, help="LoRA alpha; scale = alpha/r (default 16)")
    lo.add_argument("--dropout", type=_probability, default=0.05, help="LoRA dropout (default 0.05)")
    m = p.add_argument_group("measurement")
    m.add_argument("--modes", type=_modes, default=MODES,
                   help="comma-separated modes: full, lora, frozen, forward, and strategies (below)")
    m.add_argument("--steps", type=_positive_int, default=15,
                   help="timed steps per mode (default 15), run in rounds: each round runs every mode in "
                        "turn, one untimed switch-in step then up to --block timed steps")
    m.add_argument("--block", type=_positive_int, default=3,
                   help="timed steps per mode and round (default 3)")
    m.add_argument("--warmup", type=int, default=1, help="warm-up rounds, one step per mode each (default 1)")
    m.add_argument("--profile-steps", type=_positive_int, default=5,
                   help="profiled rounds: one recorded step per mode each; the attribution gives the "
                        "median over them with min-max (default 5)")
    m.add_argument("--validate", action="store_true",
                   help="also time the ablation variants (see below) and compare the saving each "
                        "brings with the saving the attribution predicts")
    m.add_argument("--variants", type=_variants, default=None, metavar="LIST",
                   help="the ablation variants --validate times (default: no-dropout,fold-scale,"
                        "upper-half,rank-x4)")
    m.add_argument("--advise", "--predict", dest="predict", action="store_true",
                   help="also record every mode's ops (and strategies' not run) and this device's rates, "
                        "predict each step time with the cost model beside the measurement, on this "
                        "device and on A100/H100/H200 tables, and recommend a strategy")
    m.add_argument("--no-calibrate", action="store_true",
                   help="skip the profiler-cost calibration (components are then not corrected "
                        "for the profiler's own cost; not recommended)")
    m.add_argument("--no-profile", action="store_true", help="skip the profiled runs (no traces, no attribution)")
    m.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    m.add_argument("--seed", type=int, default=0, help="seed for weights and batch (default 0)")
    m.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="cast the model to this dtype (default: keep it; built-in presets are float32)")
    m.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's own choice)")
    d = p.add_argument_group("distributed (under torchrun; ignored without it)")
    d.add_argument("--wrap", choices=("ddp", "fsdp"), default="ddp",
                   help="how each training mode's model is wrapped (default ddp; fsdp: "
                        "FullyShardedDataParallel with use_orig_params, where the device and model allow)")
    d.add_argument("--dist-timeout", type=_positive_float, default=120.0, metavar="S",
                   help="seconds a rank waits for the others at a barrier or collective before the "
                        "run stops naming the ranks that did not come (default 120)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="run folder (default runs/<timestamp>; never overwrites a run)")
    o.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the interrupted run in DIR with the options it was started with "
                        "(only --quiet, --no-figures, --debug may be given): finished timed and "
                        "profiled rounds are kept, the rest is measured, then the report is written")
    o.add_argument("--no-figures", action="store_true", help="skip drawing figures")
    o.add_argument("--quiet", action="store_true", help="no progress bar or summary; only the JSON line")
    o.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


# Bad input: printed as one line, exit status 2 (the API's SettingsError, so both say the same).
from .api import SettingsError as UsageError  # noqa: E402


def resolve_device(text: str):
    from .api import resolve_device as resolve

    return resolve(text, cli=True)


def resolve_out(out: Optional[Path]) -> Path:
    """The run folder: never one that already holds a run (``runlock.claim`` checks again
    under the folder's lock)."""
    from .api import resolve_out as resolve

    return resolve(out, cli=True)


# Options not stored for --resume (the resuming command's own apply), and those --resume may be
# given (--no-figures is stored: figures stay off when either command turned them off).
_NOT_STORED = ("resume", "out", "quiet", "debug", "list_presets")
_WITH_RESUME = _NOT_STORED + ("no_figures",)


def _stored_args(args) -> dict:
    """The options --resume needs to rebuild the same run (JSON; the model file's path made
    absolute)."""
    stored = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()
              if k not in _NOT_STORED}
    if stored.get("model"):
        stored["model"] = str(Path(stored["model"]).resolve())
    return stored


def _claim_resume(args, held: list):
    """Lock the folder --resume continues; returns (its facts, the run's options)."""
    from .capture.checkpoint import load_previous
    from .runlock import claim

    parser = build_parser()
    if args.out is not None:
        raise UsageError("--resume continues the run in its own folder; drop --out")
    given = [k for k, v in vars(args).items() if k not in _WITH_RESUME and v != parser.get_default(k)]
    if given:
        raise UsageError("--resume continues a run with the options it was started with; drop "
                         + ", ".join(f"--{k.replace('_', '-')}" if k != "model" else "the model file"
                                     for k in given))
    held.append(claim(args.resume, resume=True))
    previous = load_previous(args.resume)
    stored = (previous.get("progress") or {}).get("args")
    if stored is None and previous.get("status") != "complete":
        raise UsageError(f"--resume {args.resume}: the run's options are not in its facts.json "
                         "(not started by python -m lora_profiler.trace); start a new run")
    merged = dict(vars(args))
    for k, v in (stored or {}).items():
        if k in merged:
            merged[k] = tuple(v) if isinstance(v, list) else v
    merged["no_figures"] = args.no_figures or bool((stored or {}).get("no_figures"))
    merged["out"] = args.resume
    return previous, argparse.Namespace(**merged)


def _build_workload(args, device):
    from .workload.presets import PRESETS, get_preset, with_overrides
    from .workload.spec import LoraOptions, build_file_workload, build_preset_workload

    lora = LoraOptions(rank=args.rank, alpha=args.alpha, dropout=args.dropout, targets=args.targets)
    if args.model is not None:
        if args.preset or args.layers or args.width or args.heads:
            raise UsageError("--preset/--layers/--width/--heads apply to built-in presets, not a model file")
        return build_file_workload(args.model, device, lora, batch_size=args.batch_size or 8,
                                   seq_len=args.seq_len or 128, seed=args.seed, dtype=_dtype(args))
    name = args.preset or "default"
    if name not in PRESETS:
        raise UsageError(f"--preset {name!r} is unknown; choose from {', '.join(PRESETS)}")
    try:
        preset = with_overrides(get_preset(name), n_layer=args.layers, n_embd=args.width,
                                n_head=args.heads, batch_size=args.batch_size, seq_len=args.seq_len)
    except ValueError as exc:
        raise UsageError(str(exc).strip("'\""))
    return build_preset_workload(preset, device, lora, seed=args.seed, dtype=_dtype(args))


def _dtype(args):
    import torch

    return getattr(torch, args.dtype) if args.dtype else None


# This rank's capture.distributed.DistContext under torchrun (None without it).
_DIST: list = []


def run(args) -> tuple[int, dict]:
    """Capture, then build the report, holding the run folder's lock. Returns (exit status,
    headline); interrupted by SIGINT/SIGTERM: the facts so far and their report, 128 + signal."""
    from . import runstate

    held: list = []  # the run folder's lock, once claimed
    try:
        return _run(args, held)
    except BaseException as exc:
        if held and type(exc).__name__ == "DistError":
            _dist_failed(held[0].folder)
            raise
        if held and (isinstance(exc, KeyboardInterrupt) or runstate.received()):
            return _interrupted(args, held[0].folder, exc)
        if held and isinstance(exc, OSError) and (held[0].folder / "facts.json").is_file():
            from .fileio import write_error

            exc = write_error(getattr(exc, "filename", None) or held[0].folder, exc)
            exc.hint = (f" (the run stopped; what it measured is in {held[0].folder}/facts.json: "
                        f"--resume {held[0].folder} continues it once that is fixed)")
            raise exc from None
        raise
    finally:
        for lock in held:
            lock.release()
        while _DIST:
            _DIST.pop().close()


def _dist_failed(out: Path) -> None:
    """Rank 0 after another rank failed: the facts of the last finished round are on disk
    (capture wrote them as interrupted); the report from them, quickly and without figures,
    while torchrun's SIGTERM to the survivors waits (it comes once a rank has failed)."""
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from .report.build import build_report

        build_report(out, figures=False)
        print(f"lora_profiler: what was measured is in {out}/facts.json and {out}/report.md",
              file=sys.stderr)
    except Exception as err:  # noqa: BLE001 - the report is a courtesy here: one line
        print(f"lora_profiler: report not written: {err}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(args, out: Path, exc: BaseException) -> tuple[int, dict]:
    """After SIGINT/SIGTERM: the facts so far are on disk (made sure of here); build the
    report from them (no figures: quick) and say what is missing."""
    from . import runstate
    from .capture.checkpoint import mark_interrupted

    signum = runstate.signum_of(exc)
    status = 128 + signum
    if _DIST and signum == signal_number("SIGTERM"):  # torchrun stops the survivors of a failed rank
        try:
            states = _DIST[0].peers()
        except Exception:  # noqa: BLE001
            states = {}
        bad = [f"rank {r} {s}" for r, s in sorted(states.items()) if s in ("dead", "stopped", "silent")]
        if bad:
            print(f"lora_profiler: stopped by torchrun after a failed rank: {', '.join(bad)}", file=sys.stderr)
    headline = {"out": str(out), "status": "interrupted", "signal": runstate.signal_name(signum),
                "report": None, "resume": f"python -m lora_profiler.trace --resume {out}"}
    facts = mark_interrupted(out, signum)
    if facts is None:
        headline["resume"] = None
        print(f"lora_profiler: interrupted by {headline['signal']} before anything was measured; "
              "nothing to resume", file=sys.stderr)
        return status, headline
    if runstate.is_complete(facts):
        print(f"lora_profiler: interrupted by {headline['signal']} while writing the report; the "
              f"measurements are complete in {out}/facts.json: --resume {out} writes the report",
              file=sys.stderr)
        return status, headline
    try:
        from .report.build import build_report

        report = build_report(out, figures=False)
        headline["report"] = str(out / "report.json")
        if not args.quiet:
            from .report.text import summary_text

            print(summary_text(report))
    except KeyboardInterrupt:
        print("lora_profiler: report not written (interrupted again)", file=sys.stderr)
    except (ValueError, OSError) as err:  # RunError, TraceError, WriteError: one line
        print(f"lora_profiler: report not written: {err}", file=sys.stderr)
    if args.quiet or headline["report"] is None:
        print(f"lora_profiler: {runstate.incomplete_line(facts, str(out))}", file=sys.stderr)
    return status, headline


def signal_number(name: str) -> int:
    import signal

    return int(getattr(signal, name))


def _run(args, held: list) -> tuple[int, dict]:
    """Capture, then build the report. Returns (exit status, headline)."""
    from .capture.distributed import launched

    if launched():
        from .trace_distributed import run_distributed

        return run_distributed(args, held)
    from .capture.checkpoint import Checkpoint
    from .capture.run import capture
    from .runlock import claim
    from .workload.errors import WorkloadError

    previous = None
    if args.resume is not None:
        previous, args = _claim_resume(args, held)
        if previous.get("status") == "complete":
            return _report_only(args, previous)
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup} must be 0 or more")
    out = args.out if previous is not None else resolve_out(args.out)
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        workload = _build_workload(args, device)
    except WorkloadError as exc:
        raise UsageError(str(exc))
    from .api import capture_options

    options = capture_options(
        modes=args.modes, steps=args.steps, block=args.block, warmup=args.warmup,
        profile_steps=args.profile_steps, profile=not args.no_profile, validate=args.validate,
        variants=args.variants, calibrate=not args.no_calibrate, seed=args.seed, predict=args.predict, cli=True)
    if not held:
        held.append(claim(out, auto=args.out is None))
        out = held[0].folder
    if held[0].took_over:
        print(f"lora_profiler: took over the stale lock of {out} (pid {held[0].took_over.get('pid')} "
              "is no longer running)", file=sys.stderr)
    if not args.quiet:
        from .report.describe import model_text

        print(f"lora_profiler: {workload.name} ({model_text(workload.facts())}) on {device}; "
              f"{len(workload.adapters.layers)} {workload.adapters.source} adapters; "
              f"{'resuming' if previous else 'writing'} {out}/", file=sys.stderr)
    facts = capture(workload, options, out, progress=not args.quiet,
                    checkpoint=Checkpoint(out, args=_stored_args(args), previous=previous))
    del workload

    from .report.build import build_report

    report = build_report(out, figures=not args.no_figures)
    report["elapsed_s"] = time.perf_counter() - started
    return _finish(args, out, facts, report)


def _report_only(args, facts: dict) -> tuple[int, dict]:
    """--resume of a run whose measurements are complete: write its report."""
    from .report.build import build_report

    if (args.out / "report.json").is_file() and (args.out / "report.md").is_file():
        raise UsageError(f"--resume {args.out}: the run is complete and reported; "
                         f"python -m lora_profiler.analyze {args.out} reads it again")
    return _finish(args, args.out, facts, build_report(args.out, figures=not args.no_figures))


def _finish(args, out: Path, facts: dict, report: dict) -> tuple[int, dict]:
    """Print the summary; (exit status, headline)."""
    if not args.quiet:
        from .report.text import summary_text

        print(summary_text(report))
    from .api import run_headline

    headline = run_headline(report, facts, out)
    failed = headline["failed"]
    return (1 if failed else 0), headline


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        from .workload.presets import PRESETS

        for name, preset in PRESETS.items():
            print(f"{name:12s} {preset.description}")
        return 0
    from . import runstate
    from .capture.checkpoint import ResumeError
    from .fileio import WriteError
    from .capture.distributed import DistError
    from .runlock import FolderError

    try:
        with runstate.interrupts():
            status, headline = run(args)
    except DistError as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except (UsageError, FolderError, ResumeError, WriteError) as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 128 + runstate.signum_of(exc)
    except OSError as exc:  # a write that failed outside fileio (a trace, a figure)
        if args.debug or not exc.filename:
            raise
        print(f"{parser.prog}: error: cannot write {exc.filename}: {exc.strerror}; free some space "
              "or choose another --out", file=sys.stderr)
        return 2
    if headline.get("rank", 0) == 0:  # under torchrun only rank 0 prints the headline
        print(json.dumps(headline))
    return status


if __name__ == "__main__":
    # run as ``python -m lora_profiler.trace``: this file is ``__main__``, a second copy of the
    # module beside the ``lora_profiler.trace`` that trace_distributed imports; the run goes
    # through that one, so module state (the rank's DistContext in _DIST) is shared
    from lora_profiler.trace import main as _main

    sys.exit(_main())

