"""One paper style for every figure: fonts, sizes, colours, units, the device label, saving.

Sized for a two-column paper (a column is 3.4 in wide, the page 7.0 in); serif text at 8 pt
(STIX, a Times look-alike shipped with matplotlib, so no system font is needed); PDF fonts
embedded as TrueType (Type 42), which venues accept where Type 3 is refused.

Colours are the Okabe–Ito palette (Okabe & Ito 2008), safe for the common colour-vision
deficiencies. Each mode owns one colour everywhere; ``ADAPTER`` (the adapter path) is the LoRA
colour and ``BASE`` (the frozen base layers) a neutral grey, so "adapter vs base" reads the same
in every figure. Stacked categories that are not modes (overhead components, memory kinds) take
``CATEGORY_COLORS``, chosen apart from the mode colours.

No torch import: figures draw from report data alone.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterator, Optional

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLUMN_IN = 3.4  # one column of a two-column paper, inches
PAGE_IN = 7.0  # both columns
DPI = 300

# Okabe–Ito, one per mode.
MODE_COLORS: dict[str, str] = {
    "full": "#0072B2",  # blue
    "lora": "#D55E00",  # vermillion
    "frozen": "#009E73",  # bluish green
    "forward": "#CC79A7",  # reddish purple
}
MODE_LABELS: dict[str, str] = {
    "full": "full FT",
    "lora": "LoRA",
    "frozen": "frozen (floor)",
    "forward": "forward only",
}
ADAPTER = MODE_COLORS["lora"]
BASE = "#555555"
OTHER = "#BBBBBB"
NEUTRAL = "#7F7F7F"  # reference lines: naive expectations, y = 1

# For stacked categories that are not modes. Okabe–Ito's remaining hues plus Paul Tol's
# "muted" set, ordered so neighbouring segments differ in lightness as well as hue.
CATEGORY_COLORS: tuple[str, ...] = (
    "#332288",  # indigo
    "#E69F00",  # orange
    "#88CCEE",  # light blue
    "#882255",  # wine
    "#DDCC77",  # sand
    "#44AA99",  # teal
    "#AA4499",  # purple
)
# Shades of a mode's colour for the phases of a step (forward darkest).
PHASE_ALPHA: dict[str, float] = {"forward": 1.0, "backward": 0.6, "optimizer": 0.3}
PHASE_HATCH: dict[str, str] = {"forward": "", "backward": "", "optimizer": "////"}

RC: dict = {
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "Times New Roman", "Times", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "hatch.linewidth": 0.5,
    "hatch.color": "white",
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "figure.dpi": 100,
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply the paper rcParams to what is drawn (and saved) inside the block.

    Text takes its font when it is created, so a figure function draws everything inside it.
    """
    with matplotlib.rc_context(RC):
        yield


class PaperFigure(Figure):
    """A matplotlib ``Figure`` that shows itself in a notebook (``_repr_png_``).

    Figures here are built without pyplot, so no inline backend registers a display hook for
    them; IPython calls ``_repr_png_`` instead, and a cell ending in ``timeline_figure(report)``
    shows the figure once (pyplot's inline backend, if active, takes precedence; still once).
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        with paper_style():
            self.savefig(buf, format="png", dpi=150)
        return buf.getvalue()


def new_figure(width_in: float = COLUMN_IN, height_in: float = 2.3, **subplots) -> tuple[Figure, object]:
    """A ``PaperFigure`` on an Agg canvas and its axes (``Figure.subplots`` arguments).

    Built without pyplot: no global figure list, no GUI backend, and the backend a notebook
    chose stays as it was. Call inside ``paper_style()``.
    """
    fig = PaperFigure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(**subplots)
    return fig, axes


# Strategies (their name before any ":K"): the remaining Okabe-Ito and Tol hues.
STRATEGY_COLORS: dict[str, str] = {
    "fused-lora": "#E69F00",  # orange
    "lora-top": "#56B4E9",  # sky blue
    "partial-top": "#332288",  # indigo
    "lora-fa": "#882255",  # wine
    "partial-connections": "#44AA99",  # teal
    "lora-compiled": "#AA4499",  # purple
}


def mode_color(mode: str) -> str:
    """The one colour of ``mode`` or strategy (grey for an unknown one)."""
    return MODE_COLORS.get(mode) or STRATEGY_COLORS.get(mode.split(":")[0], NEUTRAL)


def mode_label(mode: str) -> str:
    return MODE_LABELS.get(mode, mode)


def time_unit(max_seconds: float) -> tuple[str, float]:
    """(unit label, factor from seconds) that keeps ``max_seconds`` between 1 and 1000."""
    if max_seconds >= 1:
        return "s", 1.0
    if max_seconds >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def byte_unit(max_bytes: float) -> tuple[str, float]:
    """(unit label, divisor from bytes): GiB, MiB or KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if max_bytes >= size:
            return unit, float(size)
    return "KiB", 1024.0


def device_text(environment: Optional[dict]) -> str:
    """One line naming the hardware a figure's numbers were measured on."""
    env = environment or {}
    name = env.get("gpu_name") or env.get("device_name") or "unknown device"
    parts = [str(name)]
    if env.get("device") == "cpu" and env.get("threads"):
        parts.append(f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}")
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    return ", ".join(parts)


def label_device(fig: Figure, environment: Optional[dict]) -> None:
    """Write the device line in the figure's top right corner (every figure carries one)."""
    fig.suptitle(device_text(environment), x=0.995, ha="right", fontsize=6, color=NEUTRAL,
                 fontweight="normal")
    # suptitle keeps constrained layout aware of it, so it never overlaps the axes


def save_figure(fig: Figure, path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (300 dpi) and ``<stem>.pdf``; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with paper_style():
        for ext in ("png", "pdf"):
            path = stem.with_name(stem.name + "." + ext)
            fig.savefig(path, dpi=DPI, metadata=_metadata(ext))
            out.append(path)
    return out


def _metadata(ext: str) -> dict:
    # Reproducible files: no creation date, a fixed producer.
    if ext == "pdf":
        return {"CreationDate": None, "Creator": "lora_profiler"}
    return {"Software": "lora_profiler"}
