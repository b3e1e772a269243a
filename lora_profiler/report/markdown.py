"""report.md: the report for people."""

from __future__ import annotations

from .units import fmt_bytes, fmt_s


def _ci(ci, fmt=fmt_s) -> str:
    return f" (95% interval {fmt(ci[0])} – {fmt(ci[1])})" if ci else ""


def _share(v, total) -> str:
    return f"{100 * v / total:.1f}%" if v is not None and total else ""


def report_markdown(report: dict) -> str:
    """Markdown of a report dict (tables of modes, speedups, attribution, validation, figures)."""
    wl, env, ad = report["workload"], report["environment"], report["adapters"]
    out = [f"# lora_profiler report: {wl['name']}", ""]
    from ..runstate import incomplete_line

    unfinished = incomplete_line(report)
    if unfinished:
        out += [f"> **Incomplete:** {unfinished}.", ""]
    for r in report.get("resumed") or []:
        kept = r.get("kept") or {}
        out.append(f"- resumed {r.get('at')} after {r.get('after')}: kept {kept.get('timed_rounds')} "
                   f"timed and {kept.get('profiled_rounds')} profiled rounds")
    from .describe import adapters_text, model_text

    out.append(f"- model: {model_text(wl)} ({wl['total_params']:,} parameters)")
    out.append(f"- adapters: {adapters_text(ad)}")
    out.append(f"- device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
               f"{env['threads']} threads; created {report['created']}")
    settings = report.get("settings") or {}
    profiled = (settings.get("profile") or {}).get("active", 0)
    if report.get("trainer"):
        out.append(f"- measured: {settings.get('steps')} of the Trainer's own steps timed (no profiler, no "
                   f"hooks), their batches replayed as the other modes; {profiled} profiled rounds")
    else:
        out.append(f"- measured: {settings.get('steps')} timed rounds (every mode once per round, rotated "
                   f"order, no profiler, no hooks); {profiled} profiled rounds")
    out += ["", "## Step time per mode", "",
            "| mode | status | median | min | max | IQR | n | trainable | saved activations | peak memory |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    peaks = (report.get("attribution") or {}).get("peak_memory_bytes") or {}
    for mode, e in report["modes"].items():
        st = e.get("step_time_s") or {}
        mem = e.get("memory") or {}
        saved = (e.get("saved_activations") or {}).get("total_bytes")
        if e["status"] != "ok":
            out.append(f"| {mode} | {e['status']}: {e.get('error')} | | | | | | | | |")
            continue
        peak = peaks.get(mode, mem.get("peak_bytes"))
        out.append(f"| {mode} | ok | {fmt_s(st.get('median'))} | {fmt_s(st.get('min'))} | "
                   f"{fmt_s(st.get('max'))} | {fmt_s(st.get('iqr'))} | {st.get('n')} | "
                   f"{e.get('trainable_params', 0):,} | {fmt_bytes(saved)} | {fmt_bytes(peak)} |")
    sp, spci = report.get("speedup") or {}, report.get("speedup_ci") or {}
    out += ["", "## Speedup over full fine-tuning", ""]
    for key, label in (("lora_vs_full", "LoRA (T_full / T_lora)"),
                       ("ideal_vs_full", "ideal (T_full / T_frozen)")):
        v, ci = sp.get(key), spci.get(key)
        out.append(f"- {label}: {v:.2f}x" + (f" (95% interval {ci[0]:.2f}–{ci[1]:.2f}x)" if ci else "")
                   if v else f"- {label}: n/a")
    rows = [r for r in report.get("comparison") or [] if r.get("status") == "ok"]
    if any(r.get("strategy") for r in rows):
        strat = (att_ := report.get("attribution") or {}).get("strategies") or {}
        out += ["", "## Strategies", "",
                "| mode / strategy | step | speedup vs full (95%) | overhead vs floor | trainable | saved activations |",
                "|---|---|---|---|---|---|"]
        for r in rows:
            sp, ci = r.get("speedup_vs_full"), r.get("speedup_vs_full_ci")
            oh = att_.get("overhead_s") if r["mode"] == "lora" else (strat.get(r["mode"]) or {}).get("overhead_s")
            out.append(f"| {r['mode']} | {fmt_s(r.get('step_s'))} | "
                       + (f"{sp:.2f}x" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "") if sp else "n/a")
                       + f" | {fmt_s(oh) if oh is not None else ''} | {r.get('trainable_params') or 0:,} | "
                       f"{fmt_bytes(r.get('saved_activation_bytes'))} |")
    if report.get("trainer"):
        out += _trainer_md(report["trainer"])
    att = report.get("attribution")
    if att:
        out += _attribution_md(att)
    if report.get("distributed"):
        from .distributed_text import distributed_lines

        out += distributed_lines(report["distributed"], markdown=True)
    if report.get("figures"):
        out += ["", "## Figures", ""] + [f"![{f}]({f})" for f in report["figures"] if f.endswith(".png")]
    return "\n".join(out) + "\n"


