"""The library's front door for scripts and notebooks: profile a model in memory, open a run folder.

    import lora_profiler as lp

    run = lp.profile(model, batch)          # full, lora, frozen, forward: timed, traced, attributed
    run                                     # step times and speedups (a table in a notebook)
    run.attribution()                       # where LoRA's overhead goes, with each cause's spread
    run.figures()["overhead"]               # the report's figures, drawn in the house style
    run.trace("lora")                       # the columnar event tables of a mode's trace
    lp.Run("runs/first")                    # a run folder written before, by profile() or the CLI

``profile`` treats the model as a model file's ``build_model()`` result (README "Your model"):
the default batch, loss and LoRA targets are the same, and so is what it does to the model (see
``profile``). The command lines (``python -m lora_profiler.trace``/``analyze``) are thin layers
over this module and the report builder.

Importing this module does not import torch: ``profile`` does, when called.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

# Kineto prints a line per profiler session and c10 warns about blocks allocated before profiling:
# neither helps a user. c10 reads its level when torch loads, so set it here, before a notebook's
# first torch import when lora_profiler is imported first (as capture/__init__.py; a user's wins).
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from .events import Trace, load_trace  # noqa: E402
from .names import BASE_MODES  # noqa: E402
from .run_folder import RunError, load_facts, trace_files  # noqa: E402
from .table import Column, Table, Tabular, fmt_count  # noqa: E402

__all__ = ["profile", "Run", "Settings", "SettingsError", "load_trace", "example_model", "compare", "resolve_device",
           "resolve_out", "capture_options", "run_headline", "Comparison", "FigureSet", "Advice"]


class SettingsError(ValueError):
    """A bad setting (the message names it and the fix). The command line prints it as one line
    and exits with status 2."""


def _named(name: str, value: Any, cli: bool) -> str:
    """How a message names a setting: ``--device 'x'`` on the command line, ``device='x'`` here."""
    return f"--{name.replace('_', '-')} {value}" if cli else f"{name}={value!r}"


def resolve_device(text: str = "auto", cli: bool = False):
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``.

    Raises:
        SettingsError: not a device, or CUDA asked for where there is none.
    """
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise SettingsError((f"--device {text!r}" if cli else f"device={text!r}")
                            + " is not a device; use auto, cpu, cuda or cuda:N") from None
    named = _named("device", text, cli)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"{named}: no CUDA device is available here; use "
                                + ("--device cpu" if cli else "device='cpu'"))
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"{named}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise SettingsError(f"{named}: only cpu and cuda are supported")
    return device


def resolve_out(out: Optional[Union[str, Path]], cli: bool = False) -> Path:
    """The run folder: ``runs/<timestamp>`` (in the working folder) when ``out`` is None, and
    never one that already holds files.

    Raises:
        SettingsError: ``out`` is a file, or a folder that is not empty.
    """
    if out is None:
        base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
        return out
    out = Path(out)
    if cli:  # the command line's words, and another live run's lock named (runlock.claim checks again)
        from .runlock import check_new

        check_new(out)
        return out
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{_named('out', out, False)}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise SettingsError(f"{_named('out', out, False)}: folder is not empty (it may hold an earlier run); "
                            "choose a new one")
    return out


def capture_options(modes: Sequence[str] = BASE_MODES, steps: int = 15, block: int = 3, warmup: int = 1,
                    profile_steps: int = 5, profile: bool = True, validate: bool = False,
                    variants: Optional[Sequence[str]] = None, calibrate: bool = True, seed: int = 0,
                    predict: bool = False, cli: bool = False):
    """The ``CaptureOptions`` of these settings, checked against each other.

    Raises:
        SettingsError: variants without validate; validate without lora and frozen, or without
            profiling.
    """
    from .capture.run import CaptureOptions, ProfileSchedule
    from .workload.variants import VALIDATION_VARIANTS

    if variants and not validate:
        raise SettingsError("--variants lists what --validate times; add --validate" if cli else
                            "variants= lists what validate=True times; add validate=True")
    if validate and not {"lora", "frozen"} <= set(modes):
        raise SettingsError("--validate compares LoRA variants with the lora mode against the frozen "
                            "floor: keep lora and frozen in " + ("--modes" if cli else "modes"))
    if validate and not profile:
        raise SettingsError("--validate predicts savings from the attribution, which needs the profiled "
                            "runs: " + ("drop --no-profile" if cli else "drop profile=False"))
    chosen = (tuple(variants or VALIDATION_VARIANTS)) if validate else ()
    return CaptureOptions(
        modes=tuple(modes), warmup_steps=warmup, steps=steps, block=block, seed=seed,
        profile=ProfileSchedule(wait=0, warmup=1, active=profile_steps) if profile else None,
        variants=chosen, calibrate=calibrate, predict=predict)


