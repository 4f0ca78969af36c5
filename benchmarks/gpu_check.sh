#!/usr/bin/env bash
# The GPU check (issue 16): two parts, each <= 240 s of command time on one H200, each printing
# its table (also when a step fails or the command is stopped).
#
#   bash benchmarks/gpu_check.sh --part 1   # environment, tests/gpu/test_kernels_gpu.py, the loss
#                                           # benchmark on CUDA (AXE/CE, CTC/torch CTC, memory)
#   bash benchmarks/gpu_check.sh --part 2   # training benchmark (paper preset: CE vs AXE, fp32 vs
#                                           # bf16), decoding on CUDA = CPU, a real DDP process
#                                           # group on NCCL with one rank, reproduce --preset ci
#   bash benchmarks/gpu_check.sh --dry-run [--part N]   # both parts (or one) on the CPU, tiny
#
# Every step runs under its own `timeout`, capped by what is left of the part's budget (a step
# with under 15 s left is SKIPPED); compile caches are warmed inside the step that needs them
# (numba by the first CPU reference, Triton by `triton_variants.py --warm` before the timed
# training benchmark; the loss benchmark warms up on every shape it times).
#
# How to run it (the lead, with the device tool, from the repository root):
#   1. here: mkdir -p .gpu_data && cp -r ../shared/data/multi30k .gpu_data/
#      (.gpu_data/ is git-ignored; ../shared does not travel to the GPU machine)
#   2. here: bash benchmarks/gpu_wheels.sh     (downloads into .whl/ only what the image lacks;
#      when it makes no .whl/, there is nothing to carry)
#   3. device tool: run(command="bash benchmarks/gpu_check.sh --part 1", carry=[".gpu_data"]
#      (+ ".whl"), timeout_s=280), then the same with --part 2. Logs come back from $OUT.
#
# The DDP step sets LATALIGN_FORCE_DDP=1 (docs/gpu.md): under torchrun with one rank the trainer
# makes the process group (NCCL on CUDA, gloo on the CPU), wraps the model in DDP and prints
# "distributed: backend=<nccl|gloo> world_size=1" (rank 0), which the step looks for.
#
# Environment: OUT (logs; default /tmp/gpu_check.out), GPU_CHECK_DATA [.gpu_data/multi30k],
# GPU_CHECK_BUDGET (seconds per part) [240; dry run 960, every step cap x4], PYTHON [python3].
# Exit status 0 when every step ran (goals aside), 1 when one failed or timed out, 2 on bad usage.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PARTS=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DEVICE=cpu ;;
    --part) shift; PARTS="$PARTS ${1:-}" ;;
    --part=*) PARTS="$PARTS ${1#--part=}" ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$PARTS" ]; then
  if [ "$DEVICE" = cpu ]; then PARTS="1 2"; else
    echo "gpu_check.sh: expected --part 1 or --part 2 (each <= 240 s; see --help)" >&2; exit 2
  fi
fi
for p in $PARTS; do
  case $p in 1|2) ;; *) echo "gpu_check.sh: expected --part 1 or 2, found '$p'" >&2; exit 2 ;; esac
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
# the CPU (dry run) is far slower: every cap x4 there, the budget 960 s per part
SLOW=1
[ "$DEVICE" = cpu ] && SLOW=4
BUDGET=${GPU_CHECK_BUDGET:-$((240 * SLOW))}
export PYTHONUNBUFFERED=1 LATALIGN_CACHE=$WORK/cache TRITON_CACHE_DIR=$WORK/triton
export NUMBA_CACHE_DIR=$WORK/numba

# --- wheels carried in .whl/ (benchmarks/gpu_wheels.sh) ---------------------------------------
SITE=""
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
  SITE=/tmp/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$REPO"/.whl/*.whl >"$WORK/wheels.log" 2>&1 ||
    { echo "gpu_check.sh: installing .whl/ failed:"; tail -5 "$WORK/wheels.log"; }
fi
export PYTHONPATH=$REPO/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}
if [ -d "$DATA" ]; then DATA=$(cd "$DATA" && pwd); TRAIN_DATA=$DATA; else TRAIN_DATA=synthetic; fi

ROWS=()
PART=""
START=0
FAILED=0
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
since() { echo $(($(date +%s) - $1)); }
status_of() {  # exit status -> table status
  case $1 in 0) echo "ok" ;; 124|137) echo "TIMEOUT" ;; 125) echo "SKIPPED (budget)" ;;
    *) echo "FAIL ($1)" ;; esac
}

