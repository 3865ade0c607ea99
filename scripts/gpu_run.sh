#!/usr/bin/env bash
# scripts/gpu_run.sh: the GPU run in one command (docs/gpu_run.md).
#
#   bash scripts/gpu_run.sh                          # on a machine with a GPU: full profile, seed 0
#   PROFILE=smoke EXTRA_SET="image_size=32" VARIANTS=scratch-none,imagenet-all bash scripts/gpu_run.sh   # CPU proof
#   EXECUTOR=ray bash scripts/gpu_run.sh             # Ray mode: all variants of a backbone packed onto the one GPU
#
# 1. prints nvidia-smi and what torch sees (device, bf16, cuDNN), and samples GPU utilisation every second;
# 2. runs `harness run --profile $PROFILE --backbone efficientnet_lite0 --seeds $SEEDS` for every variant of the
#    profile (lite0's ImageNet weights travel with the package), one `harness run` per variant so that each gets
#    its own wall time (train + export + evaluate + cam);
# 3. the same for VGG16: all variants when its ImageNet weights are available (VGG16_WEIGHTS=/path/to/
#    vgg16-397923af.pth, or torch hub's cache under TORCH_HOME), otherwise the scratch variants only;
# 4. rebuilds each run's report over all its variants and prints a markdown summary per backbone
#    (scripts/summarize_run.py): wall and train seconds, training images/s, easy/difficult soft and strict
#    accuracy, device, mean GPU utilisation. Everything lands in $OUT (summary.md, logs/, gpu_util.csv, run dirs).
#
# Environment (all optional):
#   OUT                 output folder (default reports/gpu_run/<time>); the device tool sets it
#   PROFILE             built-in profile name or .toml path (default full)
#   EXTRA_SET           whitespace-separated KEY=VALUE profile overrides, each passed as --set (e.g. "image_size=32")
#   SEEDS               comma-separated seeds (default 0)
#   VARIANTS            comma-separated subset of the profile's variants (default: all of them)
#   BACKBONES           which backbones, in order (default "efficientnet_lite0 vgg16")
#   VGG16_WEIGHTS       VGG16 ImageNet weights file, passed as --weights-file
#   LITE0_FINETUNE_FROM lite0 stage that replaces a VGG16 stage name (block4_conv1 in smoke/full) in a phase's
#                       train_from (default blocks.3: the stage that takes the stride-8 feature map, as block4 does)
#   DEADLINE_S          start no new variant after this many seconds (default 0: no deadline); for a lent machine
#                       with a per-command limit, so that the summary is still written. Rerunning with the same
#                       OUT skips the variants already complete, so a run can be finished in several calls
#   EXECUTOR            serial (default: one `harness run` per variant, one after another) or ray: one
#                       `harness run --executor ray` per backbone with every (variant, seed) a Ray task at once on a
#                       local Ray, sharing the GPU (wall time of the whole matrix in summary.md; per-job times from
#                       jobs.json). DEADLINE_S then interrupts the run (SIGINT: clean, resumable by a rerun)
#   JOB_GPUS            Ray mode: GPU share per job (default 1/jobs: 0.125 for 8 variants x 1 seed; 0 without a GPU)
#   JOB_CPUS            Ray mode: CPUs (= threads) per job (default cores/jobs, at least 1)
#   DATA                dataset root (default data/small-book-images)
#   PYTHON              interpreter with the harness installed (default .venv/bin/python, else python3)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

PROFILE=${PROFILE:-full}
EXTRA_SET=${EXTRA_SET:-}
SEEDS=${SEEDS:-0}
VARIANTS=${VARIANTS:-}
BACKBONES=${BACKBONES:-efficientnet_lite0 vgg16}
VGG16_WEIGHTS=${VGG16_WEIGHTS:-}
LITE0_FINETUNE_FROM=${LITE0_FINETUNE_FROM:-blocks.3}
DEADLINE_S=${DEADLINE_S:-0}
DATA=${DATA:-data/small-book-images}
EXECUTOR=${EXECUTOR:-serial}
JOB_GPUS=${JOB_GPUS:-}
JOB_CPUS=${JOB_CPUS:-}
[[ $EXECUTOR == serial || $EXECUTOR == ray ]] || { echo "EXECUTOR=$EXECUTOR: use serial or ray" >&2; exit 2; }
OUT=${OUT:-$REPO/reports/gpu_run/$(date +%Y%m%d-%H%M%S)}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT/logs" || exit 2
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)