def run_headline(report: dict, facts: dict, out: Path) -> dict:
    """The headline of a run: the JSON object the trace command prints last."""
    att = report.get("attribution") or {}
    return {
        "out": str(out),
        "report": str(Path(out) / "report.json"),
        "step_time_s": {m: (e.get("step_time_s") or {}).get("median") for m, e in report["modes"].items()},
        "speedup": report.get("speedup"),
        "overhead_s": att.get("overhead_s"),
        "residual_s": att.get("residual_s"),
        "failed": failed_modes(facts),
    }


def failed_modes(facts: dict) -> list[str]:
    """Modes (and variants) whose status is not ok."""
    return [m for m, e in facts["modes"].items() if e["status"] != "ok"]


# --- settings of profile() ---------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """What ``profile(model, ..., **settings)`` accepts; each is the command line's flag of the
    same name (``python -m lora_profiler.trace --help``).

    Measurement: ``steps`` timed steps per mode (15), in rounds of ``block`` (3) after ``warmup``
    warm-up rounds (1); ``profile_steps`` profiled rounds (5), ``profile`` (False: no traces, no
    attribution); ``validate`` (time the ablation variants, ``variants`` to choose them);
    ``calibrate`` (the profiler-cost calibration); ``device`` (auto, cpu, cuda, cuda:N);
    ``dtype`` (cast the model: "bfloat16", "float16", "float32" or a torch dtype); ``seed``;
    ``threads`` (torch CPU threads).
    LoRA, when the model has no adapters of its own: ``targets`` (module-name patterns, or
    "all-linear"), ``rank`` (8), ``alpha`` (16), ``dropout`` (0.05).
    Batch, when ``batch`` is not given: ``batch_size`` (8) and ``seq_len`` (128).
    Output: ``figures`` (draw the figures), ``progress`` (a progress bar: tqdm.auto, a widget in
    Jupyter), ``name`` (the workload's name in the report).
    """

    steps: int = 15
    block: int = 3
    warmup: int = 1
    profile_steps: int = 5
    profile: bool = True
    validate: bool = False
    variants: Optional[tuple[str, ...]] = None
    calibrate: bool = True
    device: str = "auto"
    dtype: Any = None
    seed: int = 0
    threads: Optional[int] = None
    targets: Optional[tuple[str, ...]] = None
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    batch_size: Optional[int] = None
    seq_len: Optional[int] = None
    figures: bool = True
    progress: bool = True
    name: str = "model"

    def __post_init__(self):
        for key in ("steps", "block", "profile_steps", "rank"):
            _positive_int(key, getattr(self, key))
        for key in ("threads", "batch_size", "seq_len"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise SettingsError(f"warmup={self.warmup!r}: must be 0 or more")
        if not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < float("inf"):
            raise SettingsError(f"alpha={self.alpha!r}: must be a positive number")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SettingsError(f"dropout={self.dropout!r}: must be in [0, 1)")
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(t.strip() for t in self.targets.split(",") if t.strip()))
        if isinstance(self.variants, str):
            object.__setattr__(self, "variants", tuple(v.strip() for v in self.variants.split(",") if v.strip()))
        if self.variants:
            from .workload.variants import is_variant

            bad = [v for v in self.variants if not is_variant(v)]
            if bad:
                raise SettingsError(f"variants: unknown {', '.join(bad)}; choose from no-dropout, fold-scale, "
                                    "upper-half, rank-xN (N >= 2)")

    @classmethod
    def of(cls, settings: dict) -> "Settings":
        """Settings from keyword arguments, naming the valid ones when one is unknown."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**settings)

    def torch_dtype(self):
        """The dtype to cast to, as a torch dtype (None: keep the model's)."""
        import torch

        if self.dtype is None or isinstance(self.dtype, torch.dtype):
            return self.dtype
        name = str(self.dtype).replace("torch.", "")
        if name not in ("float32", "bfloat16", "float16"):
            raise SettingsError(f"dtype={self.dtype!r}: choose float32, bfloat16 or float16")
        return getattr(torch, name)


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SettingsError(f"{key}={value!r}: must be a positive integer")


# --- profile ---------------------------------------------------------------------------------

def example_model(preset: str = "default", seed: int = 0):
    """A built-in preset's model (random weights, nothing downloaded) and a token batch of the
    preset's shape: a stand-in for your own model and batch in examples and notebooks.

    Args:
        preset: a name from ``python -m lora_profiler.trace --list-presets`` (tiny, default, ...).
        seed: weights and token ids.

    Returns:
        ``(model, batch)``: an ``nn.Module`` and ``{"input_ids": (batch, seq) int64}``.

    Raises:
        SettingsError: unknown preset (the message lists them).
    """
    import torch

    from .workload.batch import token_batch
    from .workload.models import build_model
    from .workload.presets import get_preset

    try:
        p = get_preset(preset)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    torch.manual_seed(seed)
    model = build_model(p.config)
    return model, token_batch(p.config.vocab_size, p.batch_size, p.seq_len, torch.device("cpu"), seed)


def _workload(model, batch, loss_fn, device, s: Settings):
    """The workload of ``profile``'s arguments (a model object, a preset name or a model file)."""
    from .workload.batch import describe_batch
    from .workload.spec import LoraOptions, build_file_workload, build_preset_workload, build_workload

    lora = LoraOptions(rank=s.rank, alpha=s.alpha, dropout=s.dropout, targets=s.targets)
    dtype = s.torch_dtype()
    if isinstance(model, (str, os.PathLike)):
        if batch is not None or loss_fn is not None:
            raise SettingsError("batch and loss_fn go with a model object; a model file defines make_batch and "
                                "loss_fn, a preset has its own")
        text = str(model)
        if text.endswith(".py") or Path(text).exists():
            return build_file_workload(text, device, lora, batch_size=s.batch_size or 8, seq_len=s.seq_len or 128,
                                       seed=s.seed, dtype=dtype)
        from .workload.presets import get_preset, with_overrides

        try:
            preset = with_overrides(get_preset(text), batch_size=s.batch_size, seq_len=s.seq_len)
        except ValueError as exc:
            raise SettingsError(f"model={text!r}: {exc}; a string names a preset or a model .py file") from None
        return build_preset_workload(preset, device, lora, seed=s.seed, dtype=dtype)
    make_batch: Optional[Callable] = None
    batch_size, seq_len = s.batch_size or 8, s.seq_len or 128
    if callable(batch) and not hasattr(batch, "shape"):
        make_batch = batch  # make_batch(batch_size, seq_len, device), as in a model file
    elif batch is not None:
        shape = describe_batch(batch).get("shape") or []
        if s.batch_size is not None or s.seq_len is not None:
            raise SettingsError("batch_size and seq_len make the default batch; a given batch has its own shape")
        batch_size = int(shape[0]) if shape else 1
        seq_len = int(shape[1]) if len(shape) >= 2 and describe_batch(batch)["kind"] == "tokens" else 1

        def make_batch(_b, _t, _device, given=batch):
            return given
    return build_workload(model, device, lora, batch_size, seq_len, seed=s.seed, dtype=dtype,
                          make_batch=make_batch, loss_fn=loss_fn, name=s.name,
                          where=f"profile({s.name})" if s.name != "model" else "profile(model)")


def profile(model: Any, batch: Any = None, loss_fn: Optional[Callable] = None,
            modes: Sequence[str] = BASE_MODES, out: Optional[Union[str, Path]] = None, **settings) -> "Run":
    """Time ``model`` under full fine-tuning, LoRA, the frozen floor and forward-only, record
    profiled rounds, attribute LoRA's overhead, and write a run folder.

    The model is treated as a model file's ``build_model()`` result (README "Your model"): it is
    moved to the device (and cast with ``dtype``) and, when it has no adapters of its own (PEFT,
    torchtune), LoRA is injected into it. **This changes the model object in place** (its
    modules, ``requires_grad`` flags and device): pass ``copy.deepcopy(model)`` to keep yours.
    PEFT and torchtune adapters already in it run as built.

    Args:
        model: an ``nn.Module``; or a preset name ("tiny", "default", ...) or a model ``.py`` file,
            as the command line's ``--preset``/``model`` argument.
        batch: what one step feeds the model: a tensor, dict, tuple... (moved to the device; its
            shape sets the batch size and sequence length), or a callable
            ``make_batch(batch_size, seq_len, device)``; None: the model file's default (random token
            ids below the vocabulary size, labels a Hugging Face head expects).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; None: the default (``model(**batch).loss``
            for Hugging Face models, else next-token cross-entropy of the logits).
        modes: a subset of full, lora, frozen, forward.
        out: the run folder (created; must not hold files). None: a temporary folder, deleted
            when the returned ``Run`` is garbage-collected or the interpreter exits
            (``run.save(path)`` keeps it); the command line writes ``runs/<timestamp>`` instead.
        **settings: see ``Settings`` (steps, block, warmup, profile_steps, profile, validate,
            variants, calibrate, device, dtype, seed, threads, targets, rank, alpha, dropout,
            batch_size, seq_len, figures, progress, name).

    Returns:
        The ``Run``. A mode that failed (out of memory, NaN loss, your loss raised) is in
        ``run.failed`` with its error; the other modes ran.

    Raises:
        SettingsError: an unknown or bad setting.
        WorkloadError: a model, batch or loss that does not fit (one line naming the problem).
    """
    s = Settings.of(settings)
    bad = [m for m in modes if m not in BASE_MODES]
    if isinstance(modes, str) or bad or not modes:
        raise SettingsError(f"modes={modes!r}: choose a subset of {', '.join(BASE_MODES)}")
    device = resolve_device(s.device)
    options = capture_options(modes=modes, steps=s.steps, block=s.block, warmup=s.warmup,
                              profile_steps=s.profile_steps, profile=s.profile, validate=s.validate,
                              variants=s.variants, calibrate=s.calibrate, seed=s.seed)
    temporary = out is None
    folder = Path(tempfile.mkdtemp(prefix="lora_profiler_")) if temporary else resolve_out(out)
    try:
        if s.threads:
            import torch

            torch.set_num_threads(s.threads)
        from .capture.run import capture
        from .report.build import build_report

        started = time.perf_counter()
        workload = _workload(model, batch, loss_fn, device, s)
        capture(workload, options, folder, progress=s.progress)
        del workload
        build_report(folder, figures=s.figures)
        elapsed = time.perf_counter() - started
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    run = Run(folder, temporary=temporary)
    run.elapsed_s = elapsed
    return run


# --- a run folder ------------------------------------------------------------------------------

class Run:
    """A run folder (written by ``profile`` or ``python -m lora_profiler.trace``), read lazily.

    Args:
        path: the folder (facts.json, report.json, tb/<mode>/ traces).
        temporary: delete the folder when this object is garbage-collected (``profile(out=None)``).

    Raises:
        RunError: no facts.json, or not a lora_profiler run.
    """

    def __init__(self, path: Union[str, Path], temporary: bool = False):
        self.path = Path(path)
        self._facts = load_facts(self.path)
        self._report: Optional[dict] = None
        self._traces: dict[str, Trace] = {}
        self._mode_traces: dict = {}
        self.elapsed_s: Optional[float] = None
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True) if temporary else None

    @property
    def temporary(self) -> bool:
        """True while the folder is deleted with this object (until ``save``)."""
        return self._finalizer is not None and self._finalizer.alive

    @property
    def facts(self) -> dict:
        """facts.json: what capture measured (docs/FORMAT.md)."""
        return self._facts

    @property
    def report(self) -> dict:
        """report.json (docs/FORMAT.md); built from the folder's files, without figures, when the
        folder has none yet."""
        if self._report is None:
            import json

            path = self.path / "report.json"
            if not path.is_file():
                from .report.build import build_report

                self._report = build_report(self.path, figures=False)
            else:
                self._report = json.loads(path.read_text())
        return self._report

    @property
    def modes(self) -> list[str]:
        """The modes (and ablation variants) of the run, in the order they were measured."""
        return list(self._facts.get("modes") or {})

    @property
    def failed(self) -> dict[str, str]:
        """mode -> error of every mode that did not run."""
        return {m: e.get("error") or e["status"] for m, e in (self._facts.get("modes") or {}).items()
                if e["status"] != "ok"}

    @property
    def speedup(self) -> dict:
        """lora_vs_full, ideal_vs_full, lora_vs_frozen: ratios of median step times (None when a
        mode is missing)."""
        return dict(self.report.get("speedup") or {})

    def step_times(self) -> Table:
        """Step time per mode with its spread, trainable parameters and memory (a ``Table``)."""
        from .report.tables import modes_table

        return modes_table(self.report)

    def speedups(self) -> Table:
        """The speedups with their 95% intervals (a ``Table``)."""
        from .report.tables import speedup_table

        return speedup_table(self.report)

    def trace_files(self, mode: str) -> list[Path]:
        """The trace files of ``mode`` (one per profiled round)."""
        files = trace_files(self.path, self._facts)
        if mode not in files:
            raise RunError(f"{self.path}: no traces of mode {mode!r} (traced: {', '.join(files) or 'none'}; "
                           "profile=False or a failed mode records none)")
        return files[mode]

    def trace(self, mode: str = "lora") -> Trace:
        """The loaded trace of ``mode`` (every profiled round; each is a step of its own), cached."""
        if mode not in self._traces:
            self._traces[mode] = load_trace([str(f) for f in self.trace_files(mode)])
        return self._traces[mode]

    def mode_trace(self, mode: str = "lora"):
        """The mode's trace with the role of every op on the adapter path, the profiler's cost
        per event and the causes per profiled round (``analyses.attribution.ModeTrace``), built
        once per mode, as the report builds them."""
        from .analyses.lora import mode_traces

        if mode not in self._mode_traces:
            self._mode_traces[mode] = mode_traces(self._facts, {mode: self.trace(mode)})[mode]
        return self._mode_traces[mode]

    def attribution(self):
        """Where LoRA's overhead over the frozen floor goes (``report.tables.Attribution``).

        Raises:
            RunError: the run has no attribution (no profiled lora and frozen modes, or one failed).
        """
        from .report.tables import Attribution

        att = self.report.get("attribution")
        if not att:
            raise RunError(f"{self.path}: no attribution: it needs timed lora and frozen modes and a lora trace "
                           f"(modes: {', '.join(self.modes)}; failed: {', '.join(self.failed) or 'none'})")
        return Attribution(att)

    def figures(self) -> "FigureSet":
        """The run's figures drawn from its report (nothing written): name -> matplotlib Figure.
        A figure whose data the run lacks is left out (``FigureSet.skipped`` says why)."""
        from .report.figures import RUN_FIGURES, FigureDataError

        got, skipped = {}, {}
        for name, draw in RUN_FIGURES.items():
            try:
                got[name] = draw(self.report)
            except FigureDataError as exc:
                skipped[name] = str(exc)
        return FigureSet(got, skipped)

    def advice(self) -> "Advice":
        """What the numbers mean for your choice (``report.advice``), as markdown sentences."""
        from .report.advice import advice

        return Advice(advice(self.report))

    def compare(self, a: str = "frozen", b: str = "lora", top: Optional[int] = 15) -> "Comparison":
        """Two modes' traces side by side, op by op (``b`` against the baseline ``a``)."""
        return compare(self.trace(a), self.trace(b), top=top)

    @property
    def html(self) -> Path:
        """The offline HTML report (report.html)."""
        return self.path / "report.html"

    def save(self, dest: Union[str, Path]) -> "Run":
        """Copy the run folder to ``dest`` (which must not exist) and return that run, kept."""
        dest = Path(dest)
        if dest.exists():
            raise SettingsError(f"save({str(dest)!r}): it exists; choose a new folder")
        shutil.copytree(self.path, dest)
        return Run(dest)

    def close(self) -> None:
        """Delete a temporary run folder now (nothing for a kept one)."""
        if self._finalizer is not None:
            self._finalizer()

    def summary(self) -> str:
        """One line: the workload, the step times, the speedups and the overhead."""
        wl = self._facts.get("workload") or {}
        parts = [f"{wl.get('name', '?')} on {(self._facts.get('environment') or {}).get('device_name', '?')}"]
        times = [f"{m} {_fmt_s((e.get('step_time_s') or {}).get('median'))}"
                 for m, e in (self._facts.get("modes") or {}).items() if e["status"] == "ok" and e.get("step_time_s")]
        if times:
            parts.append(", ".join(times))
        sp = self.speedup
        if sp.get("lora_vs_full") and sp.get("ideal_vs_full"):
            parts.append(f"LoRA {sp['lora_vs_full']:.2f}x, ideal {sp['ideal_vs_full']:.2f}x over full")
        att = self.report.get("attribution") or {}
        if att.get("overhead_s") is not None:
            parts.append(f"LoRA overhead {_fmt_s(att['overhead_s'])}")
        if self.failed:
            parts.append("failed: " + ", ".join(self.failed))
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<Run {self.path}: {self.summary()}>"

    def _repr_html_(self) -> str:
        import html

        return (f"<p><b>Run</b> <code>{html.escape(str(self.path))}</code>"
                + (" (temporary)" if self.temporary else "") + f"<br>{html.escape(self.summary())}</p>"
                + self.step_times().to_html() + self.speedups().to_html())


