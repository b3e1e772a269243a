"""report.md: the report for people."""

from __future__ import annotations

from .units import fmt_bytes, fmt_s


def report_markdown(report: dict) -> str:
    """Markdown of a report dict (tables of modes, speedups, attribution, figures)."""
    wl, env, ad = report["workload"], report["environment"], report["adapters"]
    out = [f"# lora_profiler report: {wl['name']}", ""]
    out.append(f"- model: {wl['arch']}, {wl['total_params']:,} parameters; batch {wl['batch_size']} x "
               f"seq {wl['seq_len']} ({wl['tokens_per_step']:,} tokens per step)")
    out.append(f"- adapters: {ad['count']} {ad['source']} (rank {ad['rank']}, alpha {ad['alpha']}, "
               f"dropout {ad['dropout']}), {ad['trainable_params']:,} trainable parameters")
    out.append(f"- device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
               f"{env['threads']} threads; created {report['created']}")
    out += ["", "## Step time per mode", "",
            "| mode | status | median | min | max | IQR | n | trainable | saved activations | peak memory |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, e in report["modes"].items():
        st = e.get("step_time_s") or {}
        mem = e.get("memory") or {}
        saved = (e.get("saved_activations") or {}).get("total_bytes")
        if e["status"] != "ok":
            out.append(f"| {mode} | {e['status']}: {e.get('error')} | | | | | | | | |")
            continue
        out.append(f"| {mode} | ok | {fmt_s(st.get('median'))} | {fmt_s(st.get('min'))} | "
                   f"{fmt_s(st.get('max'))} | {fmt_s(st.get('iqr'))} | {st.get('n')} | "
                   f"{e.get('trainable_params', 0):,} | {fmt_bytes(saved)} | {fmt_bytes(mem.get('peak_bytes'))} |")
    sp = report.get("speedup") or {}
    out += ["", "## Speedup over full fine-tuning", ""]
    for key, label in (("lora_vs_full", "LoRA (T_full / T_lora)"),
                       ("ideal_vs_full", "ideal (T_full / T_frozen)")):
        v = sp.get(key)
        out.append(f"- {label}: {v:.2f}x" if v else f"- {label}: n/a")
    att = report.get("attribution")
    if att:
        out += ["", "## Where LoRA's overhead goes", "",
                f"Overhead T_lora - T_frozen = {fmt_s(att['overhead_s'])} per step.", "",
                "| component | seconds per step | share |", "|---|---|---|"]
        total = att["overhead_s"] or float("nan")
        for name, sec in sorted(att["components"].items(), key=lambda kv: -kv[1]):
            out.append(f"| {name} | {fmt_s(sec)} | {100 * sec / total:.1f}% |")
        out.append(f"| residual | {fmt_s(att['residual_s'])} | {100 * att['residual_s'] / total:.1f}% |")
        out += [""] + [f"> warning: {w}" for w in att.get("warnings") or []]
    if report.get("figures"):
        out += ["", "## Figures", ""] + [f"![{f}]({f})" for f in report["figures"] if f.endswith(".png")]
    return "\n".join(out) + "\n"