log() { echo "[gpu_run $(date +%H:%M:%S)] $*"; }

# A source checkout works without `pip install -e .` as long as the dependencies are installed.
if ! "$PYTHON" -c "import harness" 2>/dev/null; then
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c "import harness" || { log "cannot import harness with $PYTHON; pip install -e '.[test]' first"; exit 2; }
fi

SETS=()
for kv in $EXTRA_SET; do SETS+=(--set "$kv"); done

# --- 1. the machine ---------------------------------------------------------------------------------------------------
{
  echo "## machine"
  echo
  echo '```'
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi
  else echo "nvidia-smi: not found (no NVIDIA driver on this machine)"; fi
  "$PYTHON" - <<'EOF'
import os, platform, torch
print(f"python {platform.python_version()}  torch {torch.__version__}  cpu_count {os.cpu_count()}  "
      f"torch threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"cuda {torch.version.cuda}  device {p.name}  {p.total_memory / 2**30:.0f} GiB  "
          f"capability {p.major}.{p.minor}  bf16 {torch.cuda.is_bf16_supported()}  "
          f"cudnn {torch.backends.cudnn.version()}  cudnn.benchmark {torch.backends.cudnn.benchmark}  "
          f"allow_tf32 matmul {torch.backends.cuda.matmul.allow_tf32} / cudnn {torch.backends.cudnn.allow_tf32}")
else:
    print("torch sees no usable GPU: training and inference run on the CPU")
EOF
  echo '```'
} | tee "$OUT/summary.md"

SAMPLER=""
if command -v nvidia-smi >/dev/null 2>&1; then
  # one line per second: unix time, utilisation %, memory used MiB (first GPU)
  ( while :; do
      s=$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n1)
      [[ -n $s ]] && echo "$(date +%s.%N),${s// /}"
      sleep 1
    done ) >"$OUT/gpu_util.csv" 2>/dev/null &
  SAMPLER=$!
fi
cleanup() { [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null; }
trap cleanup EXIT

# --- helpers ----------------------------------------------------------------------------------------------------------

# Variants of the profile (after overrides), one per line.
profile_variants() {
  "$PYTHON" - "$PROFILE" "$1" "$EXTRA_SET" <<'EOF'
import sys
from harness.config import load_profile
name, backbone, extra = sys.argv[1], sys.argv[2], sys.argv[3].split()
print("\n".join(load_profile(name, extra + [f"backbone={backbone}"]).variants))
EOF
}

# --set overrides replacing phases whose train_from names a stage the backbone does not have. The built-in profiles use
# the registry's named fine-tune points ("upper"), which every backbone has, so this only acts on a user profile that
# names a raw stage of another backbone. Prints one `phases.<init>=[...]` TOML value per line, and a note on stderr.
phase_fixes() {
  "$PYTHON" - "$PROFILE" "$1" "$LITE0_FINETUNE_FROM" "$EXTRA_SET" <<'EOF'
import json, sys
from harness.config import apply_overrides, read_profile_toml
name, backbone, stage, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
raw, _ = read_profile_toml(name)
raw = apply_overrides(raw, extra + [f"backbone={backbone}"])
from harness.backbones import train_from_names
known = set(train_from_names(backbone))

def toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)

for init, phases in raw.get("phases", {}).items():
    bad = [p.get("train_from") for p in phases if p.get("train_from", "all") not in known]
    if not bad:
        continue
    if stage not in known:
        sys.exit(f"{backbone}: phases.{init} trains from {bad}, not {backbone} stages, and the replacement "
                 f"LITE0_FINETUNE_FROM={stage!r} is not one either: {sorted(known)}")
    fixed = [{**p, "train_from": stage} if p.get("train_from", "all") not in known else p for p in phases]
    print(f"phases.{init}=[" + ", ".join("{" + ", ".join(f"{k} = {toml(v)}" for k, v in p.items()) + "}"
                                          for p in fixed) + "]")
    print(f"note: {backbone} has no stage {bad}; phases.{init} fine-tunes from {stage} instead", file=sys.stderr)
EOF
}

