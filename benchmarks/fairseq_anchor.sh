#!/usr/bin/env bash
# fairseq anchor: fairseq and latalign train the same `small` model on the same Multi30k BPE
# for the same updates, in the same run, and one table gives both speeds and their ratio.
# Not part of CI (it installs fairseq, ~4 minutes the first time, and trains twice).
#
#   bash benchmarks/fairseq_anchor.sh                      # 100 updates, decode 500 sentences
#   bash benchmarks/fairseq_anchor.sh --updates 60 --decode-sentences 0   # training only
#
# Options (defaults in brackets):
#   --data DIR              Multi30k de-en directory [../shared/data/multi30k]
#   --updates N             training updates for each toolkit [100]
#   --log-every K           log interval; the first interval (warm-up) is not timed [10]
#   --max-tokens T          batch budget, counted the same way by both [4096]
#   --threads T             OMP_NUM_THREADS / torch threads of both [1]
#   --decode-sentences K    beam-5 and greedy decoding of the first K test sentences from the
#                           checkpoints just trained (0: skip) [500]
#   --decode-len L          every output exactly L tokens + eos, in both [16]
#   --work DIR              scratch directory (data, logs, checkpoints) [a new /tmp/fairseq_anchor.*]
# Environment: FAIRSEQ_VENV [~/.cache/latalign/fairseq-venv], PYTHON (the interpreter that
# has latalign's dependencies) [python], LATALIGN_CACHE (latalign's tokenizer/data cache).
#
# What is compared:
# - Model: fairseq `transformer` with 3+3 layers, d=256, FFN 1024, 4 heads, dropout 0.3,
#   post-norm, --share-all-embeddings = latalign's `small` preset (translate/config.py).
# - Data: latalign prepares Multi30k (joint sentencepiece BPE, 8000 pieces, its cache); the
#   same pieces of the same training pairs (after latalign's length filter) are written as
#   text with a joint dictionary of latalign's pieces, and fairseq-preprocess binarizes them.
#   Both vocabularies are 8000 rows (fairseq: 4 specials + 7995 pieces + 1 padding symbol).
# - Schedule: cross entropy, Adam (0.9, 0.98), weight decay 1e-4, inverse-sqrt lr 1e-3 with 40
#   warm-up updates (so that the short runs' checkpoints emit eos when decoded), --max-tokens
#   T, fp32, CPU, same number of threads.
# - Speed: target tokens/s = target tokens (each sentence's pieces + eos, what fairseq calls
#   `ntokens`/`wpb` and latalign `ntokens`) per second of training wall time, over the log
#   intervals after the first one (total tokens / total time). fairseq: `wps` and `wpb` of its
#   json `train_inner` lines; latalign: `tokens_per_s` of log.jsonl's train records, each
#   weighted by its interval's seconds (the difference of consecutive `elapsed`).
# - Decoding: fairseq-generate (beam 5, then --beam 1) against benchmarks/bench_decode.py
#   (beam-5 and greedy, cached fp32) on the first K sentences of test_2016_flickr, batch 64,
#   timing decoding only (both sort the sentences by length). The two checkpoints differ (own
#   init and batch order) and a short training leaves them far from translating, so where they
#   stop would differ (measured at 40 updates: fairseq ran every output to the length cap,
#   latalign stopped after 3 tokens); both therefore decode exactly L tokens + eos per sentence
#   (fairseq --min-len L --max-len-a 0 --max-len-b L; bench_decode.py --fixed-len L): the same
#   work, so sentences/s compare the decoders. The table shows the mean output lengths.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=$REPO/../shared/data/multi30k
UPDATES=100
LOG_EVERY=10
MAX_TOKENS=4096
THREADS=1
DECODE_SENTENCES=500
DECODE_LEN=16
WORK=""
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --updates) UPDATES=$2; shift 2 ;;
    --log-every) LOG_EVERY=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --decode-sentences) DECODE_SENTENCES=$2; shift 2 ;;
    --decode-len) DECODE_LEN=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "fairseq_anchor.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in UPDATES LOG_EVERY MAX_TOKENS THREADS DECODE_SENTENCES DECODE_LEN; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
    echo "fairseq_anchor.sh: expected a whole number for ${v,,}, found '${!v}'" >&2; exit 2
  fi
done
if [ "$UPDATES" -lt $((2 * LOG_EVERY)) ]; then
  echo "fairseq_anchor.sh: expected --updates >= 2 x --log-every (the first interval is not" \
    "timed), found $UPDATES and $LOG_EVERY" >&2; exit 2
