"""Benchmark: our trace analysis vs Holistic Trace Analysis (HTA), and linear scaling.

Part 1 (``--reps``): on one trace folder, each tool runs as a fresh Python process doing the
same work — load the trace, GPU kernel breakdown, kernel launch statistics — alternating the
order every repetition. Measured per process: wall time (perf_counter around the process) and
peak RSS (``os.wait4`` rusage of that child). HTA runs with ``include_last_profiler_step=True``
so both tools see every kernel (its per-name totals then equal ours exactly). A third row runs
our full command line (``python -m lora_profiler.analyze PATH --json``: every analysis, per
step too) for scale.

Part 2 (``--scales``): the trace's events repeated k times (ts shifted by the trace span,
correlation ids, External ids, flow ids and ProfilerStep numbers renumbered) into temporary
gzip files; our load + kernel breakdown + launch statistics timed on each (``--scale-reps``
times, median); time per event should stay flat if the engine scales linearly. ``--gib G``
adds one more row: the smallest k whose uncompressed text is at least G GiB (peak RSS is the
figure to watch there).

Each child reads with the decoders the environment has (msgspec/isal, or orjson, when
installed: the ``fast`` extra); ``--pure`` makes our children use the standard library only
(``LORA_PROFILER_PURE=1``), ``--pure msgspec`` leaves out msgspec only (orjson then decodes).
``--paths fast,orjson,stdlib`` runs our children with each set of decoders in turn, interleaved
(in part 1 and part 2), so they are compared under the same load; ``fast-1proc`` is ``fast``
without decoding workers (``LORA_PROFILER_WORKERS=0``: one process). Besides wall time, each
row gives the child's CPU time (user + system, from its rusage, its workers' included): on a
shared machine it moves less with the load than the wall time does. Our peak RSS is the
child's own plus its worker's (both at their peaks: an upper bound of what they held at once).

Our package's bytecode is compiled first (``compileall``), as ``pip install`` leaves an installed
package's, HTA's included: where ``PYTHONDONTWRITEBYTECODE`` is set, as on the machine these
figures were first measured on, every child would otherwise compile our modules again (~30 ms).

Run by hand (the machine's load matters; it is printed):
    python benchmarks/bench_analyze.py [--trace DIR] [--reps 5] [--scales 1,4,16] [--gib 1]
The last stdout line is one JSON object with the medians and ratios.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's package, whether or not it is installed
DEFAULT_TRACE = REPO / ".." / "shared" / "traces" / "hta" / "ddp_v100_rank1"


# --- children: one tool, one run ----------------------------------------------------------

def child_ours(path: str) -> dict:
    from lora_profiler.analyses.kernels import kernel_breakdown
    from lora_profiler.analyses.launches import launch_stats
    from lora_profiler.events import load_trace
    import resource

    from lora_profiler.events import parallel
    trace = load_trace(path)
    kb = kernel_breakdown(trace)
    ls = launch_stats(trace)
    # peak memory of this process and of its decoding worker (if one ran) added: the two
    # live at the same time, and wait4 would report only the larger
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kernels": kb.kernel_count + kb.memcpy_count + kb.memset_count,
            "kernel_names": kb.names_total, "launch_bound": ls.launch_bound,
            "events": trace.counts["events"], "rss_total_kib": own + parallel.LAST["peak_rss_kib"],
            "workers": dict(parallel.LAST)}


def child_hta(path: str) -> dict:
    import logging
    logging.disable(logging.WARNING)
    from hta.trace_analysis import TraceAnalysis
    ta = TraceAnalysis(trace_dir=path, include_last_profiler_step=True)
    _, per_name = ta.get_gpu_kernel_breakdown(visualize=False, num_kernels=10 ** 6,
                                              include_memory_kernels=True)
    ranks = list(ta.t.traces.keys())
    launch = ta.get_cuda_kernel_launch_stats(ranks=ranks, visualize=False)
    return {"kernel_names": int(len(per_name)), "launch_rows": int(len(launch[ranks[0]]))}


def run_child(args: List[str], env=None) -> Dict[str, float]:
    """Run one child process; wall seconds and its own peak RSS (MiB)."""
    import subprocess
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                         env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"child failed ({p.returncode}): {' '.join(args)}")
    rss_mib = ru.ru_maxrss / 1024.0            # Linux: KiB
    try:                                       # ours: itself + its worker, both at their peak
        rss_mib = max(rss_mib, json.loads(out.decode().strip().splitlines()[-1])
                      ["rss_total_kib"] / 1024.0)
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mib": rss_mib,
            "out": out.decode()[-300:]}


# --paths: our children's decoders (LORA_PROFILER_PURE) and decoding workers
# (LORA_PROFILER_WORKERS; None: the default)
PATHS = {"fast": ("", None), "fast-1proc": ("", "0"), "orjson": ("msgspec", None),
         "stdlib": ("1", None)}


def path_env(name: str) -> Dict[str, str]:
    pure, workers = PATHS[name]
    env = dict(os.environ, LORA_PROFILER_PURE=pure)
    if workers is not None:
        env["LORA_PROFILER_WORKERS"] = workers
    return env


# --- part 2: synthetic k-fold traces -----------------------------------------------------------

def make_scaled(src: Path, k: int, out: Path) -> str:
    """Write ``src`` repeated ``k`` times as one gzip trace; returns "events chars" (the event
    count and the uncompressed length)."""
    import gzip

    files = sorted(src.glob("*.json*")) if src.is_dir() else [src]
    with gzip.open(files[0], "rt") as fh:
        doc = json.load(fh)
    events = doc.pop("traceEvents")
    ts = [e["ts"] for e in events if isinstance(e.get("ts"), (int, float))]
    span = max(e.get("ts", 0) + e.get("dur", 0) for e in events if "ts" in e) - min(ts) + 1000
    ids = [e.get("args", {}).get(key, 0) for e in events
           for key in ("correlation", "External id", "external id")]
    id_step = max(max(ids), max(e.get("id", 0) for e in events if isinstance(e.get("id"), int))) + 1
    steps = [int(e["name"].split("#")[1]) for e in events
             if str(e.get("name", "")).startswith("ProfilerStep#")]
    step_shift = (max(steps) - min(steps) + 1) if steps else 0
    n = 0
    chars = 0
    with gzip.open(out, "wt", compresslevel=1) as fh:
        head = ("{" + ", ".join(f"{json.dumps(key)}: {json.dumps(v)}" for key, v in doc.items())
                + (", " if doc else "") + '"traceEvents": [\n')
        fh.write(head)
        chars += len(head)
        first = True
        for rep in range(k):
            for e in events:
                if e.get("ph") == "M" and rep:
                    continue
                e2 = dict(e)
                if "ts" in e2 and isinstance(e2["ts"], (int, float)):
                    e2["ts"] = e2["ts"] + rep * span
                if isinstance(e2.get("id"), int):
                    e2["id"] = e2["id"] + rep * id_step
                a = e2.get("args")
                if isinstance(a, dict):
                    a = dict(a)
                    for key in ("correlation", "External id", "external id"):
                        if isinstance(a.get(key), int) and a[key] >= 0:
                            a[key] = a[key] + rep * id_step
                    e2["args"] = a
                name = e2.get("name")
                if isinstance(name, str) and name.startswith("ProfilerStep#"):
                    e2["name"] = f"ProfilerStep#{int(name.split('#')[1]) + rep * step_shift}"
                line = ("" if first else ",\n") + json.dumps(e2)
                fh.write(line)
                chars += len(line)
                first = False
                n += 1
        fh.write("\n]}\n")
    return f"{n} {chars + 4}"


# --- driver ------------------------------------------------------------------------------------

def main() -> None:
    import argparse
    import statistics
    import subprocess
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DEFAULT_TRACE), help="trace folder (default: ddp)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per tool (default 5)")
    ap.add_argument("--scales", default="1,4,16", help="k-fold traces for part 2 ('' to skip)")
    ap.add_argument("--scale-reps", type=int, default=3,
                    help="runs per k-fold trace, median reported (default 3)")
    ap.add_argument("--gib", type=float, default=0.0,
                    help="add a k-fold trace of at least this many GiB of text (default off)")
    ap.add_argument("--pure", nargs="?", const="1", default=None, metavar="LIST",
                    help="our children use the stdlib decoders only (LORA_PROFILER_PURE=1), or "
                         "leave out the listed accelerators (e.g. --pure msgspec)")
    ap.add_argument("--paths", default=None, metavar="LIST",
                    help="compare our decoders, interleaved: a comma-separated subset of "
                         "fast,fast-1proc,orjson,stdlib (fast: every accelerator installed and "
                         "decoding workers on the other CPUs; fast-1proc: the same in one "
                         "process; orjson: without msgspec; stdlib: none); the first is 'ours'")
    ap.add_argument("--no-hta", action="store_true", help="skip HTA (e.g. not installed)")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave our package's bytecode uncompiled (by default it is compiled "
                         "first, as an installed package's is)")
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=3, metavar=("K", "SRC", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make:   # in a child, so the driver stays small (Linux keeps a forked child's
        k, src, out = a.make   # pre-exec RSS in its maxrss)
        print(make_scaled(Path(src), int(k), Path(out)))
        return
    if a.child:
        tool, path = a.child
        print(json.dumps(child_ours(path) if tool == "ours" else child_hta(path)))
        return
    if not a.no_compile:
        # our modules' bytecode, as `pip install` leaves it (HTA's is there): where
        # PYTHONDONTWRITEBYTECODE is set (this machine), every child would compile them again
        import compileall
        compileall.compile_dir(str(REPO / "lora_profiler"), quiet=1)
    py = sys.executable
    me = str(Path(__file__).resolve())
    trace = str(Path(a.trace).resolve())
    if a.paths:
        names = [x.strip() for x in a.paths.split(",") if x.strip()]
        bad = [x for x in names if x not in PATHS]
        if bad or not names:
            raise SystemExit(f"--paths: unknown {bad}; choose from {', '.join(PATHS)}")
    else:
        names = [a.pure and f"pure={a.pure}" or "default"]
    envs = {n: (path_env(n) if n in PATHS else
                dict(os.environ, LORA_PROFILER_PURE=a.pure) if a.pure else None) for n in names}
    ours = {n: ("ours" if i == 0 else f"ours[{n}]") for i, n in enumerate(names)}
    probes = {n: subprocess.run([py, "-c", "from lora_profiler.events import fast, parallel; "
                                 "w = parallel.workers_wanted(); "
                                 "print(fast.describe() + (f'+{w}w' if w else ''))"],
                                capture_output=True, text=True,
                                cwd=REPO, env=envs[n]).stdout.strip() for n in names}
    probe = probes[names[0]]
    print(f"trace {trace}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"our decoders: " + ", ".join(f"{ours[n]} {probes[n]}" for n in names))
    cmds = {ours[n]: ([py, me, "--child", "ours", trace], envs[n]) for n in names}
    cmds["ours-cli"] = ([py, "-m", "lora_profiler.analyze", trace, "--json"], envs[names[0]])
    if not a.no_hta:
        cmds["hta"] = ([py, me, "--child", "hta", trace], None)
    res: Dict[str, List[Dict[str, float]]] = {t: [] for t in cmds}
    summary = {"trace": trace, "reps": a.reps, "load_avg": os.getloadavg()[0],
               "decoders": probe, "paths": {ours[n]: probes[n] for n in names}}
    for rep in range(a.reps):
        order = list(cmds) if rep % 2 == 0 else list(cmds)[::-1]
        for tool in order:
            r = run_child(cmds[tool][0], env=cmds[tool][1])
            res[tool].append(r)
            print(f"  rep {rep} {tool:14s} {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  "
                  f"{r['rss_mib']:7.1f} MiB")
    med = {t: {"wall_s": statistics.median(x["wall_s"] for x in v),
               "cpu_s": statistics.median(x["cpu_s"] for x in v),
               "rss_mib": statistics.median(x["rss_mib"] for x in v)} for t, v in res.items() if v}
    if med:
        print(f"\n{'tool':14s} {'median wall s':>14s} {'median CPU s':>13s} {'median peak RSS MiB':>20s}")
        for t, m in med.items():
            print(f"{t:14s} {m['wall_s']:14.2f} {m['cpu_s']:13.2f} {m['rss_mib']:20.1f}")
        summary["median"] = med
    if "hta" in med and "ours" in med:
        summary["speedup_vs_hta"] = med["hta"]["wall_s"] / med["ours"]["wall_s"]
        summary["cpu_speedup_vs_hta"] = med["hta"]["cpu_s"] / med["ours"]["cpu_s"]
        summary["rss_ratio_vs_hta"] = med["ours"]["rss_mib"] / med["hta"]["rss_mib"]
        print(f"ours vs HTA: {summary['speedup_vs_hta']:.1f}x faster (CPU time: "
              f"{summary['cpu_speedup_vs_hta']:.1f}x), peak RSS "
              f"{summary['rss_ratio_vs_hta']:.2f}x of HTA's")
        for n in names[1:]:
            t = ours[n]
            print(f"{t} vs HTA: {med['hta']['wall_s'] / med[t]['wall_s']:.1f}x faster (CPU time: "
                  f"{med['hta']['cpu_s'] / med[t]['cpu_s']:.1f}x)")
    scales = [int(s) for s in a.scales.split(",") if s.strip()]
    if scales or a.gib:
        print(f"\n{'scale':>5s} {'decoders':>14s} {'events':>10s} {'text MiB':>9s} {'wall s':>8s} "
              f"{'us/event':>9s} {'CPU s':>7s} {'CPU us/ev':>9s} {'RSS MiB':>8s}")
        summary["scaling"] = []
        with tempfile.TemporaryDirectory() as tmp:
            chars_1x = None
            todo = list(scales) + (["gib"] if a.gib else [])
            for k in todo:
                if k == "gib":
                    if chars_1x is None:
                        f1 = Path(tmp) / "x1.json.gz"
                        made = run_child([py, me, "--make", "1", trace, str(f1)])
                        chars_1x = int(made["out"].split()[-1])
                        f1.unlink()
                    k = -(-int(a.gib * 2 ** 30) // chars_1x)           # ceil
                f = Path(tmp) / f"x{k}.json.gz"
                made = run_child([py, me, "--make", str(k), trace, str(f)])
                n, chars = (int(x) for x in made["out"].split()[-2:])
                if k == 1:
                    chars_1x = chars
                runs = {nm: [] for nm in names}
                for r in range(a.scale_reps):   # the paths interleaved, the order alternated
                    for nm in (names if r % 2 == 0 else names[::-1]):
                        runs[nm].append(run_child([py, me, "--child", "ours", str(f)], env=envs[nm]))
                f.unlink()
                for nm in names:
                    got = runs[nm]
                    wall = statistics.median(r["wall_s"] for r in got)
                    cpu = statistics.median(r["cpu_s"] for r in got)
                    rss = max(r["rss_mib"] for r in got)
                    row = {"scale": k, "decoders": probes[nm], "events": n,
                           "text_mib": chars / 2 ** 20, "wall_s": wall,
                           "walls_s": [r["wall_s"] for r in got], "cpu_s": cpu, "rss_mib": rss,
                           "us_per_event": 1e6 * wall / n, "cpu_us_per_event": 1e6 * cpu / n}
                    summary["scaling"].append(row)
                    print(f"{k:5d} {probes[nm][:14]:>14s} {n:10,d} {chars / 2 ** 20:9.0f} {wall:8.2f} "
                          f"{row['us_per_event']:9.2f} {cpu:7.2f} {row['cpu_us_per_event']:9.2f} "
                          f"{rss:8.1f}")
    summary["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":   # measured: no harness imports
        tool, path = sys.argv[2:]
        print(json.dumps(child_ours(path) if tool == "ours" else child_hta(path)))
        sys.exit(0)
    main()