print_table() {  # the part's table, to stdout and $OUT/summary_part<N>.md
  [ -z "$PART" ] && return
  local summary=$OUT_DIR/summary_part$PART.md
  {
    echo "# gpu_check part $PART ($DEVICE) $(date -u +%Y-%m-%dT%H:%MZ), $(since "$START")s (goal <= ${BUDGET}s)"
    echo
    echo "${ENV_LINE:-environment not read}"
    echo
    echo "| check | status | figure | goal |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
  } >"$summary"
  echo
  cat "$summary"
  if printf '%s\n' "${ROWS[@]}" | grep -qE '\| (FAIL|TIMEOUT)'; then FAILED=1; fi
  ROWS=()
  PART=""
}
CHILD=""
on_stop() {  # stopped from outside (the device tool's limit): the table still prints
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null
  echo "gpu_check.sh: stopped; the steps so far:"
  row "(stopped)" "TIMEOUT" "the command was stopped after $(since "$START")s" "<= ${BUDGET}s"
  print_table
  rm -rf "$WORK"
  exit 1
}
trap on_stop TERM INT

# run_step NAME LIMIT LOG CMD...: CMD under timeout (at most what is left of the part's budget),
# output to LOG; sets RC (125: skipped, no budget left) and SECS
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  limit=$((limit * SLOW))
  local left=$((BUDGET - $(since "$START") - 5))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "== $name: SKIPPED, ${left}s of the ${BUDGET}s budget left" | tee "$log"
    RC=125; SECS=0
    return
  fi
  echo "== $name (timeout ${limit}s): $*"
  local t
  t=$(date +%s)
  # in the background, so that a TERM to this script runs on_stop at once (not after the step)
  timeout --kill-after=5 "$limit" "$@" >"$log" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  RC=$?
  CHILD=""
  SECS=$(since "$t")
  tail -4 "$log"
  echo "== $name: exit $RC after ${SECS}s"
}

step_environment() {
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
}

pytest_figure() { grep -E "passed|failed|skipped|error|no tests ran" "$1" | tail -1; }