fi
if [ ! -f "$DATA/train.de.gz" ] && [ ! -f "$DATA/train.de" ]; then
  echo "fairseq_anchor.sh: expected Multi30k (train.de[.gz], ...) in $DATA, found none" >&2; exit 2
fi
DATA=$(cd "$DATA" && pwd)
FAIRSEQ_VENV=${FAIRSEQ_VENV:-$HOME/.cache/latalign/fairseq-venv}
PYTHON=${PYTHON:-python}
WORK=${WORK:-$(mktemp -d /tmp/fairseq_anchor.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "# work dir $WORK; updates $UPDATES, log every $LOG_EVERY, max tokens $MAX_TOKENS," \
  "threads $THREADS, $(getconf _NPROCESSORS_ONLN) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. fairseq in its own venv (Python 3.11, the CPU torch 2.13 wheel) ----------------------
source "$REPO/benchmarks/fairseq_install.sh"
ensure_fairseq fairseq_anchor.sh "$WORK"

# --- 2. the same BPE for both: latalign's prepared data as fairseq-preprocess input -----------
"$PYTHON" "$REPO/benchmarks/fairseq_data.py" --data "$DATA" --out "$WORK/text" \
  --test-sentences "$DECODE_SENTENCES"
rm -rf "$WORK/bin"
(cd "$WORK" && "$FAIRSEQ_VENV/bin/fairseq-preprocess" --source-lang de --target-lang en \
  --trainpref text/train --validpref text/valid --testpref text/test --destdir bin \
  --srcdict text/dict.txt --joined-dictionary --workers 1 >"$WORK/preprocess.log" 2>&1) ||
  { tail -20 "$WORK/preprocess.log"; exit 1; }

# --- 3. training, fairseq then latalign, same settings ------------------------------------------
COMMON_LR=(--lr 1e-3 --warmup-updates 40)
rm -rf "$WORK/fairseq_ckpt" "$WORK/latalign_run"
echo "# fairseq-train --cpu, $UPDATES updates ..."
"$FAIRSEQ_VENV/bin/fairseq-train" "$WORK/bin" --cpu --task translation -s de -t en \
  --arch transformer --encoder-layers 3 --decoder-layers 3 \
  --encoder-embed-dim 256 --decoder-embed-dim 256 \
  --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
  --encoder-attention-heads 4 --decoder-attention-heads 4 \
  --dropout 0.3 --attention-dropout 0.0 --activation-dropout 0.0 --share-all-embeddings \
  --criterion cross_entropy --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.0001 \
  --lr-scheduler inverse_sqrt --warmup-init-lr 1e-07 "${COMMON_LR[@]}" \
  --max-tokens "$MAX_TOKENS" --max-update "$UPDATES" --seed 1 --num-workers 0 \
  --disable-validation --no-epoch-checkpoints --save-dir "$WORK/fairseq_ckpt" \
  --log-format json --log-interval "$LOG_EVERY" >"$WORK/fairseq_train.log" 2>&1 ||
  { tail -30 "$WORK/fairseq_train.log"; exit 1; }
echo "# latalign train, $UPDATES updates ..."
"$PYTHON" -m latalign.cli train --run-dir "$WORK/latalign_run" --data "$DATA" --preset small \
  --criterion ce "${COMMON_LR[@]}" --max-tokens "$MAX_TOKENS" --max-updates "$UPDATES" \
  --log-every "$LOG_EVERY" --validate-every 1000000 --seed 1 --device cpu --no-progress \
  --no-resume --no-bf16 >"$WORK/latalign_train.log" 2>&1 ||
  { tail -30 "$WORK/latalign_train.log"; exit 1; }

# --- 4. decoding from the two checkpoints --------------------------------------------------------
if [ "$DECODE_SENTENCES" -gt 0 ]; then
  echo "# decoding $DECODE_SENTENCES test sentences (beam 5, greedy) with each ..."
  for beam in 5 1; do
    # fairseq 0.12 pickles argparse.Namespace into its checkpoints; torch >= 2.6 loads
    # weights_only by default and refuses them. The checkpoint is the one trained just above.
    # --required-batch-size-multiple 1: with the default 8, fairseq-fixed 0.12.3.1 drops the
    # sentences left over after the last multiple of 8 (16 of 20 translated, measured).
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$FAIRSEQ_VENV/bin/fairseq-generate" "$WORK/bin" --cpu --task translation -s de -t en \
      --path "$WORK/fairseq_ckpt/checkpoint_last.pt" --gen-subset test --beam "$beam" \
      --batch-size 64 --min-len "$DECODE_LEN" --max-len-a 0 --max-len-b "$DECODE_LEN" \
      --num-workers 0 \
      --required-batch-size-multiple 1 \
      >"$WORK/fairseq_generate_beam$beam.log" 2>&1 ||
      { tail -30 "$WORK/fairseq_generate_beam$beam.log"; exit 1; }
  done
  "$PYTHON" "$REPO/benchmarks/bench_decode.py" --run-dir "$WORK/latalign_run" \
    --data "$DATA/test_2016_flickr.de.gz" --sentences "$DECODE_SENTENCES" --batch-size 64 \
    --beam 5 --fixed-len "$DECODE_LEN" --threads "$THREADS" --repeats 1 --skip-uncached --skip-bf16 --skip-int8 \
    >"$WORK/latalign_decode.log" 2>&1 || { tail -30 "$WORK/latalign_decode.log"; exit 1; }
fi

# --- 5. one table --------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$LOG_EVERY" "$DECODE_SENTENCES" "$FS_VERSION" <<'EOF'
import json
import re
import sys
from pathlib import Path

work, log_every, k, fs_version = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def fairseq_speed() -> tuple[float, int, int]:
    """(target tokens/s, timed updates, timed target tokens) from train_inner lines."""
    tokens = seconds = 0.0
    updates = 0
    rows = []
    for line in (work / "fairseq_train.log").read_text().splitlines():
        if "| train_inner |" in line:
            rows.append(json.loads(line.split("| train_inner |", 1)[1]))
    for r in rows[1:]:  # the first interval holds the warm-up
        t = float(r["wpb"]) * log_every
        tokens += t
        seconds += t / float(r["wps"])
        updates += log_every
    return tokens / seconds, updates, int(tokens)


def latalign_speed() -> tuple[float, int, int]:
    records = [json.loads(x) for x in (work / "latalign_run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    tokens = seconds = 0.0
    updates = 0
    for prev, r in zip(train, train[1:]):
        dt = r["elapsed"] - prev["elapsed"]
        tokens += r["tokens_per_s"] * dt
        seconds += dt
        updates += r["step"] - prev["step"]
    return tokens / seconds, updates, int(tokens)


def fairseq_decode(beam: int) -> tuple[float, float, float]:
    """(sentences/s, output tokens/s, mean output length incl. eos) from fairseq-generate."""
    text = (work / f"fairseq_generate_beam{beam}.log").read_text()
    m = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s", text)
    n, toks, s = int(m[1].replace(",", "")), int(m[2].replace(",", "")), float(m[3])
    return n / s, toks / s, toks / n


def latalign_decode(name: str) -> tuple[float, float, float]:
    text = (work / "latalign_decode.log").read_text()
    m = re.search(rf"^{re.escape(name)}\s+([\d.]+)\s+([\d.]+)", text, re.M)
    speed, out_len = float(m[1]), float(m[2]) + 1  # + eos, which fairseq counts
    return speed, speed * out_len, out_len


fs, fs_upd, fs_tok = fairseq_speed()
la, la_upd, la_tok = latalign_speed()
print()
print(f"fairseq {fs_version} vs latalign, same run ({work}):")
print(f"| what | fairseq | latalign | latalign / fairseq |")
print(f"|---|---|---|---|")
print(
    f"| training, target tokens/s (updates {fs_upd} / {la_upd} timed, target tokens "
    f"{fs_tok:,} / {la_tok:,}) | {fs:,.0f} | {la:,.0f} | {la / fs:.2f} |"
)
if k > 0:
    for beam, name in ((5, "beam-5 cached fp32"), (1, "greedy cached fp32")):
        f_s, f_t, f_l = fairseq_decode(beam)
        l_s, l_t, l_l = latalign_decode(name)
        what = "beam-5" if beam == 5 else "greedy"
        print(
            f"| {what} decoding, sentences/s ({k} test sentences, batch 64; output tokens incl. "
            f"eos per sentence {f_l:.1f} / {l_l:.1f}) | {f_s:.1f} | {l_s:.1f} | {l_s / f_s:.2f} |"
        )
EOF
echo "# load average now $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK"
