#!/usr/bin/env bash
# Wheels for the GPU machine: the Python packages latalign and its GPU check need that the
# machine's image lacks, downloaded here (where pip reaches the package index) for CPython
# 3.12 on manylinux x86_64 into .whl/ at the repository root. benchmarks/gpu_check.sh installs
# whatever lies in .whl/ into /tmp/site there; the machine itself reaches no package index.
#
#   bash benchmarks/gpu_wheels.sh              # resolve, print the list, download what is missing
#   bash benchmarks/gpu_wheels.sh --dry-run    # resolve and print only
#   PACKAGES_ON_DEVICE="numpy torch" bash benchmarks/gpu_wheels.sh --dry-run   # try the logic
#
# What is needed: the [project] dependencies of pyproject.toml, the test tools
# (pytest, hypothesis) and triton (the `gpu` extra). What the machine has: the package list of
# the device's image, read from $KINDS_MD (default /work/.library/device/KINDS.md, its
# "nvidia-h200: their image ... Packages: a, b, c." line) when that file exists, else
# $PACKAGES_ON_DEVICE (names separated by spaces or commas), else the snapshot below (the names
# this project needs that the image held when last read, 2026-11-17). Versions are not
# compared: the image's versions satisfied latalign's lower bounds when read (torch 2.11,
# triton 3.6, numpy 2.5, sentencepiece 0.2.2); `gpu_check.sh` imports each one first and
# names any that fails. A name given as an argument (NAME==VERSION) is downloaded in any case.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0
FORCED=()
for a in "$@"; do
  case $a in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option $a" >&2; exit 2 ;;
    *) FORCED+=("$a") ;;
  esac
done
KINDS_MD=${KINDS_MD:-/work/.library/device/KINDS.md}
SNAPSHOT="torch triton numpy numba llvmlite sentencepiece sacrebleu portalocker regex tabulate
colorama lxml tqdm pytest iniconfig pluggy packaging hypothesis attrs sortedcontainers
matplotlib pyyaml tensorboard"

normalize() { tr 'A-Z_.' 'a-z--'; }
if [ -f "$KINDS_MD" ] && grep -q '^nvidia-h200: their image' "$KINDS_MD"; then
  HAVE=$(grep '^nvidia-h200: their image' "$KINDS_MD" | sed 's/.*Packages: //; s/\.$//' |
    tr ',' '\n' | sed 's/^ *//; s/ *$//' | normalize)
  SOURCE="$KINDS_MD"
elif [ -n "${PACKAGES_ON_DEVICE:-}" ]; then
  HAVE=$(echo "$PACKAGES_ON_DEVICE" | tr ', ' '\n\n' | sed '/^$/d' | normalize)
  SOURCE="\$PACKAGES_ON_DEVICE"
else
  HAVE=$(echo "$SNAPSHOT" | tr ' ' '\n' | sed '/^$/d' | normalize)
  SOURCE="the snapshot in this script"
fi

# latalign's own requirements, from pyproject.toml ([project] dependencies), with their pins
NEEDED=$(python3 - "$REPO/pyproject.toml" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project["dependencies"]) + ["pytest>=7", "hypothesis>=6", "triton>=3.2"]
for req in reqs:
    print(req.replace(" ", ""))
EOF
)
MISSING=()
for req in $NEEDED; do
  name=$(echo "$req" | sed 's/[<>=!~;\[].*//' | normalize)
  if echo "$HAVE" | grep -qx "$name"; then
    echo "on the device ($SOURCE): $req"
  else
    echo "missing on the device: $req"
    MISSING+=("$req")
  fi
done
WANT=("${MISSING[@]}" "${FORCED[@]}")
if [ ${#WANT[@]} -eq 0 ]; then
  echo "nothing to carry: the image has every package latalign needs (.whl/ not needed)"
  exit 0
fi
echo "to download (cp312, manylinux x86_64, no dependencies): ${WANT[*]}"
echo "  (a missing package's own requirements are not resolved: check them with"
echo "   unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist and name them too)"
[ "$DRY" = 1 ] && exit 0
mkdir -p "$REPO/.whl"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
  manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$REPO/.whl" "${WANT[@]}"
ls -la "$REPO/.whl"
