"""The terminal summary of a report."""

from __future__ import annotations

from typing import Optional

from .units import fmt_bytes, fmt_s


def _interval(ci: Optional[list], fmt=fmt_s) -> str:
    return f" [95%: {fmt(ci[0])} – {fmt(ci[1])}]" if ci else ""


def _x(v: Optional[float]) -> str:
    return f"{v:.2f}x" if v else "n/a"


def summary_text(report: dict) -> str:
    """A readable table of step times per mode, the speedups and the attribution."""
    lines = []
    wl = report["workload"]
    env = report["environment"]
    from .describe import adapters_text, model_text

    lines.append(f"\n{wl['name']}: {model_text(wl)} on {env['device_name']}")
    lines.append(adapters_text(report["adapters"]))
    from ..runstate import incomplete_line

    unfinished = incomplete_line(report)
    if unfinished:
        lines.append(unfinished)
    for r in report.get("resumed") or []:
        kept = r.get("kept") or {}
        lines.append(f"resumed after {r.get('after')}: kept {kept.get('timed_rounds')} timed and "
                     f"{kept.get('profiled_rounds')} profiled rounds, measured the rest")
    w = max([11] + [len(m) + 1 for m in report["modes"]])
    lines.append(f"{'mode':{w}s} {'status':7s} {'median':>9s} {'min':>9s} {'max':>9s} {'IQR':>9s} "
                 f"{'trainable':>12s} {'saved act.':>10s}")
    for mode, e in report["modes"].items():
        st = e.get("step_time_s")
        if e["status"] == "ok" and st:
            saved = (e.get("saved_activations") or {}).get("total_bytes")
            noisy = " noisy" if st.get("median") and st.get("iqr", 0) > 0.15 * st["median"] else ""
            lines.append(f"{mode:{w}s} {'ok':7s} {fmt_s(st['median']):>9s} {fmt_s(st['min']):>9s} "
                         f"{fmt_s(st['max']):>9s} {fmt_s(st['iqr']):>9s} "
                         f"{e.get('trainable_params', 0):>12,d} {fmt_bytes(saved):>10s}{noisy}")
        else:
            lines.append(f"{mode:{w}s} {e['status']:7s} "
                         f"{e.get('error') or ('not measured' if e['status'] == 'ok' else '')}")
    sp, ci = report.get("speedup") or {}, report.get("speedup_ci") or {}

    def xi(key):
        c = ci.get(key)
        return _x(sp.get(key)) + (f" [95%: {c[0]:.2f}–{c[1]:.2f}]" if c else "")

    lines.append(f"speedup over full fine-tuning: LoRA {xi('lora_vs_full')}, "
                 f"ideal (frozen floor) {xi('ideal_vs_full')}")
    lines += comparison_text(report)
    if report.get("attribution"):
        lines.append(attribution_text(report["attribution"]))
    if report.get("prediction"):
        lines += prediction_text(report["prediction"])
    if report.get("distributed"):
        from .distributed_text import distributed_lines

        lines += distributed_lines(report["distributed"])
    if report.get("figures"):
        lines.append(f"figures: {len(report['figures'])} in {report['figures'][0].rsplit('/', 1)[0]}/")
    return "\n".join(lines)


def comparison_text(report: dict) -> list:
    """Strategies beside full, LoRA and the floor (only when the run has strategies)."""
    rows = report.get("comparison") or []
    if not any(r.get("strategy") for r in rows):
        return []
    strat = (report.get("attribution") or {}).get("strategies") or {}
    lora_oh = (report.get("attribution") or {}).get("overhead_s")
    out = [f"{'mode / strategy':26s} {'step':>9s} {'speedup vs full [95%]':>24s} {'overhead vs floor':>18s} "
           f"{'trainable':>12s} {'saved act.':>10s}"]
    for r in rows:
        if r.get("status") != "ok":
            continue
        sp, ci = r.get("speedup_vs_full"), r.get("speedup_vs_full_ci")
        sp_text = (f"{sp:.2f}x" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci else "")) if sp else "n/a"
        oh = lora_oh if r["mode"] == "lora" else (strat.get(r["mode"]) or {}).get("overhead_s")
        oh_text = fmt_s(oh) if oh is not None else ("0 (the floor)" if r["mode"] == "frozen" else "")
        first = r.get("first_step_s")
        note = f"  first step {fmt_s(first)}" if r["mode"] == "lora-compiled" and first else ""
        out.append(f"{r['mode']:26s} {fmt_s(r.get('step_s')):>9s} {sp_text:>24s} {oh_text:>18s} "
                   f"{r.get('trainable_params') or 0:>12,d} {fmt_bytes(r.get('saved_activation_bytes')):>10s}{note}")
    return out


def prediction_text(adv: dict) -> list:
    """The cost model's prediction per mode beside the measurement, GPU predictions, the suggestion."""
    gpus = list((adv.get("gpus") or {}).keys())
    out = ["cost model (lora_profiler.predict): predicted step time, this device and GPU tables",
           f"  {'mode':24s} {'measured':>9s} {'predicted':>9s} {'error':>7s}" + "".join(f" {g:>9s}" for g in gpus)]
    for r in adv["rows"]:
        err = f"{100 * r['error']:+.0f}%" if r.get("error") is not None else "(not run)"
        out.append(f"  {r['mode']:24s} {fmt_s(r.get('measured_s')):>9s} {fmt_s(r['predicted_s']):>9s} {err:>7s}"
                   + "".join(f" {fmt_s(adv['gpus'][g].get(r['mode'])):>9s}" for g in gpus))
    if adv.get("recommendation"):
        out.append(f"  the cost model suggests: {adv['recommendation']}")
    return out


