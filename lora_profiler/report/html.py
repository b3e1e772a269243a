"""report.html: the whole report in one self-contained file that any browser opens offline.

No scripts, no external fonts, style sheets or images: the CSS is inline, the figures are the
run's PNG files embedded as base64 ``data:`` URIs, the tables are ``report.tables``' (the same
tables a notebook shows). Readable on a cluster without internet, mailed as one attachment.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from ..fileio import write_atomic
from . import tables
from .advice import advice
from .units import fmt_s

HTML_FILE = "report.html"

CSS = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table.lp-table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
table.lp-table caption { text-align: left; font-style: italic; padding-bottom: 0.3rem; }
table.lp-table th, table.lp-table td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #e3e3e3; text-align: left; }
table.lp-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.lp-table thead th { border-bottom: 2px solid #999; }
p.lp-notes { font-size: 0.85rem; color: #555; }
figure { margin: 1rem 0 1.5rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; }
.meta { color: #555; font-size: 0.9rem; } code { font-family: 'Courier New', monospace; }
"""


def _md(text: str) -> str:
    """The little markdown advice uses (**bold**, `code`) as HTML, everything else escaped."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _captions() -> dict:
    """figure name -> the first sentence of its drawing function's docstring."""
    try:
        from .figures import RUN_FIGURES
    except ImportError:  # matplotlib missing: no figures were drawn either
        return {}
    return {name: " ".join((fn.__doc__ or name).strip().split("\n\n")[0].split()) for name, fn in RUN_FIGURES.items()}


def _width(png: bytes) -> str:
    """A width attribute showing a figure saved at 300 dpi at 130 px per inch (a paper column,
    3.4 in, is 442 px; the page, 7 in, 910 px); '' when the PNG header is not readable."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return ""
    return f'width="{round(int.from_bytes(png[16:20], "big") / 300 * 130)}" '


def _figures(report: dict, run_dir: Path) -> tuple[list[str], list[str]]:
    """(HTML figures with their PNG embedded, notes on figures not drawn)."""
    pngs = [rel for rel in report.get("figures") or [] if rel.endswith(".png")]
    captions = _captions() if pngs else {}  # (importing the figures module imports matplotlib)
    parts = []
    for rel in pngs:
        path = run_dir / rel
        if not path.is_file():
            continue
        name = Path(rel).stem
        raw = path.read_bytes()
        data = base64.b64encode(raw).decode("ascii")
        parts.append(f'<figure id="fig-{html.escape(name)}"><img alt="figure {html.escape(name)}" '
                     f'{_width(raw)}src="data:image/png;base64,{data}"><figcaption><b>{html.escape(name)}</b>: '
                     f"{html.escape(captions.get(name, ''))}</figcaption></figure>")
    notes = []
    skipped = run_dir / "figures" / "skipped.json"
    if skipped.is_file():
        try:
            notes = [f"figure {k} not drawn: {v}" for k, v in json.loads(skipped.read_text()).items()]
        except (OSError, ValueError):
            pass
    if not parts and not report.get("figures"):
        notes.append("no figures in this run (drawn without figures, or matplotlib missing)")
    return parts, notes


def report_html(report: dict, run_dir: str | Path) -> str:
    """The report as one self-contained HTML document (figures read from ``run_dir``)."""
    run_dir = Path(run_dir)
    e = html.escape
    wl, env, ad = report.get("workload") or {}, report.get("environment") or {}, report.get("adapters") or {}
    settings = report.get("settings") or {}
    att = report.get("attribution")
    body = [f"<h1>lora_profiler report: {e(str(wl.get('name', '?')))}</h1>", '<p class="meta">']
    from .describe import adapters_text, model_text

    body.append(e(f"model {model_text(wl)} ({wl.get('total_params', 0) or 0:,} parameters)") + "<br>")
    body.append(e(f"adapters: {adapters_text(ad)}") + "<br>")
    body.append(e(f"device: {env.get('device')} ({env.get('device_name')}), torch {env.get('torch')}, "
                  f"{env.get('threads')} threads; created {report.get('created')}") + "<br>")
    body.append(e(f"measured: {settings.get('steps')} timed steps per mode in rounds of {settings.get('block')} "
                  f"(every mode in turn, no profiler, no hooks); "
                  f"{(settings.get('profile') or {}).get('active', 0)} profiled rounds") + "</p>")
    said = advice(report)
    if said:
        body.append("<h2>What it means</h2><ul>" + "".join(f"<li>{_md(s)}</li>" for s in said) + "</ul>")
    body.append("<h2>Step time per mode</h2>" + tables.modes_table(report).to_html())
    body.append("<h2>Speedups</h2>" + tables.speedup_table(report).to_html())
    figs, fig_notes = _figures(report, run_dir)
    if figs:
        body.append("<h2>Figures</h2>" + "".join(figs))
    if att:
        body.append("<h2>Where LoRA's overhead goes</h2>")
        body.append(f"<p>Overhead T_lora − T_frozen = {e(fmt_s(att.get('overhead_s')))} per step, measured in "
                    "the timed steps (paired trimmed mean, 95% bootstrap interval). Each cause is measured in the "
                    "profiled rounds, corrected for the profiler's calibrated cost: the trimmed mean over the "
                    "rounds with its min and max. The residual is what the causes leave unexplained.</p>")
        body.append(tables.causes_table(att).to_html())
        if att.get("groups"):
            body.append(tables.groups_table(att).to_html())
        if (att.get("vs_full") or {}).get("table"):
            body.append("<h2>LoRA against full fine-tuning</h2>" + tables.vs_full_table(att).to_html())
        if att.get("validation"):
            body.append("<h2>Validation by ablation</h2>"
                        "<p>Each variant removes one cause; the saving the causes predict against the saving "
                        "measured (timed interleaved with the modes, no profiler).</p>"
                        + tables.validation_table(att).to_html())
        if att.get("reliability"):
            body.append("<h2>Unreliable numbers</h2>" + tables.reliability_table(att).to_html())
    else:
        body.append("<h2>Where LoRA's overhead goes</h2><p>No attribution: it needs timed lora and frozen modes "
                    "and a profiled lora trace.</p>")
    notes = tables.notes(report) + fig_notes
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    body.append('<p class="meta">Written by lora_profiler from report.json; schema in docs/FORMAT.md. '
                "The traces are in tb/&lt;mode&gt;/ (TensorBoard, or the Perfetto UI).</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>lora_profiler report: {e(str(wl.get('name', '?')))}</title><style>{CSS}</style></head>"
            "<body>" + "\n".join(body) + "</body></html>\n")


def write_html(report: dict, run_dir: str | Path) -> str:
    """Write ``run_dir/report.html``; returns its name relative to ``run_dir``."""
    write_atomic(Path(run_dir) / HTML_FILE, report_html(report, run_dir))
    return HTML_FILE
