#!/usr/bin/env bash
# The GPU check of issue 9: one script, one table, <= 8 minutes on one H200.
#
# On the GPU machine (Python 3.12, torch 2.11, triton 3.6, no package index) it runs, each under
# its own `timeout`:
#   1. the image's packages: every import latalign and its tests need, CUDA present
#   2. pytest tests/gpu -q                    (kernels, decoding, training on CUDA)
#   3. benchmarks/bench_losses.py --device cuda --quick      (AXE/CE, CTC/torch CTC, memory)
#   4. benchmarks/bench_train.py --device cuda --quick --preset paper   (CE vs AXE, fp32 vs bf16)
#   5. latalign reproduce --preset paper --data DATA --scale S   (end to end)
#   6. torchrun --nproc_per_node=1 latalign train      (the DDP path, one process, tiny model)
# and prints one table (check, status, figure, goal), also written to $OUT/summary.md.
#
# How to run it (the lead, with the device tool, from the repository root):
#   1. here: mkdir -p .gpu_data && cp -r ../shared/data/multi30k .gpu_data/
#      (.gpu_data/ is git-ignored; ../shared does not travel to the GPU machine)
#   2. here: bash benchmarks/gpu_wheels.sh     (downloads into .whl/ only what the image lacks;
#      today nothing: then there is no .whl/ to carry)
#   3. device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu_data"] (+ ".whl"
#      if step 2 made it), timeout_s=560). Logs come back from $OUT (7 files).
# On a CPU machine, test the script's logic: `bash benchmarks/gpu_check.sh --dry-run` (or
# GPU_CHECK_DEVICE=cpu) runs every step on the CPU at a tiny scale (the GPU tests skip, the
# loss benchmark only parses its options, bench_train uses the tiny preset on synthetic data,
# reproduce the `ci` preset, DDP gloo).
#
# Environment: OUT (logs; default /tmp/gpu_check.out), GPU_CHECK_DATA [.gpu_data/multi30k],
# GPU_CHECK_SCALE (reproduce --scale) [0.001: 50 updates per experiment, 3 per map objective],
# GPU_CHECK_MAP (reproduce --map-objectives; the reference align/sum/noncausal always runs)
# [align+clone_target+delimiter/sum/noncausal], GPU_CHECK_BUDGET (seconds for all steps; a
# step gets at most what is left, one with under 15 s left is SKIPPED) [480], PYTHON [python3].
# Exit status 0 when every step ran (goals aside), 1 when one failed or timed out.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
for a in "$@"; do
  case $a in
    --dry-run) DEVICE=cpu ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
case $DEVICE in
  cuda|cpu) ;;
  *) echo "gpu_check.sh: expected GPU_CHECK_DEVICE cuda or cpu, found '$DEVICE'" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-/tmp/gpu_check.out}
WORK=$(mktemp -d /tmp/gpu_check.work.XXXXXX)
mkdir -p "$OUT_DIR"
DATA=${GPU_CHECK_DATA:-$REPO/.gpu_data/multi30k}
SCALE=${GPU_CHECK_SCALE:-0.001}
MAP=${GPU_CHECK_MAP:-align+clone_target+delimiter/sum/noncausal}
BUDGET=${GPU_CHECK_BUDGET:-480}
START=$(date +%s)
export PYTHONUNBUFFERED=1 LATALIGN_CACHE=$WORK/cache
SUMMARY=$OUT_DIR/summary.md
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
since() { echo $(($(date +%s) - $1)); }

# --- wheels carried in .whl/ (benchmarks/gpu_wheels.sh) ---------------------------------------
SITE=""
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
  SITE=/tmp/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$REPO"/.whl/*.whl >"$WORK/wheels.log" 2>&1 ||
    { echo "gpu_check.sh: installing .whl/ failed:"; tail -5 "$WORK/wheels.log"; }
fi
export PYTHONPATH=$REPO/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}

# --- 1. packages and device ----------------------------------------------------------------------
t0=$(date +%s)
ENV_LINE=$("$PY" - "$DEVICE" <<'EOF' 2>&1
import importlib
import sys

missing = []
versions = {}
for name in ("torch", "numpy", "numba", "sentencepiece", "sacrebleu", "tqdm", "triton",
             "pytest", "hypothesis", "latalign"):
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as e:  # report every missing one, not only the first
        missing.append(f"{name} ({type(e).__name__})")
import torch  # noqa: E402

where = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"python {sys.version.split()[0]}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
      + f"; {where}")
if missing:
    print("MISSING: " + ", ".join(missing))
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    print("MISSING: a CUDA device")
EOF
)
echo "$ENV_LINE"
if echo "$ENV_LINE" | grep -q MISSING; then
  row "packages, device" "FAIL" "$(echo "$ENV_LINE" | grep MISSING)" "all imports; CUDA"