def _fmt_s(v: Optional[float]) -> str:
    from .units import fmt_s

    return fmt_s(v)


# --- small result objects ---------------------------------------------------------------------------

class FigureSet(dict):
    """name -> matplotlib Figure, shown together in a notebook; ``skipped``: name -> why not drawn."""

    def __init__(self, figures: dict, skipped: Optional[dict] = None):
        super().__init__(figures)
        self.skipped = dict(skipped or {})

    def __repr__(self) -> str:
        out = f"<{len(self)} figures: {', '.join(self)}>"
        if self.skipped:
            out += " (not drawn: " + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) + ")"
        return out

    def _repr_html_(self) -> str:
        import html

        parts = []
        for name, fig in self.items():
            png = base64.b64encode(fig._repr_png_()).decode("ascii")
            parts.append(f'<figure style="margin:0 0 1em 0"><img alt="{html.escape(name)}" style="max-width:100%" '
                         f'src="data:image/png;base64,{png}"><figcaption>{html.escape(name)}</figcaption></figure>')
        if self.skipped:
            parts.append("<p>not drawn: " + "; ".join(html.escape(f"{k}: {v}") for k, v in self.skipped.items())
                         + "</p>")
        return "".join(parts)


class Advice(list):
    """Sentences (markdown) on what a run means for your choice; shown as a list in notebooks."""

    def __repr__(self) -> str:
        return "\n".join(f"- {s}" for s in self) if self else "(no advice: the run has no lora or full mode)"

    def _repr_markdown_(self) -> str:
        return repr(self)


