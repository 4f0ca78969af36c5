# Sourced by benchmarks/fairseq_anchor.sh and benchmarks/fairseq_plugin.sh: installs fairseq
# (`fairseq-fixed` 0.12.3.1, the maintained 0.12 packaging) with the CPU torch 2.13 wheel into
# its own venv, once; later calls find it and return at once.
#
#   FAIRSEQ_VENV=DIR; source benchmarks/fairseq_install.sh; ensure_fairseq NAME SCRATCH
#
# NAME prefixes the error messages (the calling script); SCRATCH holds the downloaded sdist.
# Needs python3.11 on PATH and PyPI. Sets FS_VERSION (fairseq.__version__).

install_fairseq() {
  local name=$1 scratch=$2 py
  py=$(command -v python3.11 || true)
  [ -n "$py" ] || { echo "$name: expected python3.11 on PATH, found none" >&2; exit 2; }
  echo "# installing fairseq-fixed 0.12.3.1 into $FAIRSEQ_VENV (~4 minutes)"
  rm -rf "$FAIRSEQ_VENV"
  "$py" -m venv "$FAIRSEQ_VENV"
  local pip="$FAIRSEQ_VENV/bin/pip"
  # torch pinned first: an unpinned one would resolve to a multi-GB CUDA build
  "$pip" install -q torch==2.13.0 numpy
  "$pip" install -q setuptools wheel cython cffi hydra-core==1.3.2 omegaconf==2.3.0 regex \
    "sacrebleu>=1.4.12" tqdm bitarray packaging scikit-learn
  mkdir -p "$scratch/sdist"
  "$pip" download -q --no-deps --no-build-isolation -d "$scratch/sdist" fairseq-fixed==0.12.3.1
  # --no-deps: fairseq's torchaudio requirement would replace the pinned torch; translation
  # does not use it. --no-build-isolation: its build imports the torch installed above.
  "$pip" install -q --no-deps --no-build-isolation "$scratch"/sdist/fairseq_fixed-0.12.3.1.tar.gz
}

fairseq_ok() {
  [ -x "$FAIRSEQ_VENV/bin/fairseq-train" ] &&
    (cd /tmp && "$FAIRSEQ_VENV/bin/python" -c \
      "import fairseq, fairseq.tasks.translation, fairseq.models.transformer" >/dev/null 2>&1)
}

ensure_fairseq() {
  local name=$1 scratch=$2
  fairseq_ok || install_fairseq "$name" "$scratch"
  fairseq_ok || { echo "$name: fairseq does not import from $FAIRSEQ_VENV" >&2; exit 1; }
  FS_VERSION=$("$FAIRSEQ_VENV/bin/python" -c "import fairseq; print(fairseq.__version__)" 2>/dev/null)
}