def _attribution_md(att: dict) -> list:
    total = att.get("overhead_s")
    labels = att.get("labels") or {}
    out = ["", "## Where LoRA's overhead goes", "",
           f"Overhead T_lora − T_frozen = {fmt_s(total)} per step{_ci(att.get('overhead_ci_s'))}, "
           f"measured without the profiler. Each cause is measured in the {att.get('rounds')} profiled "
           "rounds (corrected for the profiler's own calibrated cost): trimmed mean, and min–max over rounds.", "",
           "| cause | per step | min – max over rounds | share |", "|---|---|---|---|"]
    for name, c in sorted((att.get("causes") or {}).items(), key=lambda kv: -abs(kv[1]["seconds"] or 0)):
        flag = " (clipped at 0)" if c.get("clipped") else ""
        out.append(f"| {labels.get(name, name)} | {fmt_s(c['seconds'])}{flag} | {fmt_s(c.get('min'))} – "
                   f"{fmt_s(c.get('max'))} | {_share(c['seconds'], total)} |")
    out.append(f"| residual (unexplained) | {fmt_s(att.get('residual_s'))} | | {_share(att.get('residual_s'), total)} |")
    from .text import shares_note

    note = shares_note(att)
    if note:
        out += ["", f"Note: {note}."]
    vf = att.get("vs_full")
    if vf and vf.get("table"):
        out += ["", "## LoRA against full fine-tuning", "",
                f"T_full − T_frozen = {fmt_s(vf.get('overhead_s'))}; LoRA saves {fmt_s(vf.get('net_saving_s'))}"
                f"{_ci(vf.get('net_saving_ci_s'))} against full fine-tuning.", "",
                "| cause | LoRA − frozen | full − frozen | LoRA saves |", "|---|---|---|---|"]
        for row in vf["table"]:
            out.append(f"| {row['label']} | {fmt_s(row['lora_s'])} | {fmt_s(row['full_s'])} | {fmt_s(row['saved_s'])} |")
    if att.get("validation"):
        out += ["", "## Validation by ablation", "",
                "Each variant removes one cause; its saving, predicted from the causes above, against the "
                "saving measured (T_lora − T_variant, timed interleaved, no profiler).", "",
                "| variant | predicted | measured | 95% interval | verdict |", "|---|---|---|---|---|"]
        for row in att["validation"]:
            ci = row.get("ci_s")
            verdict = (row.get("verdict") or ("agrees" if row.get("agrees") else "disagrees")) \
                if row.get("agrees") is not None else (row.get("why") or "not checked")
            out.append(f"| {row['variant']} | {fmt_s(row.get('predicted_s'))} | {fmt_s(row.get('measured_s'))} | "
                       f"{(fmt_s(ci[0]) + ' – ' + fmt_s(ci[1])) if ci else ''} | {verdict} |")
    rel = att.get("reliability") or []
    if rel:
        out += ["", "## Unreliable numbers", ""] + [f"- **{f['numbers']}**: {f['reason']}" for f in rel]
    for note in att.get("notes") or []:
        out.append(f"> note: {note}")
    return out


def _trainer_md(tr: dict) -> list:
    """The Trainer callback's section: the loop's settings, its whole step and what it adds."""
    st, step = tr.get("settings") or {}, tr.get("step_time_s") or {}
    out = ["", f"## The Trainer's loop ({tr.get('class')})", "",
           f"- settings: batch {st.get('per_device_train_batch_size')} per device x "
           f"{st.get('gradient_accumulation_steps')} accumulation steps, {st.get('precision')}, gradient "
           f"checkpointing {'on' if st.get('gradient_checkpointing') else 'off'}, torch.compile "
           f"{'on' if st.get('torch_compile') else 'off'}, {st.get('dataloader_num_workers')} dataloader "
           f"workers, max_grad_norm {st.get('max_grad_norm')}, {st.get('optimizer')}",
           f"- the Trainer's whole step (on_step_begin to on_step_end): median {fmt_s(step.get('median'))} "
           f"over {step.get('n')} timed steps; one step of the loop, with the gap before it: "
           f"{fmt_s((tr.get('period_s') or {}).get('median'))}", "",
           "| added by the Trainer | per step | what |", "|---|---|---|"]
    for name, c in (tr.get("causes") or {}).items():
        value = fmt_s(c["seconds"]) if c.get("seconds") is not None else f"not measured: {c.get('why')}"
        out.append(f"| {name} | {value} | {c.get('what')} |")
    for line in tr.get("not_measured") or []:
        out.append(f"> not measured: {line}")
    for line in (tr.get("floor") or {}).get("problems") or []:
        out.append(f"> WARNING: {line}")
    return out
