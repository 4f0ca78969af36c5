#!/usr/bin/env bash
# The fairseq plugin, end to end: fairseq-train (unmodified fairseq, --user-dir) trains a tiny NAT
# for a few updates with each latalign criterion, and the validation loss fairseq logs is
# recomputed from the saved checkpoint with latalign's losses called directly.
# Not part of CI (it installs fairseq, ~4 minutes the first time; then ~3 minutes).
#
#   bash benchmarks/fairseq_plugin.sh
#   bash benchmarks/fairseq_plugin.sh --updates 40 --train-pairs 5000
#
# Options (defaults in brackets):
#   --data DIR          Multi30k de-en directory [../shared/data/multi30k]
#   --train-pairs N     the first N training pairs are binarized and trained on [2000]
#   --valid-pairs K     the first K validation pairs: the valid split, one batch [32]
#   --updates N         training updates of each run [20]
#   --max-tokens T      batch budget [2048]
#   --threads T         OMP_NUM_THREADS / torch threads [1]
#   --work DIR          scratch directory [a new /tmp/fairseq_plugin.*]
# Environment: FAIRSEQ_VENV [~/.cache/latalign/fairseq-venv] (fairseq's own venv; this script
# also installs latalign there, `pip install -e` of this checkout, with its dependencies
# except torch, which the venv already pins), LATALIGN_CACHE (latalign's tokenizer/data cache).
#
# --left-pad-source sets fairseq's left_pad_source to False (a flag for a default-True option):
# --src-embedding-copy copies source positions 0 .. S-1, which a left-padded batch misplaces.
# Runs (all --task translation_lev --noise full_mask, 1+1 layers, d=64, FFN 128, 2 heads, shared
# embeddings, --src-embedding-copy, Adam lr 1e-3 with 10 warm-up updates, --cpu):
#   latalign_ctc  --arch latalign_nat_upsampled (λ = 2 decoder positions per source token)
#   latalign_axe  --arch nonautoregressive_transformer (fairseq's own; + its length predictor)
#   latalign_dag  --arch latalign_nat_dag (λ = 4 vertices per source token + transitions)
# The data: latalign's joint sentencepiece BPE (8,000 pieces) of Multi30k, written as text by
# benchmarks/fairseq_data.py (as fairseq_anchor.sh does) and binarized by fairseq-preprocess.
# The check (benchmarks/fairseq_plugin_check.py) prints criterion | fairseq logged | latalign
# recomputed | match and exits 1 on a mismatch.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=$REPO/../shared/data/multi30k
TRAIN_PAIRS=2000
VALID_PAIRS=32
UPDATES=20
MAX_TOKENS=2048
THREADS=1
WORK=""
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --train-pairs) TRAIN_PAIRS=$2; shift 2 ;;
    --valid-pairs) VALID_PAIRS=$2; shift 2 ;;
    --updates) UPDATES=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "fairseq_plugin.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in TRAIN_PAIRS VALID_PAIRS UPDATES MAX_TOKENS THREADS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "fairseq_plugin.sh: expected a positive whole number for ${v,,}, found '${!v}'" >&2; exit 2
  fi
done
if [ ! -f "$DATA/train.de.gz" ] && [ ! -f "$DATA/train.de" ]; then
  echo "fairseq_plugin.sh: expected Multi30k (train.de[.gz], ...) in $DATA, found none" >&2; exit 2