# --- part 1: the loss library ---------------------------------------------------------------------
part1() {
  PART=1; START=$(date +%s); step_environment
  local log=$OUT_DIR/pytest_kernels.log st fig
  # -o addopts=: pyproject's own -q plus this -q would hide the summary line
  run_step "pytest kernels" 110 "$log" "$PY" -m pytest tests/gpu/test_kernels_gpu.py \
    -o addopts= -q -rfEs -p no:cacheprovider
  st=$(status_of $RC)
  [ "$DEVICE" = cpu ] && st="$st (dry run: skips without CUDA)"
  row "pytest tests/gpu/test_kernels_gpu.py" "$st" "$(pytest_figure "$log") (${SECS}s)" \
    "all pass (layouts, syncs, launches, vs numba, memory)"

  log=$OUT_DIR/bench_losses.log
  if [ "$DEVICE" = cuda ]; then
    run_step "bench_losses" 100 "$log" "$PY" benchmarks/bench_losses.py --device cuda --quick
    fig=$("$PY" - "$log" <<'EOF'
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
    row "bench_losses --device cuda --quick" "$(status_of $RC)" "$fig (${SECS}s)" \
      "AXE/CE <= 1.1, CTC/torch <= 0.5 (n=m 30, 100); 1000x64 in 2 GiB; 4000x8 runs"
  else
    run_step "bench_losses (dry run)" 100 "$log" "$PY" benchmarks/bench_losses.py --quick \
      --sizes 8x8 --table-only
    fig=$(grep -E '^\(8, 8\)' "$log" | head -1 | awk -F' [|] ' '{print "AXE/CE " $5 ", CTC/torch " $8}')
    row "bench_losses --quick --sizes 8x8 --table-only (dry run, CPU)" "$(status_of $RC)" \
      "${fig:-see bench_losses.log} (${SECS}s)" "(the goals are for CUDA)"
  fi
  print_table
}

# --- part 2: the training stack on the GPU ----------------------------------------------------------
part2() {
  PART=2; START=$(date +%s); step_environment
  local log=$OUT_DIR/bench_train.log st fig
  if [ "$DEVICE" = cuda ]; then
    # Triton's cache warmed first (every tile bucket), so no compile lands in a timed update
    run_step "bench_train" 90 "$log" bash -c "'$PY' benchmarks/triton_variants.py --warm \
      --criteria axe --dtypes fp32,bf16 --device cuda && '$PY' benchmarks/bench_train.py \
      --device cuda --quick --preset paper --data '$TRAIN_DATA' --criteria ce,axe \
      --precisions fp32,bf16 --json '$WORK/bench_train.json'"
  else
    run_step "bench_train (dry run)" 90 "$log" "$PY" benchmarks/bench_train.py --device cpu \
      --preset tiny --data synthetic --criteria ce,axe --precisions fp32,bf16 --warmup 1 \
      --updates 2 --threads 1 --json "$WORK/bench_train.json"
  fi
  st=$(status_of $RC)
  fig=$("$PY" - "$WORK/bench_train.json" <<'EOF' 2>/dev/null || echo "see bench_train.log"
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
  row "bench_train $([ "$DEVICE" = cuda ] && echo '--quick --preset paper' || echo '--preset tiny (dry run)')" \
    "$st" "$fig (${SECS}s)" "AXE/CE >= 0.95; bf16/fp32 >= 1.5 (H200, paper)"

  log=$OUT_DIR/pytest_decode.log
  run_step "pytest decode" 35 "$log" "$PY" -m pytest tests/gpu/test_decode_gpu.py \
    -o addopts= -q -rfEs -p no:cacheprovider
  st=$(status_of $RC)
  [ "$DEVICE" = cpu ] && st="$st (dry run: skips without CUDA)"
  row "pytest tests/gpu/test_decode_gpu.py" "$st" "$(pytest_figure "$log") (${SECS}s)" \
    "decoding on CUDA = CPU (greedy, beam, translate_lines)"

  log=$OUT_DIR/ddp_torchrun.log
  local pg=gloo
  [ "$DEVICE" = cuda ] && pg=nccl
  # a small synthetic corpus: the step checks the process group, not the data (no BPE to train)
  run_step "torchrun DDP ($pg, forced)" 35 "$log" env LATALIGN_FORCE_DDP=1 NCCL_DEBUG=INFO \
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m latalign.cli train --run-dir "$WORK/ddp" --preset tiny --synthetic-size 2000 --criterion axe \
    --max-updates 30 --log-every 10 --validate-every 30 --lr 1e-3 --warmup-updates 10 \
    --device "$DEVICE" --no-progress --no-resume
  st=$(status_of $RC)
  fig=$("$PY" - "$WORK/ddp/log.jsonl" <<'EOF' 2>/dev/null || echo "no log.jsonl"
import json
import sys

recs = [json.loads(x) for x in open(sys.argv[1])]
train = [r for r in recs if r.get("kind") == "train"]
valid = [r for r in recs if r.get("kind") == "valid"]
print(
    f"{train[-1]['step']} updates, train loss {train[0]['train_loss']:.2f} -> "
    f"{train[-1]['train_loss']:.2f}, valid {valid[-1]['valid_loss']:.2f}"
)
EOF
  )
  # the evidence that a process group ran: the trainer's line, and NCCL's own on CUDA
  if grep -q "distributed: backend=$pg" "$log"; then
    fig="$fig; process group $pg made"
    if [ "$pg" = nccl ]; then
      grep -q "NCCL INFO.*Init COMPLETE" "$log" && fig="$fig, NCCL communicator initialised" ||
        { fig="$fig, but no NCCL 'Init COMPLETE' line"; [ "$st" = ok ] && st="FAIL (no NCCL)"; }
    fi
  elif [ "$RC" = 0 ]; then
    st="FAIL (no process group)"
    fig="$fig; no 'distributed: backend=$pg' line: the trainer ignores LATALIGN_FORCE_DDP"
  fi
  row "LATALIGN_FORCE_DDP=1 torchrun --nproc_per_node=1 train (axe)" "$st" "$fig (${SECS}s)" \
    "a $pg process group with one rank; DDP trains; loss falls"

  log=$OUT_DIR/reproduce.log
  run_step "reproduce --preset ci" 75 "$log" "$PY" -m latalign.cli reproduce --preset ci \
    --device "$DEVICE" --out "$WORK/reproduce"
  [ -f "$WORK/reproduce/report.md" ] && cp "$WORK/reproduce/report.md" "$OUT_DIR/reproduce_report.md"
  st=$(status_of $RC)
  if [ "$RC" = 0 ] && [ ! -f "$WORK/reproduce/report.md" ]; then st="FAIL (no report.md)"; fi
  row "reproduce --preset ci --device $DEVICE" "$st" \
    "exit $RC after ${SECS}s; $(ls "$WORK/reproduce" 2>/dev/null | wc -l) files in the run dir" \
    "ends with report.md"
  print_table
}

for p in $PARTS; do "part$p"; done
rm -rf "$WORK"
exit $FAILED