def _share(sec: Optional[float], total: Optional[float]) -> str:
    return f"{100 * sec / total:6.1f}%" if sec is not None and total else "      "


def shares_note(att: dict) -> Optional[str]:
    """Why a share is negative or above 100% (or why shares mean little), when one is."""
    total = att.get("overhead_s")
    ci = att.get("overhead_ci_s")
    if not total:
        return None
    if total < 0 or (ci and ci[0] <= 0 <= ci[1]):
        return ("shares are of an overhead within noise of zero (its 95% interval holds 0): read the "
                "causes' times, not their shares")
    values = [c.get("seconds") for c in (att.get("causes") or {}).values()] + [att.get("residual_s")]
    shares = [v / total for v in values if v is not None]
    if not any(s < -0.005 or s > 1.0 for s in shares):
        return None
    return ("shares sum to 100% with the residual; a negative one is work the floor does and LoRA skips, "
            "so the others can add up to more than 100%")


def attribution_text(att: dict) -> str:
    """LoRA's overhead over the frozen floor, cause by cause with the spread over profiled
    rounds; the groups; LoRA against full fine-tuning; the ablations; what is unreliable."""
    total = att.get("overhead_s")
    unreliable = {f["numbers"] for f in att.get("reliability") or []}
    lines = [f"LoRA overhead over the frozen floor: {fmt_s(total)} per step"
             + _interval(att.get("overhead_ci_s"))
             + (" (unreliable, see below)" if "overhead" in unreliable else "")]
    causes = att.get("causes") or {}
    labels = att.get("labels") or {}
    n = att.get("rounds")
    lines.append(f"  {'cause':28s} {'per step':>9s}  {'min – max over ' + str(n) + ' rounds':>24s} {'share':>7s}")
    for name, c in sorted(causes.items(), key=lambda kv: -abs(kv[1]["seconds"] or 0)):
        if not c.get("seconds") and not c.get("clipped") and not c.get("min") and not c.get("max"):
            continue
        rng = f"{fmt_s(c['min'])} – {fmt_s(c['max'])}" if c.get("min") is not None else ""
        flag = " (clipped at 0)" if c.get("clipped") else ""
        lines.append(f"  {labels.get(name, name):28s} {fmt_s(c['seconds']):>9s}  {rng:>24s} "
                     f"{_share(c['seconds'], total)}{flag}")
    lines.append(f"  {'residual (unexplained)':28s} {fmt_s(att.get('residual_s')):>9s}  {'':>24s} "
                 f"{_share(att.get('residual_s'), total)}")
    note = shares_note(att)
    if note:
        lines.append(f"  ({note})")
    groups = att.get("groups") or {}
    if groups:
        lines.append("  groups: " + ", ".join(f"{g} {fmt_s(v['seconds'])}" for g, v in
                                              sorted(groups.items(), key=lambda kv: -abs(kv[1]['seconds'] or 0))))
    lines.append(f"  adapter {att.get('unit', 'op')}s per step: {att.get('adapter_launches') or 0:.0f}, "
                 f"extra saved activations: {fmt_bytes(att.get('extra_saved_activation_bytes'))}")
    vf = att.get("vs_full")
    if vf and vf.get("table"):
        lines.append(f"against full fine-tuning (T_full − T_frozen = {fmt_s(vf.get('overhead_s'))}): "
                     f"LoRA saves {fmt_s(vf.get('net_saving_s'))}{_interval(vf.get('net_saving_ci_s'))}")
        lines.append(f"  {'cause':28s} {'LoRA−frozen':>11s} {'full−frozen':>11s} {'LoRA saves':>11s}")
        for row in vf["table"]:
            if any(abs(row[k] or 0) >= 1e-5 for k in ("lora_s", "full_s")):
                lines.append(f"  {row['label']:28s} {fmt_s(row['lora_s']):>11s} {fmt_s(row['full_s']):>11s} "
                             f"{fmt_s(row['saved_s']):>11s}")
    for name, st in (att.get("strategies") or {}).items():
        causes = st.get("causes") or {}
        top = sorted(causes.items(), key=lambda kv: -abs(kv[1]["seconds"] or 0))[:5]
        detail = ", ".join(f"{labels.get(c, c)} {fmt_s(v['seconds'])}" for c, v in top) if top else st.get("note", "")
        lines.append(f"  {name}: overhead over the floor {fmt_s(st.get('overhead_s'))}"
                     + (f" = {detail}, residual {fmt_s(st.get('residual_s'))}" if top else f" ({detail})"))
    for row in att.get("validation") or []:
        if row.get("predicted_s") is None or row.get("measured_s") is None:
            lines.append(f"  ablation {row['variant']}: not checked ({row.get('why') or 'no data'})")
            continue
        verdict = row.get("verdict") or ("agrees" if row["agrees"] else "disagrees")
        if verdict == "disagrees":
            verdict = "DISAGREES"
        lines.append(f"  ablation {row['variant']:11s} predicted {fmt_s(row['predicted_s']):>9s}, measured "
                     f"{fmt_s(row['measured_s']):>9s}{_interval(row.get('ci_s'))}: {verdict}")
    for f in att.get("reliability") or []:
        lines.append(f"  unreliable: {f['numbers']} — {f['reason']}")
    return "\n".join(lines)
