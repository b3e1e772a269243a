#!/usr/bin/env bash
# The one prepared GPU check: a real GPU profile of the default workload and gpt2-small.
#
# Run on a machine with a CUDA GPU, from the repository root (in this workplace: the device
# tool's `run`, with OUT set to the folder whose files come back). It installs the package
# without touching the machine's CUDA build of torch, profiles both workloads in bfloat16 and
# float32, and leaves in $OUT: each run's report.json, one archive per run with its traces,
# figures and report.md, and the log (7 files; the device tool brings back at most 8). A GPU
# machine without a package index needs the missing wheels carried in (see the device README).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_profile.sh
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log="$OUT/gpu_profile.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  python3 -m pip install -q --no-deps -e . && python3 -m pip install -q tqdm matplotlib nvidia-ml-py || true
} >"$log" 2>&1
runs=/tmp/lora_profiler_gpu_runs
rm -rf "$runs"; mkdir -p "$runs"
# The first run also times the strategies and checks the cost model against this GPU (issue 9).
for spec in "default bfloat16 --modes full,lora,frozen,forward,fused-lora,lora-fa --advise" \
            "gpt2-small bfloat16" "default float32"; do
  set -- $spec
  name="$1-$2"
  preset=$1 dtype=$2
  shift 2
  echo "== $name $*" >>"$log"
  timeout 240 python3 -m lora_profiler.trace --preset "$preset" --dtype "$dtype" --device cuda --steps 10 \
      --out "$runs/$name" --quiet "$@" >>"$log" 2>&1
  echo "exit $?" >>"$log"
  if [ -f "$runs/$name/report.json" ]; then
    cp "$runs/$name/report.json" "$OUT/$name.report.json"
    extra=$( [ -f "$runs/$name/census.json" ] && echo census.json )
    tar -czf "$OUT/$name.tar.gz" -C "$runs/$name" tb figures report.md $extra 2>>"$log"
  fi
done
ls -la "$OUT" >>"$log"
tail -40 "$log"