class Comparison(Tabular):
    """Two traces side by side (``compare_traces``): the ops (CPU traces) or kernels (GPU traces)
    whose time changed most, per step of each trace. ``doc`` is the full document."""

    def __init__(self, doc: dict, steps_a: int, steps_b: int):
        self.doc = doc
        self.steps_a, self.steps_b = max(steps_a, 1), max(steps_b, 1)

    def table(self, what: Optional[str] = None) -> Table:
        """``what``: "ops" or "kernels" (default: kernels when the traces have any, else ops)."""
        what = what or ("kernels" if self.doc.get("kernels") else "ops")
        na, nb = self.steps_a, self.steps_b
        rows = [(r["name"], r["count_a"] / na, r["count_b"] / nb, r["total_us_a"] / na, r["total_us_b"] / nb,
                 r["total_us_b"] / nb - r["total_us_a"] / na) for r in self.doc.get(what) or []]
        from .table import fmt_us

        unit = "GPU" if what == "kernels" else "CPU self"
        return Table([Column("name", what[:-1]), Column("calls_a", "calls a", fmt_count),
                      Column("calls_b", "calls b", fmt_count), Column("us_a", f"{unit} a", fmt_us),
                      Column("us_b", f"{unit} b", fmt_us), Column("delta_us", "b − a", fmt_us)], rows,
                     title=f"{what} with the largest {unit} time change, per step (a: {na} steps, b: {nb} steps)")


def compare(a: Trace, b: Trace, top: Optional[int] = 15) -> Comparison:
    """Trace ``b`` against the baseline ``a``: per name, calls and time per step of each."""
    from .analyses.compare import compare_traces

    return Comparison(compare_traces(a, b, top=top), len(a.steps), len(b.steps))