fi
DATA=$(cd "$DATA" && pwd)
FAIRSEQ_VENV=${FAIRSEQ_VENV:-$HOME/.cache/latalign/fairseq-venv}
WORK=${WORK:-$(mktemp -d /tmp/fairseq_plugin.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS NUMBA_NUM_THREADS=$THREADS
echo "# work dir $WORK; $UPDATES updates per criterion, max tokens $MAX_TOKENS, threads $THREADS," \
  "$(getconf _NPROCESSORS_ONLN) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. fairseq in its own venv, and this checkout of latalign in it ------------------------------
source "$REPO/benchmarks/fairseq_install.sh"
ensure_fairseq fairseq_plugin.sh "$WORK"
PY=$FAIRSEQ_VENV/bin/python
latalign_here() {
  (cd /tmp && "$PY" -c "import latalign, pathlib, sys; p = pathlib.Path(latalign.__file__).resolve()
sys.exit(p.parent != pathlib.Path(sys.argv[1]).resolve())" "$REPO/src/latalign" 2>/dev/null)
}
if ! latalign_here; then
  echo "# installing latalign ($REPO) into $FAIRSEQ_VENV"
  "$FAIRSEQ_VENV/bin/pip" install -q -e "$REPO"
fi
latalign_here || { echo "fairseq_plugin.sh: latalign from $REPO does not import in $FAIRSEQ_VENV" >&2; exit 1; }
USER_DIR=$(cd /tmp && "$PY" -m latalign.fairseq_plugin)
echo "# fairseq $FS_VERSION; --user-dir $USER_DIR"

# --- 2. a slice of Multi30k, binarized by fairseq-preprocess --------------------------------------
"$PY" "$REPO/benchmarks/fairseq_data.py" --data "$DATA" --out "$WORK/text" \
  --train-pairs "$TRAIN_PAIRS" --valid-pairs "$VALID_PAIRS" --test-sentences "$VALID_PAIRS"
rm -rf "$WORK/bin"
(cd "$WORK" && "$FAIRSEQ_VENV/bin/fairseq-preprocess" --source-lang de --target-lang en \
  --trainpref text/train --validpref text/valid --testpref text/test --destdir bin \
  --srcdict text/dict.txt --joined-dictionary --workers 1 >"$WORK/preprocess.log" 2>&1) ||
  { tail -20 "$WORK/preprocess.log"; exit 1; }

# --- 3. a few updates with each criterion ----------------------------------------------------------
train() {  # NAME CRITERION ARCH [options...]
  local name=$1 criterion=$2 arch=$3
  shift 3
  echo "# fairseq-train --criterion $criterion --arch $arch, $UPDATES updates ..."
  rm -rf "$WORK/${name}_ckpt"
  "$FAIRSEQ_VENV/bin/fairseq-train" "$WORK/bin" --user-dir "$USER_DIR" --cpu \
    --task translation_lev --noise full_mask -s de -t en --left-pad-source \
    --criterion "$criterion" --arch "$arch" --src-embedding-copy \
    --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 --decoder-embed-dim 64 \
    --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 \
    --encoder-attention-heads 2 --decoder-attention-heads 2 --share-all-embeddings \
    --optimizer adam --adam-betas '(0.9, 0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt \
    --warmup-updates 10 --warmup-init-lr 1e-07 --max-tokens "$MAX_TOKENS" \
    --max-update "$UPDATES" --seed 1 --num-workers 0 --no-epoch-checkpoints \
    --save-dir "$WORK/${name}_ckpt" --log-format json --log-interval 5 "$@" \
    >"$WORK/${name}_train.log" 2>&1 || { tail -30 "$WORK/${name}_train.log"; exit 1; }
}
train ctc latalign_ctc latalign_nat_upsampled --upsample-scale 2
train axe latalign_axe nonautoregressive_transformer --pred-length-offset --length-loss-factor 0.1
train dag latalign_dag latalign_nat_dag --upsample-scale 4

# --- 4. the logged validation loss against latalign's, same batch ---------------------------------
echo
(cd "$WORK" && "$PY" "$REPO/benchmarks/fairseq_plugin_check.py" --data bin --user-dir "$USER_DIR" \
  --run ctc:ctc_train.log:ctc_ckpt/checkpoint_last.pt \
  --run axe:axe_train.log:axe_ckpt/checkpoint_last.pt \
  --run dag:dag_train.log:dag_ckpt/checkpoint_last.pt 2>"$WORK/check.log") ||
  { tail -20 "$WORK/check.log"; exit 1; }
echo "# load average now $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK"