vgg16_weights_available() {
  [[ -n $VGG16_WEIGHTS ]] && return 0
  "$PYTHON" -c "from harness.backbones import vgg16_weights_file; vgg16_weights_file(None)" >/dev/null 2>&1
}

# Ray mode, one backbone: every (variant, seed) of $wanted x $SEED_LIST as Ray tasks of one `harness run`, packed
# onto the GPU(s) by JOB_GPUS; wall_times.tsv rebuilt from jobs.json (each job's own start and end).
run_ray() {
  local bb=$1 run_dir=$2; shift 2
  local n=$(( ${#wanted[@]} * ${#SEED_LIST[@]} ))
  local gpus=${JOB_GPUS:-}
  if [[ -z $gpus ]]; then  # the jobs share one GPU; none on a machine without one (a CPU proof)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      gpus=$(awk -v n="$n" 'BEGIN{printf "%.4g", (n > 1 ? 1 / n : 1)}')
    else gpus=0; fi
  fi
  local cpus=${JOB_CPUS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
  local all; all=$(IFS=,; echo "${wanted[*]}")
  local cmd=("$PYTHON" -m harness.cli run --profile "$PROFILE" --backbone "$bb" --seeds "$SEEDS" --variants "$all"
             --out "$run_dir" --data "$DATA" --executor ray --job-gpus "$gpus" --job-cpus "$cpus" "$@")
  if (( DEADLINE_S > 0 )); then
    local left=$(( DEADLINE_S - ($(date +%s) - T0) ))
    (( left > 30 )) || { log "$bb: skipped (DEADLINE_S=$DEADLINE_S reached)"; return 0; }
    cmd=(timeout -s INT -k 60 "$left" "${cmd[@]}")
  fi
  log "$bb: ray mode, $n job(s) at once at $gpus GPU and $cpus CPU(s) each -> $run_dir"
  local start end rc
  start=$(date +%s.%N)
  "${cmd[@]}" >"$OUT/logs/$bb-ray.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  "$PYTHON" - "$run_dir" >"$run_dir/wall_times.tsv" <<'EOF'
import datetime as dt, json, sys
from pathlib import Path
try:
    jobs = json.loads((Path(sys.argv[1]) / "jobs.json").read_text())["jobs"]
except (OSError, ValueError, KeyError):
    jobs = {}
for job_id, j in sorted(jobs.items()):
    if j.get("status") != "done" or not j.get("finished"):
        continue
    end = dt.datetime.fromisoformat(j["finished"]).timestamp()
    print(f"{job_id}\t{end - float(j['seconds']):.3f}\t{end:.3f}\t0")
EOF
  local wall; wall=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
  log "$bb: ray matrix of $n job(s) in $wall s (rc $rc); $(grep -E '^verdict:' "$OUT/logs/$bb-ray.log" || echo 'no verdict')"
  grep -E '^(done|FAILED) \[|^ray: ' "$OUT/logs/$bb-ray.log" | sed 's/^/    /'
  { echo; echo "ray mode, $bb: $n job(s) at $gpus GPU / $cpus CPU(s) each, matrix wall $wall s (rc $rc)"; } >>"$OUT/summary.md"
  (( rc == 0 || rc == 1 )) && [[ -f $run_dir/report.json ]]
}

# --- 2./3. the runs ---------------------------------------------------------------------------------------------------
FAILED=0
IFS=',' read -r -a SEED_LIST <<<"$SEEDS"
for bb in $BACKBONES; do
  mapfile -t all_variants < <(profile_variants "$bb")
  [[ ${#all_variants[@]} -gt 0 ]] || { log "cannot load profile $PROFILE for $bb (see the error above)"; exit 2; }
  wanted=("${all_variants[@]}")
  if [[ -n $VARIANTS ]]; then
    IFS=',' read -r -a wanted <<<"$VARIANTS"
  fi
  extra=("${SETS[@]}")
  if [[ $bb == vgg16 ]]; then
    if [[ -n $VGG16_WEIGHTS ]]; then
      [[ -f $VGG16_WEIGHTS ]] || { log "VGG16_WEIGHTS=$VGG16_WEIGHTS does not exist"; exit 2; }
      extra+=(--weights-file "$VGG16_WEIGHTS")
    fi
    if ! vgg16_weights_available; then
      log "vgg16: no ImageNet weights (VGG16_WEIGHTS unset, nothing in torch hub's cache): scratch variants only"
      kept=()
      for v in "${wanted[@]}"; do [[ $v == scratch-* ]] && kept+=("$v"); done
      wanted=("${kept[@]}")
    fi
  fi
  mapfile -t fixes < <(phase_fixes "$bb" || echo "!error")
  [[ " ${fixes[*]} " != *"!error"* ]] || { log "$bb: cannot adapt the profile's phases (see above)"; exit 2; }
  for f in "${fixes[@]}"; do extra+=(--set "$f"); done
  if [[ ${#wanted[@]} -eq 0 ]]; then log "$bb: no variants to run"; continue; fi

  run_dir="$OUT/$(basename "${PROFILE%.toml}")-$bb"
  mkdir -p "$run_dir"
  log "$bb: ${#wanted[@]} variant(s) x seeds $SEEDS -> $run_dir"
  if [[ $EXECUTOR == ray ]]; then
    run_ray "$bb" "$run_dir" "${extra[@]}" || FAILED=1
    gpu_args=()
    [[ -s $OUT/gpu_util.csv ]] && gpu_args=(--gpu-log "$OUT/gpu_util.csv")
    { echo; "$PYTHON" scripts/summarize_run.py "$run_dir" "${gpu_args[@]}"; } | tee -a "$OUT/summary.md"
    continue
  fi
  done_variants=()
  for seed in "${SEED_LIST[@]}"; do
    for v in "${wanted[@]}"; do
      id="$bb-$v-s$seed"
      if [[ -f $run_dir/$id/metrics.json && -f $run_dir/$id/cam.json ]]; then  # a rerun into the same OUT resumes
        log "$id: already complete in $run_dir, skipping"
        [[ " ${done_variants[*]} " == *" $v "* ]] || done_variants+=("$v")
        continue
      fi
      if (( DEADLINE_S > 0 && $(date +%s) - T0 > DEADLINE_S )); then
        log "$id: skipped (DEADLINE_S=$DEADLINE_S reached)"
        continue
      fi
      start=$(date +%s.%N)
      "$PYTHON" -m harness.cli run --profile "$PROFILE" --backbone "$bb" --seeds "$seed" --variants "$v" \
        --out "$run_dir" --data "$DATA" "${extra[@]}" >"$OUT/logs/$id.log" 2>&1
      rc=$?
      end=$(date +%s.%N)
      printf '%s\t%s\t%s\t%s\n' "$id" "$start" "$end" "$rc" >>"$run_dir/wall_times.tsv"
      # exit 1 is also a FAIL verdict of this one variant; only a missing metrics.json means the variant broke
      if [[ -f $run_dir/$id/metrics.json && -f $run_dir/$id/cam.json ]]; then
        log "$id: done in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s (rc $rc)"
        [[ " ${done_variants[*]} " == *" $v "* ]] || done_variants+=("$v")
      else
        log "$id: FAILED (rc $rc); last lines of $OUT/logs/$id.log:"
        tail -n 15 "$OUT/logs/$id.log" | sed 's/^/    /'
        FAILED=1
      fi
    done
  done
  if [[ ${#done_variants[@]} -gt 0 ]]; then
    # Every step is already done: this only rewrites run.json over all variants and rebuilds the report.
    all=$(IFS=,; echo "${done_variants[*]}")
    "$PYTHON" -m harness.cli run --profile "$PROFILE" --backbone "$bb" --seeds "$SEEDS" --variants "$all" \
      --out "$run_dir" --data "$DATA" "${extra[@]}" >"$OUT/logs/$bb-report.log" 2>&1
    log "$bb: report $run_dir/report.html ($(grep -m1 '^verdict:' "$OUT/logs/$bb-report.log" || echo 'no verdict'))"
  fi
  gpu_args=()
  [[ -s $OUT/gpu_util.csv ]] && gpu_args=(--gpu-log "$OUT/gpu_util.csv")
  { echo; "$PYTHON" scripts/summarize_run.py "$run_dir" "${gpu_args[@]}"; } | tee -a "$OUT/summary.md"
done

log "total $(( $(date +%s) - T0 )) s; summary: $OUT/summary.md"
exit $FAILED