else
  row "packages, device" "ok" "$(echo "$ENV_LINE" | sed 's/.*; //')" "all imports; CUDA"
fi
if [ -d "$DATA" ]; then
  DATA=$(cd "$DATA" && pwd)
  TRAIN_DATA=$DATA
else
  echo "gpu_check.sh: no data in $DATA (mkdir -p .gpu_data && cp -r ../shared/data/multi30k" \
    ".gpu_data/ before the run, and carry .gpu_data): bench_train uses the synthetic corpus"
  TRAIN_DATA=synthetic
fi

# run NAME TIMEOUT LOG CMD...: runs CMD under timeout (at most what is left of the budget),
# output to LOG; sets RC (125: skipped, no budget left) and SECS
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((BUDGET - $(since "$START") - 10))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "== $name: SKIPPED, ${left}s of the ${BUDGET}s budget left" | tee "$log"
    RC=125; SECS=0
    return
  fi
  echo "== $name (timeout ${limit}s): $*"
  local t=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$log" 2>&1
  RC=$?
  SECS=$(since "$t")
  tail -4 "$log"
  echo "== $name: exit $RC after ${SECS}s"
}
status_of() {  # exit status -> table status
  case $1 in 0) echo "ok" ;; 124|137) echo "TIMEOUT" ;; 125) echo "SKIPPED (budget)" ;;
    *) echo "FAIL ($1)" ;; esac
}

# --- 2. GPU tests --------------------------------------------------------------------------------
LOG=$OUT_DIR/pytest_gpu.log
# -o addopts=: pyproject's own -q plus this -q would hide the summary line
run_step "pytest tests/gpu" 100 "$LOG" "$PY" -m pytest tests/gpu -o addopts= -q -rfEs \
  -p no:cacheprovider
FIG=$(grep -E "passed|failed|skipped|error|no tests ran" "$LOG" | tail -1)
ST=$(status_of $RC)
[ "$DEVICE" = cpu ] && ST="$ST (dry run: skips without CUDA)"
row "pytest tests/gpu" "$ST" "${FIG:-see pytest_gpu.log} (${SECS}s)" "all pass"

# --- 3. the losses ---------------------------------------------------------------------------------
LOG=$OUT_DIR/bench_losses.log
if [ "$DEVICE" = cuda ]; then
  run_step "bench_losses" 75 "$LOG" "$PY" benchmarks/bench_losses.py --device cuda --quick
  FIG=$("$PY" - "$LOG" <<'EOF'
import re
import sys

text = open(sys.argv[1]).read()
parts = []
for line in text.splitlines():  # "(n, n) | ce | torch ctc | axe | axe/ce | ctc | ctc/tctc | ..."
    cols = [c.strip() for c in line.split("|")]
    if re.fullmatch(r"\(\d+, \d+\)", cols[0]) and len(cols) >= 7:
        parts.append(f"n=m={cols[0].split(',')[0][1:]}: AXE/CE {cols[4]}, CTC/torch {cols[6]}")
for line in text.splitlines():  # "axe | (64, 1000) | peak | above | ms"
    cols = [c.strip() for c in line.split("|")]
    if cols[0] in ("axe", "ctc") and len(cols) >= 4 and cols[1].startswith("("):
        parts.append(f"{cols[0]} {cols[1]} {cols[2]} GiB")
print("; ".join(parts) or "see bench_losses.log")
EOF
  )
  GOAL="AXE/CE <= 1.1, CTC/torch <= 0.5 (n=m 30, 100); 1000x64 in 2 GiB; 4000x8 runs"
else
  run_step "bench_losses (dry run: options only)" 60 "$LOG" "$PY" benchmarks/bench_losses.py --help
  FIG="dry run: --help parsed"
  GOAL="(CUDA only)"
fi
row "bench_losses --device $DEVICE --quick" "$(status_of $RC)" "$FIG (${SECS}s)" "$GOAL"

# --- 4. training throughput ------------------------------------------------------------------------
LOG=$OUT_DIR/bench_train.log
if [ "$DEVICE" = cuda ]; then
  run_step "bench_train" 100 "$LOG" "$PY" benchmarks/bench_train.py --device cuda --quick \
    --preset paper --data "$TRAIN_DATA" --criteria ce,axe --precisions fp32,bf16 \
    --json "$WORK/bench_train.json"
else
  run_step "bench_train (dry run)" 100 "$LOG" "$PY" benchmarks/bench_train.py --device cpu \
    --preset tiny --data synthetic --criteria ce,axe --precisions fp32,bf16 --warmup 1 \
    --updates 2 --threads 1 --json "$WORK/bench_train.json"
