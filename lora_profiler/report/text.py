"""The terminal summary of a report."""

from __future__ import annotations

from .units import fmt_bytes, fmt_s


def summary_text(report: dict) -> str:
    """A readable table of step times per mode, the speedups and the attribution."""
    lines = []
    wl = report["workload"]
    env = report["environment"]
    lines.append(f"\n{wl['name']}: {wl['total_params'] / 1e6:.1f}M params, batch {wl['batch_size']} x "
                 f"seq {wl['seq_len']}, {report['adapters']['count']} {report['adapters']['source']} "
                 f"adapters (r={report['adapters']['rank']}) on {env['device_name']}")
    lines.append(f"{'mode':8s} {'status':7s} {'median':>9s} {'min':>9s} {'max':>9s} {'IQR':>9s} "
                 f"{'trainable':>12s} {'saved act.':>10s}")
    for mode, e in report["modes"].items():
        st = e.get("step_time_s")
        if e["status"] == "ok" and st:
            saved = (e.get("saved_activations") or {}).get("total_bytes")
            lines.append(f"{mode:8s} {'ok':7s} {fmt_s(st['median']):>9s} {fmt_s(st['min']):>9s} "
                         f"{fmt_s(st['max']):>9s} {fmt_s(st['iqr']):>9s} "
                         f"{e.get('trainable_params', 0):>12,d} {fmt_bytes(saved):>10s}")
        else:
            lines.append(f"{mode:8s} {e['status']:7s} {e.get('error') or ''}")
    sp = report.get("speedup") or {}

    def x(v):
        return f"{v:.2f}x" if v else "n/a"

    lines.append(f"speedup over full fine-tuning: LoRA {x(sp.get('lora_vs_full'))}, "
                 f"ideal (frozen floor) {x(sp.get('ideal_vs_full'))}")
    if report.get("attribution"):
        lines.append(attribution_text(report["attribution"]))
    if report.get("figures"):
        lines.append(f"figures: {len(report['figures'])} in {report['figures'][0].rsplit('/', 1)[0]}/")
    return "\n".join(lines)


def attribution_text(att: dict) -> str:
    """LoRA's overhead over the frozen floor and its components, one per line."""
    lines = [f"LoRA overhead over the frozen floor: {fmt_s(att['overhead_s'])} per step"]
    total = att["overhead_s"] or float("nan")
    for name, sec in sorted(att["components"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:28s} {fmt_s(sec):>9s} {100 * sec / total:6.1f}%")
    lines.append(f"  {'residual (unexplained)':28s} {fmt_s(att['residual_s']):>9s} "
                 f"{100 * att['residual_s'] / total:6.1f}%")
    lines.append(f"  adapter {att.get('unit', 'op')}s per step: {att.get('adapter_launches'):.0f}, "
                 f"extra saved activations: {fmt_bytes(att.get('extra_saved_activation_bytes'))}")
    for warning in att.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