fi
ST=$(status_of $RC)
FIG=$("$PY" - "$WORK/bench_train.json" <<'EOF' 2>/dev/null || echo "see bench_train.log"
import json
import sys

r = json.load(open(sys.argv[1]))
tps = {(x["criterion"], x["precision"]): x["tokens_per_s"] for x in r["rows"]}
q = r["ratios"]
print(
    f"{r['preset']}: CE fp32 {tps[('ce', 'fp32')]:,.0f}, bf16 {tps[('ce', 'bf16')]:,.0f} tok/s; "
    f"AXE/CE fp32 {q['axe/ce fp32']:.2f}, bf16 {q['axe/ce bf16']:.2f}; "
    f"bf16/fp32 CE {q['bf16/fp32 ce']:.2f}, AXE {q['bf16/fp32 axe']:.2f}; backend {r['backend']}",
    end="",
)
met = min(q["axe/ce fp32"], q["axe/ce bf16"]) >= 0.95 and q["bf16/fp32 ce"] >= 1.5
print(f"; goals {'met' if met else 'NOT met'}")
EOF
)
row "bench_train --device $DEVICE $([ "$DEVICE" = cuda ] && echo '--quick --preset paper' || echo '--preset tiny (dry run)')" "$ST" "$FIG (${SECS}s)" "AXE/CE >= 0.95; bf16/fp32 >= 1.5 (H200, paper)"

# --- 5. reproduce end to end ---------------------------------------------------------------------
LOG=$OUT_DIR/reproduce.log
if [ "$DEVICE" = cuda ] && [ "$TRAIN_DATA" = synthetic ]; then
  RC=2; SECS=0
  echo "no data for reproduce --preset paper" >"$LOG"
  row "reproduce --preset paper" "SKIPPED" "no data in .gpu_data/multi30k" "ends in ~3 min"
else
  if [ "$DEVICE" = cuda ]; then
    run_step "reproduce" 190 "$LOG" "$PY" -m latalign.cli reproduce --preset paper \
      --data "$DATA" --scale "$SCALE" --map-objectives "$MAP" --out "$WORK/reproduce"
    WHAT="reproduce --preset paper --scale $SCALE"
  else
    run_step "reproduce (dry run)" 190 "$LOG" "$PY" -m latalign.cli reproduce --preset ci \
      --out "$WORK/reproduce"
    WHAT="reproduce --preset ci (dry run)"
  fi
  [ -f "$WORK/reproduce/report.md" ] && cp "$WORK/reproduce/report.md" "$OUT_DIR/reproduce_report.md"
  ST=$(status_of $RC)
  if [ "$RC" = 0 ] && [ ! -f "$WORK/reproduce/report.md" ]; then ST="FAIL (no report.md)"; fi
  FIG="exit $RC after ${SECS}s; $(ls "$WORK/reproduce" 2>/dev/null | wc -l) files in the run dir"
  row "$WHAT" "$ST" "$FIG" "ends in ~3 min with report.md"
fi

# --- 6. DDP through torchrun, one process ----------------------------------------------------------
LOG=$OUT_DIR/ddp_torchrun.log
DDP_DATA=(--data "$TRAIN_DATA")
# the dry run trains on a small synthetic corpus (a BPE of Multi30k alone takes a minute there)
if [ "$TRAIN_DATA" = synthetic ] || [ "$DEVICE" = cpu ]; then DDP_DATA=(--synthetic-size 2000); fi
run_step "torchrun DDP" 60 "$LOG" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
  -m latalign.cli train --run-dir "$WORK/ddp" --preset tiny "${DDP_DATA[@]}" --criterion axe \
  --max-updates 30 --log-every 10 --validate-every 30 --lr 1e-3 --warmup-updates 10 \
  --device "$DEVICE" --no-progress --no-resume
FIG=$("$PY" - "$WORK/ddp/log.jsonl" <<'EOF' 2>/dev/null || echo "no log.jsonl"
import json
import sys

recs = [json.loads(x) for x in open(sys.argv[1])]
train = [r for r in recs if r.get("kind") == "train"]
valid = [r for r in recs if r.get("kind") == "valid"]
print(
    f"{train[-1]['step']} updates, train loss {train[0]['train_loss']:.2f} -> "
    f"{train[-1]['train_loss']:.2f}, valid {valid[-1]['valid_loss']:.2f}, "
    f"{train[-1]['tokens_per_s']:,.0f} tok/s"
)
EOF
)
row "torchrun --nproc_per_node=1 train (DDP, axe)" "$(status_of $RC)" "$FIG (${SECS}s)" "finishes, loss falls"

# --- the table -------------------------------------------------------------------------------------
TOTAL=$(since "$START")
{
  echo "# gpu_check ($DEVICE) $(date -u +%Y-%m-%dT%H:%MZ), ${TOTAL}s in all (goal <= 480s)"
  echo
  echo "$ENV_LINE"
  echo
  echo "| check | status | figure | goal |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$SUMMARY"
echo
cat "$SUMMARY"
rm -rf "$WORK"
if printf '%s\n' "${ROWS[@]}" | grep -qE '\| (FAIL|TIMEOUT)'; then exit 1; fi
exit 0
